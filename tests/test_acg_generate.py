"""``fdta_core.acg.generate``: the whole chunk the sampler node runs (options, real-person bank, progress,
provenance meta, run index), with a fake sampler and a rule-driven analyser."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fdta_core.acg import (
    ACGOptions,
    ACGSettings,
    EdgeSettings,
    FaceAnalysis,
    SelectionCriteria,
    StepProgress,
    generate_sources,
    real_person_bank,
    sampling_meta,
)
from fdta_core.errors import InputError
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.runner.overrides import ACG_OPTION_NAMES
from tests.acg_helpers import FakeSampler, RuleAnalyzer, embedding_for, good, make_plan


def test_unconnected_options_are_the_old_sampler_defaults():
    """FDTAACGOptions unconnected = the sampler's defaults before the split (the core's own defaults)."""
    o = ACGOptions()
    assert o.edge() == EdgeSettings()
    assert o.criteria() == SelectionCriteria()
    assert o.settings(candidates=4, batch_size=8, seed=0) == ACGSettings()
    assert (o.control_preprocess, o.retries, o.on_failure, o.real_sets) == ("canny", 2, "skip", "")
    # the runner's table of inputs moved from the sampler names exactly the options that were on it, in
    # widget order; the options after them (issue 17's checks) were born on FDTAACGOptions
    assert ACGOptions.names()[: len(ACG_OPTION_NAMES)] == ACG_OPTION_NAMES
    assert ACGOptions.names()[len(ACG_OPTION_NAMES) :] == (
        "prefer", "check_expression", "smile_ratio", "expression_margin",
        "check_pose", "max_yaw", "max_roll", "max_pitch_offset",
    )  # fmt: skip


def test_options_are_checked_and_unknown_ones_refused():
    assert ACGOptions(check_age=False).criteria().age_tolerance is None
    with pytest.raises(InputError, match="canny_low"):
        ACGOptions(canny_low=250, canny_high=10)
    with pytest.raises(InputError, match="uniqueness_threshold"):
        ACGOptions(uniqueness_threshold=2.0)
    with pytest.raises(InputError, match="control_preprocess"):
        ACGOptions(control_preprocess="laplace")
    with pytest.raises(InputError, match="unknown ACG option"):
        ACGOptions.from_values({"retries": 1, "retrys": 2})
    assert ACGOptions.from_values({"retries": 5}).retries == 5
    assert ACGOptions(real_sets=" a.npy;\nb ; ").real_set_paths() == ["a.npy", "b"]


def test_step_progress_is_monotone_across_retry_rounds():
    seen: list[tuple[int, int]] = []
    p = StepProgress(2, 10, lambda d, t: seen.append((d, t)))
    p.on_step(3)
    p.on_batch(1, 2)
    p.on_step(12)  # never past the call's share
    p.on_batch(2, 3)  # a retry round adds a batch
    assert seen == [(3, 20), (10, 20), (20, 20), (20, 30)]
    fractions = [d / t for d, t in seen]
    assert fractions == sorted(fractions[:3]) + fractions[3:]


class _Bank:
    def __init__(self, images, subjects):
        self.images, self.subjects = images, subjects

    def __len__(self):
        return len(self.images)


def test_real_person_bank_gathers_every_real_person(tmp_path):
    sampler = FakeSampler()
    photos = sampler([_job(i) for i in range(2)])

    def rule(job):
        a = good(job)
        a.embedding = embedding_for(10 + job.identity)
        return a

    analyzer = RuleAnalyzer(sampler, rule)
    faces = np.zeros((2, 112, 112, 3), np.uint8)
    faces[:, 0, 0, 0] = (3, 4)  # RuleAnalyzer.embed_aligned keys on the first pixel
    real_faces = FaceSet.from_sources(faces, [Provenance(identity=i) for i in (5, 6)])
    bank = _Bank(np.full((1, 112, 112, 3), 7, np.uint8), ["s7"])
    npy = tmp_path / "people.npy"
    np.save(npy, np.stack([embedding_for(12), embedding_for(13)]))
    real = real_person_bank(
        analyzer, photos=photos, real_faces=real_faces, reference_bank=bank, real_sets=[str(npy)]
    )
    assert len(real) == 2 + 2 + 1 + 2  # control photos, real faces, reference subject, real set
    # edge maps are not photos of anyone: without photos the bank holds only the others
    assert len(real_person_bank(analyzer, photos=None, real_faces=real_faces)) == 2


def _job(i):
    from fdta_core.acg import CandidateJob

    return CandidateJob(
        slot=i, identity=i, attempt=0, candidate=0, seed=100 + i, control=0, prompt="p", negative_prompt="n"
    )


def test_generate_sources_runs_a_chunk_and_keeps_the_run_index(tmp_path):
    plan = make_plan(3)
    sampler = FakeSampler(32, 32)
    analyzer = RuleAnalyzer(sampler, good)
    seen_controls = []
    ticks: list[tuple[int, int]] = []

    def make_sample(controls, on_step):
        seen_controls.append(controls)

        def sample(jobs):
            on_step(1, 2)
            return sampler(jobs)

        return sample

    photos = np.zeros((2, 40, 50, 3), np.uint8)
    meta = sampling_meta(
        sampler_name="euler", scheduler="normal", steps=2, cfg=5.0, width=32, height=32, strength=0.8,
        start_percent=0.0, end_percent=0.8, control_preprocess="none",
    )  # fmt: skip
    out = generate_sources(
        plan, photos, make_sample, width=32, height=32, steps=2, candidates=2, batch_size=4, seed=1,
        options=ACGOptions(control_preprocess="none"), analyzer=analyzer, index_folder=tmp_path / "ids",
        meta=meta, progress=lambda d, t: ticks.append((d, t)),
    )  # fmt: skip
    assert seen_controls[0].shape == (2, 32, 32, 3) and seen_controls[0].dtype == np.uint8
    assert len(out.faceset) == 3 and out.images.shape == (3, 32, 32, 3)
    prov = out.faceset.provenance[0].extra["acg"]
    assert prov["controlnet_range"] == [0.0, 0.8] and prov["control_preprocess"] == "none"
    assert "fdta_acg_report" in out.ui() and "3/3 identities" in out.report
    assert ticks[-1][0] == ticks[-1][1]  # the bar ends full
    assert any((tmp_path / "ids").glob("chunk-*"))  # this chunk's identities are in the run index
    # the next chunk sees these identities: a candidate that repeats identity 0 is a duplicate
    plan2 = make_plan(1, start=3, genders=["female"])

    def copy_of_0(job):
        a = good(job)
        a.embedding = embedding_for(0)
        return a

    out2 = generate_sources(
        plan2, photos, lambda c, s: sampler, width=32, height=32, steps=2, candidates=1, batch_size=4, seed=1,
        options=ACGOptions(control_preprocess="none", retries=0), analyzer=RuleAnalyzer(sampler, copy_of_0),
        index_folder=tmp_path / "ids",
    )  # fmt: skip
    assert len(out2.faceset) == 0 and out2.images.shape == (1, 32, 32, 3)  # a blank frame, never empty
    assert out2.result.records[0].reasons[0].code == "duplicate"


def test_generate_sources_unchecked_and_option_effects():
    plan = make_plan(2)
    sampler = FakeSampler(32, 32)
    out = generate_sources(
        plan, np.zeros((1, 32, 32, 3), np.uint8), lambda c, s: sampler, width=32, height=32, steps=1,
        candidates=2, batch_size=2, seed=0,
    )  # fmt: skip
    assert not out.result.checked and len(out.faceset) == 2
    # criteria from the options reach selection: every face is 31, a tolerance of 0 rejects all
    strict = ACGOptions(control_preprocess="none", age_tolerance=0.0, retries=0)
    out = generate_sources(
        plan, np.zeros((1, 32, 32, 3), np.uint8), lambda c, s: sampler, width=32, height=32, steps=1,
        candidates=1, batch_size=2, seed=0, options=strict, analyzer=RuleAnalyzer(sampler, good),
    )  # fmt: skip
    assert len(out.faceset) == 0 and {r.reasons[0].code for r in out.result.records} == {"age"}
    assert dataclasses.replace(strict, check_age=False).criteria().age_tolerance is None


def test_face_analysis_type_is_what_the_rule_returns():
    assert isinstance(good(_job(0)), FaceAnalysis)


def test_drawn_control_maps_are_used_as_drawn_and_recorded():
    """generate_sources with FDTAControlMaps' parameters: no edge preprocessing (a Canny of a line drawing
    would double every line), the maps are never taken for real people, each identity's provenance holds
    its map's parameters, and the expression / pose / farthest options reach selection."""
    import json

    from fdta_core.acg.controls import plan_maps

    plan = make_plan(3)
    maps = plan_maps(plan, size=64)
    seen = {}

    def make_sample(controls, on_step):
        seen["controls"] = controls.copy()
        return FakeSampler(64, 64)

    sampler_holder = {}

    def make(controls, on_step):
        s = make_sample(controls, on_step)
        sampler_holder["s"] = s
        return s

    class LazyAnalyzer(RuleAnalyzer):
        def __init__(self):
            self.rule, self.calls = good, 0

        def analyze(self, images):
            self.sampler = sampler_holder["s"]
            return super().analyze(images)

    opts = ACGOptions(control_assignment="per_identity", control_preprocess="canny", prefer="detection",
                      max_yaw=5.0, check_expression=False)  # fmt: skip
    assert opts.criteria().prefer == "detection" and opts.criteria().keypoints.max_yaw == 5.0
    out = generate_sources(
        plan, maps.images, make, width=64, height=64, steps=1, candidates=2, batch_size=4, seed=0,
        options=opts, analyzer=LazyAnalyzer(), control_records=json.dumps(maps.records()),
    )  # fmt: skip
    assert np.array_equal(seen["controls"], maps.images)  # as drawn, not Canny'd
    for slot, p in enumerate(out.faceset.provenance):
        assert p.extra["acg"]["control_map"] == maps.params[slot].to_dict()
        assert p.extra["acg"]["checks"]["thresholds"]["max_yaw"] == 5.0
    with pytest.raises(InputError, match="describes 2 maps but control_images holds 3"):
        generate_sources(plan, maps.images, make, width=64, height=64, steps=1, candidates=1, batch_size=4,
                         seed=0, options=opts, control_records=maps.records()[:2])  # fmt: skip
    with pytest.raises(InputError, match="not JSON"):
        generate_sources(plan, maps.images, make, width=64, height=64, steps=1, candidates=1, batch_size=4,
                         seed=0, options=opts, control_records="{oops")  # fmt: skip
