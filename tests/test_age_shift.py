"""Age targets, batched shifting of a faceset with a tiny SAM, provenance, memory-based batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fdta_core.age.model import SAMConfig
from fdta_core.age.shift import (
    AgeTargets,
    age_faces,
    choose_batch_size,
    current_age,
    parse_ages,
    plan_targets,
    shift_faceset,
)
from fdta_core.errors import InputError
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.testing.age import TINY_CONFIG, tiny_sam


@pytest.fixture(scope="module")
def model():
    return tiny_sam(1)


def _faceset(n_ids=2, per_id=1, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n_ids * per_id, 112, 112, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_ids), per_id)
    prov = [Provenance(identity=int(lab), attributes={"age": "35"}, history=["acg"]) for lab in labels]
    sources = {int(i): imgs[i * per_id].copy() for i in range(n_ids)}
    return FaceSet(imgs, labels, prov, sources)


def test_parse_ages():
    assert parse_ages("20, 40 60") == (20.0, 40.0, 60.0)
    assert parse_ages("-20,+15.5") == (-20.0, 15.5)
    assert parse_ages("  ") == ()
    with pytest.raises(InputError):
        parse_ages("20, old")


def test_targets_validation():
    with pytest.raises(InputError):
        AgeTargets(mode="bogus")
    with pytest.raises(InputError):
        AgeTargets(mode="list", values=())
    with pytest.raises(InputError):
        AgeTargets(mode="list", values=(120,))
    with pytest.raises(InputError):
        AgeTargets(mode="range", low=60, high=20)
    with pytest.raises(InputError):
        AgeTargets(mode="range", count=0)


def test_plan_modes():
    fs = _faceset(2)
    assert [a for a, _, _ in plan_targets(fs, AgeTargets("list", (10, 80)))[0]] == [10.0, 80.0]
    assert [a for a, _, _ in plan_targets(fs, AgeTargets("range", low=20, high=70, count=3))[1]] == [
        20.0,
        45.0,
        70.0,
    ]
    assert [a for a, _, _ in plan_targets(fs, AgeTargets("range", low=20, high=70, count=1))[0]] == [45.0]
    rel = plan_targets(fs, AgeTargets("relative", (-20, 30, 90), base_age=50))[0]
    assert [a for a, _, _ in rel] == [15.0, 65.0, 100.0]  # from attributes.age = 35, clamped at 100
    assert rel[0][1]["age_base_source"] == "attributes.age" and rel[0][1]["age_shift"] == -20


def test_random_range_is_seeded_per_identity_and_occurrence():
    fs = _faceset(3, per_id=2)
    t = AgeTargets("range", low=10, high=80, count=4, sampling="random", seed=7)
    plan = plan_targets(fs, t)
    ages = [[a for a, _, _ in items] for items in plan]
    assert all(len(a) == 4 and all(10 <= x <= 80 and x == int(x) for x in a) for a in ages)
    assert len({tuple(a) for a in ages}) > 1  # not the same ages for every image
    assert plan_targets(fs, t) == plan  # deterministic
    # a chunk holding only identity 1 draws the same ages for it (seed from identity + occurrence)
    sub = fs.select([2, 3])
    assert [[a for a, _, _ in items] for items in plan_targets(sub, t)] == ages[2:4]
    assert plan[0][0][2]["age"] != plan[1][0][2]["age"]
    other = plan_targets(fs, AgeTargets("range", low=10, high=80, count=4, sampling="random", seed=8))
    assert other != plan
    with pytest.raises(InputError):
        AgeTargets("range", sampling="sometimes")


def test_current_age_sources():
    assert current_age(Provenance(identity=0, age_target=61.0), 30) == (61.0, "age_target")
    assert current_age(Provenance(identity=0, extra={"age": 44}), 30) == (44.0, "extra.age")
    assert current_age(Provenance(identity=0, attributes={"age": "in her 20s"}), 30) == (
        20.0,
        "attributes.age",
    )
    assert current_age(Provenance(identity=0, attributes={"age": "young"}), 30) == (30.0, "base_age")


def test_batched_equals_one_at_a_time(model):
    fs = _faceset(3)
    ages = [20, 50, 80]
    calls = []
    batched = age_faces(model, fs.images, ages, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    single = age_faces(model, fs.images, ages, batch_size=1)
    assert batched.shape == (3, 112, 112, 3) and batched.dtype == np.uint8
    assert np.abs(batched.astype(int) - single.astype(int)).max() <= 1
    assert calls == [(0, 3), (3, 3)]
    # the age plane matters: the same face at another age differs
    other = age_faces(model, fs.images[:1], [80], batch_size=1)
    assert np.abs(other.astype(int) - single[:1].astype(int)).max() > 0


def test_shift_keeps_and_replaces_originals(model):
    fs = _faceset(2, per_id=1)
    targets = AgeTargets("list", (25, 65))
    out = shift_faceset(model, fs, targets, keep_originals=True, batch_size=4)
    assert len(out) == 6
    assert out.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(out.images[0], fs.images[0]) and np.array_equal(out.images[3], fs.images[1])
    assert out.provenance[0] == fs.provenance[0]
    aged = out.provenance[1]
    assert aged.age_target == 25.0 and aged.history == ["acg", "age"]
    assert aged.extra["age_mode"] == "list" and aged.extra["age_source_index"] == 0
    assert aged.seeds == {}
    assert out.provenance[5].age_target == 65.0 and out.provenance[5].identity == 1
    assert set(out.sources) == {0, 1}
    replaced = shift_faceset(model, fs, targets, keep_originals=False, batch_size=2)
    assert len(replaced) == 4
    assert all(p.age_target in (25.0, 65.0) for p in replaced.provenance)
    # batch size 2 here, 4 above: oneDNN may pick other kernels per shape, so allow one uint8 level
    diff = np.abs(replaced.images.astype(int) - out.images[[1, 2, 4, 5]].astype(int))
    assert diff.max() <= 1, diff.max()


def test_progress_reports_and_interrupt_propagates(model):
    fs = _faceset(3)
    seen = []
    shift_faceset(
        model, fs, AgeTargets("list", (30,)), batch_size=2, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(0, 3), (2, 3), (3, 3)]

    class Stop(Exception):
        pass

    def interrupt(done, total):
        if done:
            raise Stop

    with pytest.raises(Stop):
        shift_faceset(model, fs, AgeTargets("list", (30,)), batch_size=1, progress=interrupt)

    def cancelled_before(done, total):
        raise Stop

    with pytest.raises(Stop):  # raised before any batch runs
        age_faces(model, fs.images, [30, 30, 30], batch_size=1, progress=cancelled_before)


def test_empty_faceset(model):
    out = shift_faceset(model, FaceSet.empty(), AgeTargets("list", (30,)))
    assert len(out) == 0


def test_choose_batch_size():
    full = SAMConfig()
    assert choose_batch_size(0, full, torch.float16, 8) == 1
    small = choose_batch_size(2 * 1024**3, full, torch.float32, 64)
    big = choose_batch_size(40 * 1024**3, full, torch.float32, 64)
    half = choose_batch_size(40 * 1024**3, full, torch.float16, 64)
    assert 1 <= small < big <= half <= 64
    assert choose_batch_size(80 * 1024**3, TINY_CONFIG, torch.float32, 16) == 16


def test_placement_error_says_what_and_how():
    from fdta_core.age.shift import AgeMemoryError, activation_bytes_per_image, placement_error
    from fdta_core.errors import FDTAError

    err = placement_error(5 * 1024**3, 3 * 1024**3, "cuda:0")
    assert isinstance(err, AgeMemoryError) and isinstance(err, FDTAError)
    text = str(err)
    assert "5.0 GiB" in text and "3.0 GiB" in text and "cuda:0" in text and "batch_size" in text
    # fp16 halves the per-image estimate; the full model needs far more than the tiny one
    full = SAMConfig()
    assert activation_bytes_per_image(full, torch.float16) * 2 == activation_bytes_per_image(
        full, torch.float32
    )
    assert activation_bytes_per_image(full, torch.float32) > 50 * activation_bytes_per_image(
        TINY_CONFIG, torch.float32
    )


def test_shift_faceset_fills_one_output_array_exactly_as_aging_each_job(model):
    """The streamed stage (one output array, inputs gathered per batch) gives the images that
    age_faces gives on the gathered jobs, originals in place."""
    from fdta_core.age.shift import AgeTargets, age_faces, shift_faceset
    from fdta_core.faceset import FaceSet, Provenance

    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    fs = FaceSet(faces, np.array([0, 0, 1]), [Provenance(identity=i) for i in (0, 0, 1)])
    out = shift_faceset(model, fs, AgeTargets("list", (20.0, 70.0)), batch_size=4)
    ref = age_faces(model, faces[[0, 0, 1, 1, 2, 2]], [20.0, 70.0] * 3, batch_size=4)
    np.testing.assert_array_equal(out.images[[0, 3, 6]], faces)
    np.testing.assert_array_equal(out.images[[1, 2, 4, 5, 7, 8]], ref)
    assert [p.age_target for p in out.provenance] == [None, 20.0, 70.0] * 3
