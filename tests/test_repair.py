"""Repair rounds: identities a committed chunk is missing (rejected by the ACG, or left without images by the
CSIM filter / the leak check) are regenerated with the next round's attempt seeds and added to the chunk,
keeping every key and label already written; quotas hold in what is written; what is still missing after
the bound is recorded with its reason in chunk.json, dataset.json and ``fdta report``; a chunk in which
every identity is rejected is written empty and every reader accepts it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdta_core.acg import ACGSettings, FaceAnalysis, run_acg
from fdta_core.acg.engine import first_attempt
from fdta_core.cli import main
from fdta_core.dataset.manifest import read_dropped
from fdta_core.dataset.writer import list_chunks, missing_text, write_faceset
from fdta_core.errors import InputError
from fdta_core.faces.csim import csim_filter
from fdta_core.faceset import FaceSet
from fdta_core.plan import RepairRequest, parse_repair, repair_plan
from fdta_core.prompts.planner import build_plan
from fdta_core.prompts.spec import load_spec
from fdta_core.recordio import RecordReader
from tests.acg_helpers import FakeSampler

N = 12
SETTINGS = ACGSettings(candidates=1, retries=1, batch_size=4)
PER_ID = 3


class Analyzer:
    """Every candidate is a detected face with its own random aligned face and embedding; ``reject(job)``
    makes it a weak face (rejected by the ACG)."""

    def __init__(self, sampler, reject):
        self.sampler, self.reject = sampler, reject

    def analyze(self, images):
        out = []
        for img in images:
            j = self.sampler.job_of(img)
            rng = np.random.default_rng(j.seed)
            face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            emb = np.zeros(64)
            emb[j.identity % 64] = 1.0
            out.append(FaceAnalysis(True, 0.1 if self.reject(j) else 0.9, aligned=face, embedding=emb))
        return out

    def embed_aligned(self, faces):  # pragma: no cover - not used by run_acg
        raise AssertionError


def _embed(x: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float64) - 127.5)[:, ::97]


def _styled(source: FaceSet, bad) -> FaceSet:
    """A stand-in for STG: PER_ID images per identity, copies of its source face (CSIM 1), or unrelated
    random faces (CSIM about 0) when ``bad(identity, acg attempt)``."""
    rng = np.random.default_rng(1)
    imgs, labels, prov = [], [], []
    for img, lab, p in source:
        broken = bad(int(lab), int(p.extra["acg"]["attempt"]))
        for k in range(PER_ID):
            imgs.append(rng.integers(0, 256, img.shape, dtype=np.uint8) if broken else img)
            labels.append(lab)
            prov.append(p.derive("stg", extra={"k": k}))
    if not imgs:
        return source
    return source.derived(np.stack(imgs), np.array(labels), prov, dict(source.sources))


def _pass(plan, reject, bad):
    """One prompt's worth of pipeline: ACG, STG stand-in, CSIM filter (min 2 images per identity)."""
    sampler = FakeSampler()
    res = run_acg(plan, sampler, 1, settings=SETTINGS, analyzer=Analyzer(sampler, reject))
    kept, _stats = csim_filter(_styled(res.faceset(), bad), _embed, 0.5, "source", 2)
    return kept


def _plan_rows(plan):
    return [{"index": i.index, "attributes": i.attributes, "extra": i.extra} for i in plan]


def _report(tmp_path, capsys, folder, plan, name):
    plan_file = tmp_path / f"{name}_plan.json"
    plan_file.write_text(json.dumps(_plan_rows(plan)))
    args = ["report", str(folder), "--plan", str(plan_file), "--json", "--out", str(tmp_path / f"{name}_r")]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


ACG_BAD = {1, 6}  # every candidate of the first pass is rejected by the ACG
CSIM_BAD = {3, 8, 10}  # accepted by the ACG, but the first pass's styled images fail the CSIM filter


def _reject(j):
    return j.identity in ACG_BAD and j.attempt < first_attempt_of_round(1)


def _bad(identity, attempt):
    return identity in CSIM_BAD and attempt < first_attempt_of_round(1)


def first_attempt_of_round(k: int) -> int:
    return k * (SETTINGS.retries + 1)


