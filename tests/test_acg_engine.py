"""ACG loop: seed derivation, control assignment, batching, retries, provenance, report."""

from __future__ import annotations

import numpy as np
import pytest

from fdta_core.acg import (
    ACGSettings,
    FaceAnalysis,
    IdentityIndex,
    SelectionCriteria,
    SelectionFailedError,
    candidate_seed,
    control_index,
    make_batches,
    plan_round,
    run_acg,
)
from fdta_core.errors import InputError
from fdta_core.seeds import derive_seed
from tests.acg_helpers import FakeSampler, RuleAnalyzer, embedding_for, good, make_plan


# ------------------------------------------------------------------ seeds and control assignment
def test_candidate_seed_is_derived_from_run_seed_and_candidate_identity():
    s = candidate_seed(7, 12, 1, 3, salt=5)
    assert s == derive_seed(7, "acg", 5, 12, 1, 3)
    assert s == candidate_seed(7, 12, 1, 3, salt=5)
    seeds = {candidate_seed(7, i, a, k) for i in range(20) for a in range(3) for k in range(4)}
    assert len(seeds) == 20 * 3 * 4
    assert candidate_seed(8, 12, 1, 3, salt=5) != s
    assert candidate_seed(7, 12, 1, 3, salt=6) != s


def test_control_assignment_policies():
    n = 5
    rnd = [control_index(7, i, 0, k, n, policy="random") for i in range(40) for k in range(4)]
    assert set(rnd) == set(range(n))
    assert rnd == [control_index(7, i, 0, k, n, policy="random") for i in range(40) for k in range(4)]
    cyc = [control_index(7, 3, 0, k, n, candidates=4, policy="cycle") for k in range(4)]
    assert cyc == [3, 4, 0, 1]
    # a retry round moves on to the next control images
    assert control_index(7, 3, 1, 0, n, candidates=4, policy="cycle") == (3 + 4) % n
    with pytest.raises(InputError):
        control_index(7, 0, 0, 0, 0)
    with pytest.raises(InputError):
        control_index(7, 0, 0, 0, 3, policy="nope")


def test_jobs_do_not_depend_on_the_chunk():
    whole = make_plan(10, start=0)
    chunk = make_plan(4, start=6)
    s = ACGSettings(candidates=3)
    jobs_whole = {
        (j.identity, j.candidate): (j.seed, j.control) for j in plan_round(whole, range(10), 0, s, 4)
    }
    jobs_chunk = {
        (j.identity, j.candidate): (j.seed, j.control) for j in plan_round(chunk, range(4), 0, s, 4)
    }
    for key, val in jobs_chunk.items():
        assert jobs_whole[key] == val


