"""Issue 12: the chunk range travels with the data, and a chunk on disk is never replaced silently.

The ACG stamps the plan's range (and the run: spec hash, run seed) on its faceset; every stage keeps it;
the writer commits that range. A chunk of the same range is replaced only by the same run or with
``overwrite``; every replacement is recorded; a refused or failed write leaves no folder behind.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fdta_core.acg import ACGSettings, run_acg
from fdta_core.age.shift import AgeTargets, shift_faceset
from fdta_core.dataset import inspect, list_chunks, write_faceset
from fdta_core.dataset.manifest import query
from fdta_core.dataset.writer import check_chunk_slot
from fdta_core.errors import InputError
from fdta_core.faces.csim import csim_filter
from fdta_core.faceset import ChunkStamp, FaceSet, Provenance, join_stamps
from fdta_core.plan import chunk_name
from fdta_core.runner.manifest import Chunk
from fdta_core.stg import ReferenceBank, STGSampler, mix
from fdta_core.testing.age import tiny_sam
from fdta_core.testing.stg import tiny_model
from tests.acg_helpers import FakeSampler, make_plan


def _planned(start: int, n_id: int, per: int = 2, *, spec: str = "spec-a", seed: int = 7, img_seed: int = 0,
             drop: tuple[int, ...] = ()) -> FaceSet:  # fmt: skip
    """A faceset planned for identities [start, start+n_id) (identities in ``drop`` failed on the way)."""
    ids = [i for i in range(start, start + n_id) if i not in drop]
    labels = np.repeat(np.array(ids, np.int64), per)
    rng = np.random.default_rng(img_seed + start)
    imgs = rng.integers(0, 256, (len(labels), 112, 112, 3), dtype=np.uint8)
    prov = [Provenance(identity=int(x), history=["acg"]) for x in labels]
    sources = {i: imgs[k * per].copy() for k, i in enumerate(ids)}
    return FaceSet(imgs, labels, prov, sources, ChunkStamp(start, start + n_id, spec, seed))


class _Embed:
    def __init__(self) -> None:
        self.w = np.random.default_rng(0).normal(size=(112 * 112 * 3 // 64, 16))

    def __call__(self, x):
        return x.reshape(len(x), 14, 8, 14, 8, 3).mean(axis=(2, 4)).reshape(len(x), -1) @ self.w


# ------------------------------------------------------------------ the stamp travels
def test_acg_stamps_the_plan_range_and_every_stage_keeps_it():
    plan = dataclasses.replace(make_plan(3, start=40, run_seed=11), spec_hash="abc123")
    res = run_acg(plan, FakeSampler(), 1, settings=ACGSettings(candidates=1, batch_size=4))
    src = res.faceset()
    assert src.chunk == ChunkStamp(40, 43, "abc123", 11)
    # STG mixer
    bank = ReferenceBank.from_images(
        np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8), subjects=["a", "b"]
    )
    styled = mix(STGSampler(tiny_model(seed=1), "cpu", "fp32"), src, bank, policy="subject",
                 images_per_identity=1, run_seed=11, steps=1, batch_size=4).faceset  # fmt: skip
    assert styled.chunk == src.chunk
    # age shifter (also when it drops the originals) and the CSIM filter (also when it drops images)
    aged = shift_faceset(tiny_sam(1), styled, AgeTargets("list", (30,)), keep_originals=False, batch_size=4)
    assert aged.chunk == src.chunk
    kept, _ = csim_filter(aged, _Embed(), threshold=-1.0)
    assert kept.chunk == src.chunk
    none_kept, _ = csim_filter(aged, _Embed(), threshold=0.9999)
    assert none_kept.chunk == src.chunk
    # selections, joins and the npz round trip
    assert kept.select([0]).chunk == src.chunk and kept.sorted_by_identity().chunk == src.chunk
    assert FaceSet.concat([kept, kept]).chunk == src.chunk
    assert "planned chunk 40..42" in kept.summary()


def test_acg_stamp_covers_identities_that_failed(tmp_path):
    fs = _planned(10, 4, drop=(11, 13))
    info = write_faceset(fs, tmp_path)  # no range given: the plan's, not the labels' 10..12
    assert info.name == chunk_name(10, 14) == "000000010-000000014"
    assert (info.start, info.end, info.identities) == (10, 14, [10, 12])
    assert (info.spec_hash, info.run_seed) == ("spec-a", 7)


def test_join_stamps_and_npz(tmp_path):
    a, b = ChunkStamp(0, 2, "s", 1), ChunkStamp(2, 4, "s", 1)
    assert join_stamps([b, a]) == ChunkStamp(0, 4, "s", 1)
    assert join_stamps([a, a]) == a
    assert join_stamps([a, ChunkStamp(3, 4, "s", 1)]) is None  # a gap
    assert join_stamps([a, ChunkStamp(2, 4, "t", 1)]) is None  # another run
    assert join_stamps([a, None]) is None
    fs = _planned(5, 2)
    fs.save_npz(str(tmp_path / "f.npz"))
    assert FaceSet.load_npz(str(tmp_path / "f.npz")).chunk == fs.chunk
    with pytest.raises(InputError, match="outside the planned chunk 5..6"):
        FaceSet(
            fs.images, fs.labels + 10, [Provenance(identity=int(x) + 10) for x in fs.labels], {}, fs.chunk
        )


def test_writer_override_must_agree_with_the_plan(tmp_path):
    fs = _planned(2, 2)
    # what the shipped graph used to do: the spec planned 2..3, the writer said 0..99
    with pytest.raises(
        InputError, match=r"identity_start.*planned for identities 2..3.*identity_start to -1"
    ):
        write_faceset(fs, tmp_path / "ds", start=0, count=100)
    assert not (tmp_path / "ds").exists()  # refused before anything was created
    info = write_faceset(fs, tmp_path / "ds", start=2, count=2)  # an override equal to the plan is fine
    assert info.name == "000000002-000000004"


# ------------------------------------------------------------------ never replace silently
def test_issue_12_item_1_two_chunks_survive_and_a_conflicting_rerun_is_refused(tmp_path):
    ds = tmp_path / "ds"
    first = write_faceset(_planned(0, 2), ds)
    second = write_faceset(_planned(2, 2), ds)
    assert (
        [c.name for c in list_chunks(ds)]
        == [first.name, second.name]
        == [
            "000000000-000000002",
            "000000002-000000004",
        ]
    )
    before = (ds / "chunks" / first.name / "train.rec").read_bytes()
    # another run (other spec) for identities 0..1: refused, naming the chunk, its maker and the input
    with pytest.raises(InputError) as err:
        write_faceset(_planned(0, 2, spec="spec-b", img_seed=3), ds)
    msg = str(err.value)
    assert "overwrite: chunk 000000000-000000002 already exists" in msg
    assert "spec spec-a, run seed 7" in msg and "spec spec-b, run seed 7" in msg
    assert "'overwrite' input to true" in msg
    # also another seed of the same spec, and a hand-built faceset of unknown origin
    with pytest.raises(InputError, match="already exists"):
        write_faceset(_planned(0, 2, seed=8), ds)
    unplanned = dataclasses.replace(_planned(0, 2), chunk=None)
    with pytest.raises(InputError, match="without a planned run"):
        write_faceset(unplanned, ds, start=0, count=2)
    assert (ds / "chunks" / first.name / "train.rec").read_bytes() == before
    assert not [p for p in (ds / "chunks").iterdir() if p.name.startswith(".")]
    assert inspect(ds).ok


def test_same_run_may_replace_its_chunk_and_the_replacement_is_recorded(tmp_path):
    ds = tmp_path / "ds"
    write_faceset(_planned(0, 2, per=1), ds)
    again = write_faceset(_planned(0, 2, per=3, img_seed=9), ds)  # a re-run after a crash
    assert again.images == 6 and len(again.replaced) == 1
    rec = again.replaced[0]
    assert rec["images"] == 2 and rec["spec_hash"] == "spec-a" and rec["reason"].startswith("same run")
    # overwrite replaces another run's chunk; the history keeps both replacements
    third = write_faceset(_planned(0, 2, per=2, spec="spec-b"), ds, overwrite=True)
    assert [r["reason"] for r in third.replaced] == [rec["reason"], "overwrite=true"]
    chunk = ds / "chunks" / third.name
    assert json.loads((chunk / "chunk.json").read_text())["replaced"][-1]["spec_hash"] == "spec-a"
    index = json.loads((ds / "dataset.json").read_text())
    assert [(r["chunk"], r["images"]) for r in index["replacements"]] == [(third.name, 2), (third.name, 6)]
    (meta,) = query(chunk, "SELECT value FROM meta WHERE name = 'replaced'")
    assert json.loads(meta[0])[-1]["reason"] == "overwrite=true"
    assert inspect(ds).ok and list_chunks(ds)[0].images == 4


def test_check_chunk_slot_touches_nothing(tmp_path):
    ds = tmp_path / "ds"
    assert check_chunk_slot(ds, 0, 4) is None and not ds.exists()
    write_faceset(_planned(0, 4), ds)
    with pytest.raises(InputError, match=r"overlaps committed chunk 000000000-000000004.*spec spec-a"):
        check_chunk_slot(ds, 2, 6, stamp=ChunkStamp(2, 6, "spec-a", 7))
    assert check_chunk_slot(ds, 0, 4, stamp=ChunkStamp(0, 4, "spec-a", 7)).name == "000000000-000000004"
    assert check_chunk_slot(ds, 0, 4, overwrite=True) is not None
    assert check_chunk_slot(ds, 4, 8) is None


def test_failed_write_removes_the_folders_it_created_only(tmp_path):
    (tmp_path / "keep").mkdir()
    fs = _planned(0, 2)
    bad = FaceSet(fs.images[:1], fs.labels[:1], fs.provenance[:1], {}, fs.chunk)

    class Boom(Exception):
        pass

    def boom(done, total):
        raise Boom

    with pytest.raises(Boom):
        write_faceset(bad, tmp_path / "keep" / "new" / "ds", batch_size=1, workers=1, progress=boom)
    assert (tmp_path / "keep").is_dir() and list((tmp_path / "keep").iterdir()) == []
    # a folder that existed before the write is left alone
    write_faceset(_planned(4, 2), tmp_path / "keep")
    with pytest.raises(Boom):
        write_faceset(_planned(0, 2), tmp_path / "keep", batch_size=1, workers=1, progress=boom)
    assert [c.name for c in list_chunks(tmp_path / "keep")] == ["000000004-000000006"]


def test_runner_and_writer_share_one_chunk_name():
    assert Chunk(0, 100, 100).name == chunk_name(100, 200) == "000000100-000000200"


def test_missing_reference_folder_says_how_to_fix(tmp_path):
    with pytest.raises(
        InputError, match=r"reference folder .*nowhere does not exist.*Fix: create it with one sub-folder"
    ):
        ReferenceBank.from_folder(tmp_path / "nowhere")
