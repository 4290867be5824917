"""Identity spreading at the ACG: expression and pose from keypoints, farthest-candidate selection,
per-identity control maps in provenance, and the diversity metrics (pairwise distribution, Vendi)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fdta_core.acg import ACGSettings, FaceAnalysis, IdentityIndex, SelectionCriteria, run_acg
from fdta_core.acg.controls import plan_maps
from fdta_core.acg.selection import choose_detailed
from fdta_core.errors import InputError
from fdta_core.faces.align import ARCFACE_TEMPLATE_112
from fdta_core.faces.identity_diversity import similarity_stats, vendi_score
from fdta_core.faces.keypoints import (
    FRONTAL_NOSE_POSITION,
    NEUTRAL_MOUTH_RATIO,
    KeypointCriteria,
    keypoint_geometry,
    planned_expression,
)
from fdta_core.plan import IdentityPlan, IdentitySpec
from tests.acg_helpers import FakeSampler, RuleAnalyzer, good, make_plan

TEMPLATE = np.asarray(ARCFACE_TEMPLATE_112, np.float64)


def smiling(kps: np.ndarray, widen: float = 1.25, lift: float = 3.0) -> np.ndarray:
    """Mouth corners pulled apart about the mouth centre and raised (pixels at 112)."""
    k = kps.copy()
    c = 0.5 * (k[3] + k[4])
    k[3] = c + (k[3] - c) * widen - [0, lift]
    k[4] = c + (k[4] - c) * widen - [0, lift]
    return k


def turned(kps: np.ndarray, nose_dx: float) -> np.ndarray:
    k = kps.copy()
    k[2, 0] += nose_dx
    return k


def rotated(kps: np.ndarray, degrees: float, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (kps - 56) @ r.T * scale + 56 + np.asarray(shift)


# ------------------------------------------------------------------ keypoint geometry
def test_template_is_frontal_and_neutral():
    g = keypoint_geometry(TEMPLATE)
    assert abs(g.yaw) < 1 and abs(g.roll) < 1
    assert g.pitch_position == pytest.approx(FRONTAL_NOSE_POSITION, abs=0.002)
    assert g.mouth_ratio == pytest.approx(NEUTRAL_MOUTH_RATIO, abs=0.005)


def test_geometry_ignores_roll_scale_and_position():
    g0 = keypoint_geometry(TEMPLATE)
    g = keypoint_geometry(rotated(TEMPLATE, 15, scale=3.2, shift=(40, -7)))
    assert g.roll == pytest.approx(g0.roll + 15, abs=0.01)
    assert (g.yaw, g.pitch_position, g.mouth_ratio) == pytest.approx(
        (g0.yaw, g0.pitch_position, g0.mouth_ratio), abs=1e-6
    )


def test_yaw_follows_the_weak_perspective_model():
    level = np.array([[38.0, 51.6], [74.0, 51.6], [56.0, 71.7], [41.5, 92.3], [70.5, 92.3]])
    iod = level[1, 0] - level[0, 0]
    for deg in (10, 25, -30):
        k = level.copy()
        k[2, 0] = 0.5 * (k[0, 0] + k[1, 0]) + 0.45 * iod * math.tan(math.radians(deg))
        assert keypoint_geometry(k).yaw == pytest.approx(deg, abs=0.01)


def test_planned_expression_vocabulary():
    assert planned_expression("broad smile") == "smiling"
    assert planned_expression("slight smile") is None  # too subtle for five points
    assert planned_expression("neutral expression") == "neutral"
    assert planned_expression("serious expression") == "neutral"
    assert planned_expression("calm relaxed expression") == "neutral"
    assert planned_expression("surprised") is None
    assert planned_expression(None) is None


def _analysis(kps, emb=None, score=0.9):
    return FaceAnalysis(True, score, aligned=np.zeros((112, 112, 3), np.uint8), embedding=emb, kps=kps)


def test_expression_and_pose_checks_reject_with_reasons():
    crit = SelectionCriteria()
    cands = [
        _analysis(TEMPLATE),  # neutral, frontal
        _analysis(smiling(TEMPLATE)),  # smiling
        _analysis(turned(TEMPLATE, 12.0)),  # about 37 degrees of yaw
        _analysis(rotated(TEMPLATE, 30)),  # rolled
    ]
    kw = dict(gender=None, age=None, criteria=crit, accepted=IdentityIndex(), real=IdentityIndex())
    c = choose_detailed(cands, expression="neutral", **kw)
    codes = [[r.code for r in rs] for rs in c.reasons]
    assert c.index == 0
    assert codes[1] == ["expression"] and "planned neutral" in c.reasons[1][0].detail
    assert codes[2] == ["pose"] and "yaw" in c.reasons[2][0].detail
    assert codes[3] == ["pose"] and "roll" in c.reasons[3][0].detail
    c = choose_detailed(cands, expression="smiling", **kw)
    assert c.index == 1 and [r.code for r in c.reasons[0]] == ["expression"]
    # unchecked when the plan's expression cannot be read from keypoints, or the check is off
    assert choose_detailed(cands[:2], expression=None, **kw).passing == 2
    off = SelectionCriteria(keypoints=KeypointCriteria(check_expression=False, check_pose=False))
    assert choose_detailed(cands, expression="smiling", **{**kw, "criteria": off}).passing == 4
    # a candidate without keypoints is not judged on them
    assert choose_detailed([_analysis(None)], expression="smiling", **kw).index == 0


def test_thresholds_are_validated():
    with pytest.raises(InputError, match="max_yaw"):
        KeypointCriteria(max_yaw=-1)
    with pytest.raises(InputError, match="prefer"):
        SelectionCriteria(prefer="nearest")


# ------------------------------------------------------------------ farthest candidate
def test_the_candidate_farthest_from_accepted_identities_wins():
    accepted = IdentityIndex()
    accepted.add("identity 0", np.array([1.0, 0, 0, 0]), 0)
    accepted.add("identity 1", np.array([0, 1.0, 0, 0]), 1)
    embs = [
        np.array([0.9, 0.1, 0.4, 0.0]),  # close to identity 0
        np.array([0.3, 0.3, 0.9, 0.1]),  # farthest: nearest cosine about 0.3
        np.array([0.1, 0.8, 0.0, 0.5]),
    ]
    cands = [_analysis(TEMPLATE, e, score=s) for e, s in zip(embs, (0.99, 0.6, 0.95), strict=True)]
    crit = SelectionCriteria(uniqueness_threshold=0.95)
    kw = dict(gender=None, age=None, accepted=accepted, real=IdentityIndex(), names=["c0", "c1", "c2"])
    c = choose_detailed(cands, criteria=crit, **kw)
    unit = [e / np.linalg.norm(e) for e in embs]
    nearest = [max(u[0], u[1]) for u in unit]
    assert c.index == int(np.argmin(nearest)) == 1
    assert c.reasons[0][0].code == "not_chosen" and "farther" in c.reasons[0][0].detail
    sel = c.selection(crit)
    assert sel["rule"] == "farthest"
    assert sel["min_cosine_distance"] == pytest.approx(1 - nearest[1], abs=1e-5)
    assert sel["lead_over_next"] == pytest.approx(sorted(nearest)[1] - nearest[1], abs=1e-5)
    assert sel["uniqueness_margin"] == pytest.approx(0.95 - nearest[1], abs=1e-5)
    # the old rule on request: best detection
    det = choose_detailed(
        cands, criteria=SelectionCriteria(uniqueness_threshold=0.95, prefer="detection"), **kw
    )
    assert det.index == 0
    # nothing accepted yet: every candidate ties on distance, detection decides
    first = choose_detailed(cands, criteria=crit, **{**kw, "accepted": IdentityIndex()})
    assert first.index == 0 and first.rule.startswith("detection")


def test_run_acg_spreads_identities_within_the_chunk():
    """Each identity has candidates at known positions; the chunk's own accepted identities count."""
    dim = 8
    plan = make_plan(3, genders=["male"] * 3)

    def rule(job):
        # identity 0: candidate 0 points along e0; later identities: candidate 0 repeats a direction close
        # to e0 (cos 0.6), candidate 1 is orthogonal to everything accepted before it
        v = np.zeros(dim)
        if job.identity == 0 or job.candidate == 0:
            v[0], v[1 + job.identity] = 1.0, (0.0 if job.identity == 0 else 1.33)
        else:
            v[4 + job.identity] = 1.0
        return FaceAnalysis(True, 0.9 if job.candidate == 0 else 0.6, embedding=v, gender="male", age=30)

    sampler = FakeSampler()
    res = run_acg(
        plan,
        sampler,
        1,
        settings=ACGSettings(candidates=2),
        criteria=SelectionCriteria(uniqueness_threshold=0.9),
        analyzer=RuleAnalyzer(sampler, rule),
    )
    picks = [res.chosen[s].job.candidate for s in range(3)]
    assert picks == [0, 1, 1]  # identity 0: detection (nothing accepted); then the farthest
    fs = res.faceset()
    sel = [p.extra["acg"]["selection"] for p in fs.provenance]
    assert sel[0]["rule"].startswith("detection") and sel[1]["rule"] == "farthest"
    assert sel[1]["min_cosine_distance"] == pytest.approx(1.0, abs=1e-6)
    assert sel[1]["lead_over_next"] == pytest.approx(1.0 - (1 - 0.6), abs=1e-3)
    cands = fs.provenance[2].extra["acg"]["candidates"]
    assert [c["status"] for c in cands] == ["runner_up", "chosen"]
    assert cands[0]["nearest_accepted_cosine"] == pytest.approx(0.6, abs=1e-3)