def test_make_batches_mixes_identities():
    jobs = plan_round(make_plan(5), range(5), 0, ACGSettings(candidates=2), 1)
    batches = make_batches(jobs, 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert len({j.identity for j in batches[0]}) == 2
    assert [j for b in batches for j in b] == jobs


# ------------------------------------------------------------------ the loop
def run(plan, rule, *, sampler=None, **kw):
    sampler = sampler or FakeSampler()
    analyzer = RuleAnalyzer(sampler, rule)
    settings = ACGSettings(**{"candidates": 3, "retries": 2, "batch_size": 4, **kw.pop("settings", {})})
    return run_acg(plan, sampler, 3, settings=settings, analyzer=analyzer, **kw), sampler


def test_every_identity_gets_a_source_face_with_provenance_of_every_seed():
    plan = make_plan(4, start=100)
    res, sampler = run(plan, lambda j: good(j, score=0.5 + 0.1 * j.candidate))
    fs = res.faceset()
    assert fs.labels.tolist() == [100, 101, 102, 103]
    assert len(fs.sources) == 4
    for slot, prov in enumerate(fs.provenance):
        rec = res.chosen[slot]
        assert rec.job.candidate == 2  # highest detection score
        assert prov.seeds == {"acg": candidate_seed(7, 100 + slot, 0, 2)}
        assert prov.history == ["acg"]
        acg = prov.extra["acg"]
        assert [c["seed"] for c in acg["candidates"]] == [
            candidate_seed(7, 100 + slot, 0, k) for k in range(3)
        ]
        assert [c["status"] for c in acg["candidates"]] == ["runner_up", "runner_up", "chosen"]
        assert acg["checked"] is True and acg["planned_gender"] == plan.identities[slot].gender
        assert prov.attributes == plan.identities[slot].attributes
    # every sampler call holds up to batch_size candidates of several identities
    assert [len(c) for c in sampler.calls] == [4, 4, 4]
    assert res.images().shape == (4, 32, 48, 3)
    assert "4/4 identities" in res.report()


def test_outcome_does_not_depend_on_batch_size():
    plan = make_plan(5)

    def rule(j):  # identity 1 and 3 look alike: whichever is accepted first wins, decided in plan order
        a = good(j, score=0.3 + 0.2 * ((j.seed >> 3) % 4))
        if j.identity == 3:
            a.embedding = embedding_for(1)
        return a

    outcomes = []
    for bs in (1, 3, 7, 64):
        res, _ = run(plan, rule, settings={"batch_size": bs, "retries": 1})
        outcomes.append(({s: r.job.seed for s, r in res.chosen.items()}, res.failed))
    assert all(o == outcomes[0] for o in outcomes)


def test_rejected_identities_are_retried_with_new_seeds():
    plan = make_plan(3)

    # identity 1 shows no face in round 0 and the wrong gender in round 1; round 2 works
    def rule(j):
        if j.identity == 1 and j.attempt == 0:
            return FaceAnalysis(False)
        if j.identity == 1 and j.attempt == 1:
            return good(j, gender="male")
        return good(j)

    res, sampler = run(plan, rule)
    assert res.failed == [] and res.rounds == 3
    assert res.chosen[1].job.attempt == 2
    # only identity 1 was sampled again: 9 candidates in round 0, then 3 + 3
    assert sum(len(c) for c in sampler.calls) == 9 + 3 + 3
    cands = res.faceset().provenance[1].extra["acg"]["candidates"]
    assert len(cands) == 9 and len({c["seed"] for c in cands}) == 9
    assert [c["reasons"] for c in cands[:3]] == [["no_face"]] * 3
    assert [c["reasons"] for c in cands[3:6]] == [["gender"]] * 3


def test_duplicates_are_retried_not_merged():
    plan = make_plan(3)

    # identity 2 looks like identity 0 in round 0 only
    def rule(j):
        a = good(j)
        if j.identity == 2 and j.attempt == 0:
            a.embedding = embedding_for(0)
        return a

    res, _ = run(plan, rule)
    assert res.chosen[2].job.attempt == 1
    first = [r for r in res.records_of(2) if r.job.attempt == 0]
    assert all(r.reasons[0].code == "duplicate" and "identity 0" in r.reasons[0].detail for r in first)


def test_prior_identities_and_real_faces_are_respected():
    plan = make_plan(2)
    prior = IdentityIndex()
    prior.add("identity 77 (earlier chunk)", embedding_for(0))
    real = IdentityIndex()
    real.add("control photo 2", embedding_for(1))
    res, _ = run(plan, good, prior=prior, real=real, settings={"retries": 0})
    assert res.failed == [0, 1]
    assert {r.reasons[0].code for r in res.records_of(0)} == {"duplicate"}
    assert {r.reasons[0].code for r in res.records_of(1)} == {"real_person"}
    assert len(prior) == 1  # the caller's bank is not modified


def test_exhausted_identities_are_reported_or_raise():
    plan = make_plan(3, start=10)

    def rule(j):
        return FaceAnalysis(False) if j.identity == 11 else good(j)

    res, sampler = run(plan, rule, settings={"retries": 1})
    assert res.failed == [1]
    assert res.faceset().labels.tolist() == [10, 12]
    assert "identity 11: NO ACCEPTABLE CANDIDATE after 6 candidates (no face x6)" in res.report()
    assert sum(len(c) for c in sampler.calls) == 9 + 3
    with pytest.raises(SelectionFailedError, match=r"identities \[11\]"):
        run(plan, rule, settings={"retries": 1, "on_failure": "error"})


def test_unchecked_mode_keeps_candidate_zero_and_says_so():
    plan = make_plan(2)
    sampler = FakeSampler(64, 80)
    res = run_acg(plan, sampler, 2, settings=ACGSettings(candidates=2, batch_size=3))
    fs = res.faceset()
    assert fs.images.shape == (2, 112, 112, 3)
    assert [r.job.candidate for r in res.chosen.values()] == [0, 0]
    assert all(p.extra["acg"]["checked"] is False for p in fs.provenance)
    assert "UNCHECKED" in res.report()


def test_progress_counts_batches_and_its_exception_propagates():
    plan = make_plan(3)
    seen = []

    def progress(done, total):
        seen.append((done, total))

    run(
        plan,
        lambda j: FaceAnalysis(False) if j.identity == 0 and j.attempt == 0 else good(j),
        progress=progress,
    )
    assert seen == [(1, 3), (2, 3), (3, 3), (4, 4)]

    class Interrupted(Exception):
        pass

    def interrupt(done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        run(plan, good, progress=interrupt)


def test_bad_callbacks_and_settings_are_reported():
    plan = make_plan(1)
    with pytest.raises(InputError, match="sampler returned"):
        run_acg(plan, lambda jobs: np.zeros((len(jobs), 8, 8, 3), np.float32), 1)
    with pytest.raises(InputError):
        ACGSettings(candidates=0)
    with pytest.raises(InputError):
        ACGSettings(on_failure="ignore")
    with pytest.raises(InputError, match="empty"):
        run_acg(make_plan(0), FakeSampler(), 1)


def test_criteria_are_applied_in_the_loop():
    plan = make_plan(2)
    res, _ = run(
        plan, lambda j: good(j, age=50), criteria=SelectionCriteria(age_tolerance=25), settings={"retries": 0}
    )
    assert res.failed == []
    res, _ = run(
        plan, lambda j: good(j, age=50), criteria=SelectionCriteria(age_tolerance=5), settings={"retries": 0}
    )
    assert res.failed == [0, 1]


def test_two_chunks_share_the_run_index_and_keep_real_people_out(tmp_path):
    """Chunk 1's first-round faces repeat a chunk-0 identity and copy a reference subject; both are
    rejected and regenerated in the next round, and the run index on disk ends with unique identities."""
    from fdta_core.faces.identity import RunIndex, real_index, subject_embeddings

    index = RunIndex(tmp_path / "identities")

    def rule(j):
        a = good(j)
        if j.identity == 3 and j.attempt == 0:
            a.embedding = embedding_for(0)  # the person chunk 0 accepted as identity 0
        elif j.identity == 2 and j.attempt == 0:
            a.embedding = embedding_for(9)  # reference subject "s9"
        else:
            a.embedding = embedding_for(j.identity)
        return a

    faces = np.zeros((1, 112, 112, 3), np.uint8)
    subj = subject_embeddings(faces, ["s9"], lambda x: [embedding_for(9)])
    real = real_index(subj)
    chunk0 = make_plan(2, start=0)
    res0, _ = run(chunk0, rule, real=real, prior=index.prior(0), settings={"candidates": 1})
    index.save_chunk(0, 2, res0.accepted_index())
    chunk1 = make_plan(2, start=2)
    prior = index.prior(2)
    assert prior.ids == [0, 1]
    res1, _ = run(chunk1, rule, real=real, prior=prior, settings={"candidates": 1})
    assert res1.failed == [] and [res1.chosen[s].job.attempt for s in (0, 1)] == [1, 1]
    first = {r.job.identity: r.reasons[0] for r in res1.records if r.job.attempt == 0}
    assert first[2].code == "real_person" and "reference subject s9" in first[2].detail
    assert first[3].code == "duplicate" and "identity 0" in first[3].detail
    index.save_chunk(2, 4, res1.accepted_index())
    everything = index.all()
    assert sorted(everything.ids) == [0, 1, 2, 3]
    from fdta_core.faces.identity import greedy_unique

    assert greedy_unique(everything.vectors()).all()
