"""Where the time goes: stage timings ride on facesets to the writer, which stores them with the chunk;
merge keeps them; the report and the run table sum them per stage."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fdta_core.dataset import merge, write_faceset
from fdta_core.dataset.manifest import read_stages
from fdta_core.faces.report import build_report, load_dataset
from fdta_core.faceset import ChunkStamp, FaceSet, Provenance
from fdta_core.runner.stages import format_run_stages, run_stage_summary
from fdta_core.timing import StageClock, StageTiming, format_stage_table, stage_table


def _faceset(start: int, n_id: int, per: int) -> FaceSet:
    labels = np.repeat(np.arange(start, start + n_id), per)
    rng = np.random.default_rng(start)
    imgs = rng.integers(0, 256, (len(labels), 112, 112, 3), dtype=np.uint8)
    prov = [Provenance(identity=int(x)) for x in labels]
    return FaceSet(imgs, labels, prov, chunk=ChunkStamp(start, start + n_id, "abc", 7))


def test_stage_clock_stamps_and_the_faceset_carries_timings():
    fs = _faceset(0, 3, 2)
    clock = StageClock()
    time.sleep(0.01)
    clock.stamp(fs, None, "stg", "FDTASTGMixer", len(fs))
    (t,) = fs.timings
    assert t.stage == "stg" and t.images == 6 and t.chunk == "000000000-000000003" and t.seconds >= 0.01
    assert t.images_per_s == pytest.approx(6 / t.seconds)
    kept = fs.select(np.array([True, False] * 3))  # a filter's output keeps what came before ...
    StageClock().stamp(kept, fs, "csim", "FDTACSIMFilter", len(fs))  # ... and adds its own
    assert [x.stage for x in kept.timings] == ["stg", "csim"] and [x.stage for x in fs.timings] == ["stg"]
    assert [x.stage for x in FaceSet.concat([kept, fs]).timings] == ["stg", "csim", "stg"]
    assert fs.derived(fs.images, fs.labels, fs.provenance).timings == fs.timings


def test_timings_survive_npz(tmp_path):
    fs = _faceset(0, 2, 2)
    fs.timings = [StageTiming("age", "FDTAAgeShifter", 1.5, 4, "x", 12.0)]
    fs.save_npz(str(tmp_path / "f.npz"))
    assert FaceSet.load_npz(str(tmp_path / "f.npz")).timings == fs.timings


def test_stage_table_sums_per_stage_in_pipeline_order():
    rows = stage_table(
        [
            StageTiming("write", "W", 1.0, 10, "a"),
            StageTiming("stg", "S", 3.0, 10, "a"),
            {"stage": "stg", "node": "S", "seconds": 5.0, "images": 30, "chunk": "b"},
            StageTiming("zz", "", 1.0, 0, "a"),
        ]
    )
    assert [r["stage"] for r in rows] == ["stg", "write", "zz"]
    stg = rows[0]
    assert stg["chunks"] == 2 and stg["images"] == 40 and stg["seconds"] == 8.0 and stg["images_per_s"] == 5.0
    assert stg["share"] == pytest.approx(0.8)
    text = format_stage_table(rows)
    assert "stg" in text and "80.0%" in text and "total" in text
    assert "no stage timings" in format_stage_table([])


def test_writer_stores_the_stages_with_the_chunk_and_merge_keeps_them(tmp_path):
    a, b = _faceset(0, 2, 3), _faceset(2, 2, 3)
    a.timings = [StageTiming("stg", "FDTASTGMixer", 2.0, 6, "000000000-000000002", 1.0)]
    b.timings = [StageTiming("stg", "FDTASTGMixer", 4.0, 6, "000000002-000000004", 1.0)]
    ia = write_faceset(a, tmp_path / "ds", node="FDTADatasetWriter")
    write_faceset(b, tmp_path / "ds")
    assert [s["stage"] for s in ia.stages] == ["stg", "write"]
    assert ia.stages[1]["node"] == "FDTADatasetWriter" and ia.stages[1]["images"] == 6
    on_disk = json.loads((tmp_path / "ds" / "chunks" / ia.name / "chunk.json").read_text())
    assert on_disk["stages"] == ia.stages
    rows = read_stages(tmp_path / "ds" / "chunks" / ia.name / "manifest.sqlite")
    assert [(r["stage"], r["chunk"], r["images"]) for r in rows] == [
        ("stg", ia.name, 6),
        ("write", ia.name, 6),
    ]
    merge(tmp_path / "merged", [tmp_path / "ds"])
    merged = read_stages(tmp_path / "merged" / "manifest.sqlite")
    assert len(merged) == 4 and sum(r["seconds"] for r in merged if r["stage"] == "stg") == 6.0
    summary = build_report(load_dataset(tmp_path / "merged"))[1]
    stg = next(r for r in summary["stages"] if r["stage"] == "stg")
    assert stg["chunks"] == 2 and stg["images"] == 12 and stg["images_per_s"] == 2.0


def test_run_stage_summary_reads_done_chunks_only(tmp_path):
    stages = [{"stage": "acg", "node": "FDTAACGSampler", "seconds": 4.0, "images": 2, "chunk": "c"}]
    manifest = {
        "chunks": {
            "0": {
                "state": "done",
                "started": 10.0,
                "finished": 15.0,
                "outputs": {"9": {"fdta_stages": stages}},
            },
            "1": {"state": "failed", "outputs": {"9": {"fdta_stages": stages}}},
            "2": {"state": "done", "started": 1.0, "finished": 2.0, "outputs": {"9": {"text": ["x"]}}},
        }
    }
    p = tmp_path / "m.json"
    p.write_text(json.dumps(manifest))
    s = run_stage_summary(p)
    assert s["chunks_done"] == 2 and s["chunks_without_timings"] == 1
    assert s["prompt_seconds"] == 6.0 and s["stage_seconds"] == 4.0 and s["stages"][0]["images"] == 2
    text = format_run_stages(s)
    assert "67%" in text and "reported no stage timings" in text
    assert run_stage_summary(tmp_path / "missing.json")["chunks_done"] == 0