def test_expression_failures_are_retried_and_recorded():
    plan = IdentityPlan(
        run_seed=1,
        start=0,
        identities=(
            IdentitySpec(0, {"expression": "broad smile"}, "p", "n"),
            IdentitySpec(1, {"expression": "neutral expression"}, "p", "n"),
        ),
    )

    def rule(job):  # round 0: every face neutral; round 1: smiling
        kps = TEMPLATE if job.attempt == 0 else smiling(TEMPLATE)
        a = good(job)
        a.kps, a.gender, a.age = kps, None, None
        return a

    sampler = FakeSampler()
    res = run_acg(
        plan, sampler, 1, settings=ACGSettings(candidates=2, retries=1), analyzer=RuleAnalyzer(sampler, rule)
    )
    assert res.chosen[0].job.attempt == 1 and res.chosen[1].job.attempt == 0
    prov = res.faceset().provenance
    checks = prov[0].extra["acg"]["checks"]
    assert checks["expression"]["planned_class"] == "smiling" and checks["expression"]["outcome"] == "pass"
    assert checks["expression"]["mouth_ratio"] > 0.95 and checks["thresholds"]["smile_ratio"] == 0.95
    assert checks["pose"]["outcome"] == "pass" and abs(checks["pose"]["yaw"]) < 1
    first = prov[0].extra["acg"]["candidates"][0]
    assert first["reasons"] == ["expression"] and first["keypoints"]["mouth_ratio"] < 0.9