def test_parse_repair():
    assert parse_repair("") is None and parse_repair("  ") is None
    assert parse_repair("2: 7, 3 ,5") == RepairRequest(2, (3, 5, 7))
    assert RepairRequest(1, (3, 7)).text() == "1: 3, 7"
    for bad in ("3, 7", "0: 3", "x: 3", "1:", "1: 3, 3", "1: a"):
        with pytest.raises(InputError, match="repair"):
            parse_repair(bad)
    plan = build_plan(load_spec(None), 10, 4, 5)
    with pytest.raises(InputError, match=r"identities \[2\] are not in this chunk \(10..13\)"):
        repair_plan(plan, RepairRequest(1, (2,)))
    rp = repair_plan(plan, RepairRequest(1, (11, 13)))
    assert [i.index for i in rp] == [11, 13] and (rp.start, rp.end, rp.repair_round) == (10, 14, 1)
    assert first_attempt(rp, SETTINGS) == 2 and first_attempt(plan, SETTINGS) == 0


def test_forced_acg_and_csim_rejections_are_repaired_and_quotas_hold(tmp_path, capsys):
    plan = build_plan(load_spec(None), 0, N, 5)
    ds = tmp_path / "ds"
    info = write_faceset(_pass(plan, _reject, _bad), ds)
    missing = [m["identity"] for m in info.missing]
    assert missing == sorted(ACG_BAD | CSIM_BAD)
    why = {m["identity"]: m for m in info.missing}
    assert why[1]["stage"] == "acg" and why[1]["reasons"] == {"low_score": 1}
    assert why[3]["stage"] == "csim" and why[3]["reasons"] == {"csim": PER_ID}
    assert "FDTAAttributeSpec.repair to '1: 1, 3, 6, 8, 10'" in missing_text(info)
    with RecordReader(info.path) as r:
        before = [r.read(k) for k in range(1, info.images + 1)]

    # repair round 1: only the missing identities, new attempt seeds, added to the chunk
    rplan = repair_plan(plan, RepairRequest(1, tuple(missing)))
    kept = _pass(rplan, _reject, _bad)
    assert kept.chunk is not None and (kept.chunk.start, kept.chunk.end, kept.chunk.repair) == (0, N, 1)
    assert {p.extra["acg"]["attempt"] for p in kept.provenance} == {2}
    fixed = write_faceset(kept, ds)
    assert fixed.missing == [] and fixed.classes == N and fixed.images == N * PER_ID
    assert fixed.identities[: info.classes] == info.identities  # labels of what was written unchanged
    with RecordReader(fixed.path) as r:
        assert [r.read(k) for k in range(1, info.images + 1)] == before
    assert fixed.repairs[0]["round"] == 1 and fixed.repairs[0]["added"] == missing
    assert fixed.replaced == []  # a repair adds; it replaces nothing
    assert [c.name for c in list_chunks(ds)] == [info.name]
    # the dropped records of both passes stay in the manifest, each tagged with its round
    rounds = {(d["identity"], d["record"].get("repair_round", 0)) for d in read_dropped(fixed.path)}
    assert (3, 0) in rounds and (1, 0) in rounds
    assert main(["rec", "info", str(ds)]) == 0
    capsys.readouterr()

    rep = _report(tmp_path, capsys, fixed.path, plan, "fixed")
    q = rep["quotas"]
    assert q["missing"] == [] and q["written_identities"] == N
    fields = {f["field"]: f for f in q["fields"]}
    assert {"gender", "race", "age_bin"} <= set(fields)
    for f in fields.values():
        assert f["planned"] == f["written"] and f["max_deviation"] <= 1


