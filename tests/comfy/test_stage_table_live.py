"""`fdta run`'s per-stage table on a live run (tiny random-weight models): every FDTA stage of the shipped
Syn-MS1M graph reports its wall time and images/s per chunk, the writer stores them with the chunk, the
run sums them into one table (stderr, and ``stages`` in the JSON line), and ``fdta report`` shows it."""

from __future__ import annotations

import json

import pytest

from fdta_core.cli import main as fdta
from tests.comfy.harness import ComfyServer
from tests.comfy.test_handoff_live import SEED, TINY_SETS, _tiny_api
from tests.comfy.test_workflows_live import tiny_models  # noqa: F401 (module fixture)

pytestmark = pytest.mark.slow

OUT = "fdta/stage_table_live"
STAGES = ["acg", "stg", "age", "csim", "write"]  # the Syn-MS1M graph, in pipeline order


def test_fdta_run_prints_the_per_stage_table(comfy: ComfyServer, tiny_models, tmp_path, capsys) -> None:  # noqa: F811
    wf = _tiny_api("syn_ms1m", tmp_path)
    sets = [*TINY_SETS, "FDTASTGMixer.images_per_identity=2", "FDTAAgeShifter.batch_size=4",
            f"FDTADatasetWriter.output_name={OUT}"]  # fmt: skip
    argv = ["run", str(wf), "--run-dir", str(tmp_path / "run"), "--identities", "4", "--chunk-size", "2",
            "--seed", str(SEED), "--server", comfy.url, "--timeout", "900"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    assert fdta(argv) == 0, comfy.log_tail(80)
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])["stages"]
    rows = {r["stage"]: r for r in summary["stages"]}
    assert list(rows) == STAGES, err
    assert summary["chunks_done"] == 2 and summary["chunks_without_timings"] == 0
    for name, r in rows.items():
        assert r["chunks"] == 2 and r["images"] > 0 and r["seconds"] > 0 and r["images_per_s"] > 0, (name, r)
    assert rows["acg"]["images"] == 4  # one source face per identity
    assert rows["stg"]["images"] == 8  # 2 styled images per identity
    assert rows["acg"]["nodes"] == ["FDTAACGSampler"] and rows["write"]["nodes"] == ["FDTADatasetWriter"]
    assert abs(sum(r["share"] for r in rows.values()) - 1) < 0.01
    # the stages ran inside the prompts: their time is part of the prompts' end-to-end time
    assert 0 < summary["stage_seconds"] <= summary["prompt_seconds"] * 1.01
    # the table on stderr, a line per stage with its node
    assert "per-stage time" in err and "2 chunk(s) done" in err
    for name in STAGES:
        assert any(line.startswith(name) for line in err.splitlines()), err

    # stored with each chunk (chunk.json and the manifest), shown by fdta report on the merged set
    root = comfy.output_dir / OUT
    chunks = sorted(c for c in (root / "chunks").iterdir() if not c.name.startswith("."))
    for c in chunks:
        meta = json.loads((c / "chunk.json").read_text())
        assert [s["stage"] for s in meta["stages"]] == STAGES and {s["chunk"] for s in meta["stages"]} == {
            c.name
        }
    assert fdta(["rec", "merge", str(tmp_path / "merged"), str(root)]) == 0
    capsys.readouterr()
    assert fdta(["report", str(tmp_path / "merged"), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "per-stage time" in text and all(any(ln.startswith(s) for ln in text.splitlines()) for s in STAGES)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["stage"] for r in rep["stages"]] == STAGES and rep["stages"][0]["chunks"] == 2