# ------------------------------------------------------------------ per-identity control maps
def test_per_identity_maps_are_used_and_recorded():
    plan = make_plan(3, start=5)
    maps = plan_maps(plan, size=64)
    sampler = FakeSampler()
    res = run_acg(
        plan,
        sampler,
        3,
        settings=ACGSettings(candidates=2, control_policy="per_identity"),
        analyzer=RuleAnalyzer(sampler, good),
        control_records=maps.records(),
    )
    assert all(j.control == j.slot for call in sampler.calls for j in call)
    for slot, p in enumerate(res.faceset().provenance):
        cm = p.extra["acg"]["control_map"]
        assert cm == maps.params[slot].to_dict() and cm["identity"] == plan.identities[slot].index
    with pytest.raises(InputError, match="one control image per identity"):
        run_acg(plan, sampler, 2, settings=ACGSettings(control_policy="per_identity"))
    other = plan_maps(make_plan(3, start=0), size=64)
    with pytest.raises(InputError, match="drawn for identity 0"):
        run_acg(
            plan,
            sampler,
            3,
            settings=ACGSettings(control_policy="per_identity"),
            control_records=other.records(),
        )


# ------------------------------------------------------------------ diversity metrics
def test_vendi_score_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 1e-12]
    assert vendi_score(x) == pytest.approx(math.exp(-np.sum(lam * np.log(lam))), rel=1e-9)
    assert vendi_score(np.tile([1.0, 0, 0], (10, 1))) == pytest.approx(1.0)
    assert vendi_score(np.eye(5)) == pytest.approx(5.0)


def test_pairwise_distribution_and_p99():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = (u @ u.T)[np.triu_indices(300, 1)]
    st = similarity_stats(x, block=64)
    assert st.pairs == len(sims) and st.exact
    assert st.p99 == pytest.approx(np.quantile(sims, 0.99), abs=1e-5)
    assert st.quantiles["p50"] == pytest.approx(np.median(sims), abs=1e-5)
    assert st.max == pytest.approx(sims.max(), abs=1e-5)
    assert sum(st.histogram["counts"]) == len(sims)
    near = np.sort(u @ u.T, axis=1)[:, -2]
    assert st.nearest["max"] == pytest.approx(near.max(), abs=1e-5)
    assert "p99" in st.summary_line() and st.text_histogram()
    # the histogram path (many pairs) agrees within its bin width
    import fdta_core.faces.identity_diversity as div

    old = div.EXACT_PAIRS
    div.EXACT_PAIRS = 10
    try:
        approx = similarity_stats(x, block=64)
    finally:
        div.EXACT_PAIRS = old
    assert not approx.exact and approx.p99 == pytest.approx(st.p99, abs=2e-3)