def test_exhausted_repairs_stay_missing_with_their_reason(tmp_path, capsys):
    plan = build_plan(load_spec(None), 0, N, 5)
    ds = tmp_path / "ds"

    def reject(j):
        return j.identity == 4  # never acceptable

    def bad(identity, attempt):
        return identity == 9  # the STG always loses it

    info = write_faceset(_pass(plan, reject, bad), ds)
    assert [m["identity"] for m in info.missing] == [4, 9]
    for rnd in (1, 2):
        info = write_faceset(_pass(repair_plan(plan, RepairRequest(rnd, (4, 9))), reject, bad), ds)
        assert [m["identity"] for m in info.missing] == [4, 9]
        assert {m["round"] for m in info.missing} == {rnd}
    assert [r["added"] for r in info.repairs] == [[], []] and [r["tried"] for r in info.repairs] == [
        [4, 9]
    ] * 2
    index = json.loads((ds / "dataset.json").read_text())
    got = {m["identity"]: m for m in index["missing"]}
    assert set(got) == {4, 9} and got[4]["stage"] == "acg" and got[9]["stage"] == "csim"
    assert got[9]["reasons"] == {"csim": PER_ID} and got[4]["chunk"] == info.name
    rep = _report(tmp_path, capsys, info.path, plan, "short")
    assert rep["quotas"]["missing"] == [4, 9]
    assert {m["identity"]: m["stage"] for m in rep["missing"]} == {4: "acg", 9: "csim"}
    for f in rep["quotas"]["fields"]:
        assert f["max_deviation"] <= 2
    # a round that brings an identity the chunk already holds (queued again after a crash) adds nothing
    again = write_faceset(_pass(repair_plan(plan, RepairRequest(3, (0, 4))), reject, bad), ds)
    assert (again.images, again.identities) == (info.images, info.identities)
    assert again.repairs[-1]["already_written"] == [0] and again.repairs[-1]["added"] == []
    assert [m["identity"] for m in again.missing] == [4, 9]


def test_a_repair_needs_the_chunk_of_the_same_run(tmp_path):
    plan = build_plan(load_spec(None), 0, 4, 5)
    kept = _pass(repair_plan(plan, RepairRequest(1, (1,))), lambda j: False, lambda i, a: False)
    with pytest.raises(InputError, match="the chunk is not written"):
        write_faceset(kept, tmp_path / "ds")
    other = build_plan(load_spec(None), 0, 4, 6)  # another run seed
    write_faceset(_pass(other, lambda j: j.identity == 1, lambda i, a: False), tmp_path / "ds")
    with pytest.raises(InputError, match="identities of two runs would be mixed"):
        write_faceset(kept, tmp_path / "ds")


def test_a_chunk_in_which_every_identity_is_rejected_is_written_empty(tmp_path, capsys):
    from fdta_core.train.data import ChunkedFaceDataset

    ds = tmp_path / "ds"
    plan = build_plan(load_spec(None), 0, 4, 5)
    empty = _pass(plan, lambda j: True, lambda i, a: False)
    assert len(empty) == 0 and len(empty.dropped) == 4
    info = write_faceset(empty, ds)
    assert (info.images, info.classes) == (0, 0) and len(info.missing) == 4
    assert all(m["stage"] == "acg" for m in info.missing)
    later = build_plan(load_spec(None), 4, 4, 5)
    write_faceset(_pass(later, lambda j: False, lambda i, a: False), ds)
    assert main(["rec", "info", str(ds)]) == 0
    assert main(["rec", "info", info.path]) == 0
    capsys.readouterr()
    data = ChunkedFaceDataset(ds)
    assert len(data) == 4 * PER_ID and data.num_classes == 4
    merged = tmp_path / "merged"
    assert main(["rec", "merge", str(merged), str(ds)]) == 0
    capsys.readouterr()
    assert main(["rec", "info", str(merged)]) == 0
    capsys.readouterr()
    assert main(["report", str(ds), "--out", str(tmp_path / "root_r")]) == 2  # a root: merge it first
    assert "fdta rec merge OUT DATASET" in capsys.readouterr().err
    rep = _report(tmp_path, capsys, merged, plan, "e")
    assert rep["identities"] == 4 and {m["identity"] for m in rep["missing"]} == {0, 1, 2, 3}
    assert {m["chunk"] for m in rep["missing"]} == {info.name}
    assert rep["quotas"]["missing"] == [0, 1, 2, 3]
    # fdta audit of the empty chunk: nothing to flag (exit 0); of the merged set: the 4 written identities
    from fdta_core.testing.faces import make_tiny_face_pack

    make_tiny_face_pack(tmp_path / "insightface", "tiny_pack")
    pack = ["--pack", "tiny_pack", "--insightface-dir", str(tmp_path / "insightface"), "--json"]
    assert main(["audit", info.path, *pack]) == 0
    assert json.loads(capsys.readouterr().out)["identities"] == 0
    main(["audit", str(merged), *pack])
    assert json.loads(capsys.readouterr().out)["identities"] == 4
    # the empty chunk alone: the report says there is nothing to measure, and does not fail
    rep = _report(tmp_path, capsys, info.path, plan, "alone")
    assert rep["images"] == 0 and any("no images" in n for n in rep["notes"])
    assert rep["quotas"]["missing"] == [0, 1, 2, 3]
