"""The shipped workflows in a real ComfyUI: their node schemas are current, and Syn-MS1M runs end to end
through the headless runner (``fdta run``) on tiny random-weight models of the real architectures, is
resumable, and merges into a data set that ``fdta rec info`` finds sound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from tests.comfy.harness import ComfyServer

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
SNAPSHOT = REPO / "tests" / "data" / "workflow_object_info.json"
MODELS = {
    "ckpt": "v1-5-pruned-emaonly.safetensors",
    # written as safetensors: ComfyUI torch.loads a .pth name, so the test points the workflow at this one
    "cnet": "control_sd15_canny_tiny.safetensors",
    "stg": "dcface_5x5.ckpt",
    "sam": "sam_ffhq_aging.pt",
}


def _inputs_signature(spec: dict) -> dict:
    """What a saved workflow depends on: input names, order and types (not defaults or model lists)."""
    out = {}
    for section in ("required", "optional"):
        for name, decl in (spec["input"].get(section) or {}).items():
            typ = decl[0]
            opts = decl[1] if len(decl) > 1 else {}
            if isinstance(typ, list) or typ == "COMBO":
                typ = "COMBO"
            out[name] = (section, typ, bool(opts.get("control_after_generate")))
    return {"inputs": out, "order": spec.get("input_order"), "outputs": spec["output"]}


def test_schema_snapshot_of_the_shipped_workflows_is_current(comfy: ComfyServer) -> None:
    """A renamed or reordered input silently breaks saved workflows; the snapshot catches it."""
    info = comfy.object_info()
    snap = json.loads(SNAPSHOT.read_text())
    for cls, spec in snap.items():
        assert cls in info, f"{cls} used by a shipped workflow is not registered"
        assert _inputs_signature(info[cls]) == _inputs_signature(spec), (
            f"{cls} changed its inputs; rebuild the workflows (python workflows/build_workflows.py "
            f"--object-info URL) and keep old workflows loading"
        )


@pytest.fixture(scope="module")
def tiny_models(comfy: ComfyServer):
    """Tiny random models saved under the file names the shipped workflows use."""
    import torch
    from safetensors.torch import save_file

    from fdta_core.stg.checkpoint import FORMAT, SETTINGS_KEY
    from fdta_core.testing.age import save_sam_checkpoint, tiny_sam
    from fdta_core.testing.faces import make_tiny_face_pack
    from fdta_core.testing.sd import write_random_sd_models
    from fdta_core.testing.stg import tiny_model

    sd = write_random_sd_models(
        comfy.models, seed=7, checkpoint_name=MODELS["ckpt"], controlnet_name=MODELS["cnet"]
    )
    make_tiny_face_pack(comfy.models / "insightface", "buffalo_l")
    stg = tiny_model(seed=3)
    settings = {"format": FORMAT, "grid": stg.cfg.grid, "config": stg.cfg.to_dict(), "source": "tiny"}
    stg_dir = comfy.models / "fdta" / "stg"
    stg_dir.mkdir(parents=True, exist_ok=True)
    # a safetensors file under the .ckpt name the workflow uses is refused (wrong format), so the
    # test writes the converted form and points the workflow at it with --set
    save_file({k: v.contiguous() for k, v in stg.state_dict().items()}, str(stg_dir / "dcface_tiny.safetensors"),
              metadata={SETTINGS_KEY: json.dumps(settings), "format": FORMAT})  # fmt: skip
    age_dir = comfy.models / "fdta" / "age"
    age_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_sam_checkpoint(tiny_sam(seed=1), age_dir / MODELS["sam"])
    # references: 3 real "subjects" of aligned 112x112 faces; the control edge map of the workflows
    rng = np.random.default_rng(5)
    refs = comfy.input_dir / "fdta" / "ms1m_references"
    for s in range(3):
        (refs / f"subject{s}").mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
                refs / f"subject{s}" / f"{i}.png"
            )
    Image.open(WORKFLOWS / "inputs" / "fdta_face_edges.png").save(comfy.input_dir / "fdta_face_edges.png")
    yield
    for p in (sd.checkpoint, sd.controlnet):
        p.unlink(missing_ok=True)


def test_syn_ms1m_runs_headless_resumes_and_merges(comfy: ComfyServer, tiny_models, tmp_path, capsys) -> None:
    api = json.loads((WORKFLOWS / "api" / "syn_ms1m.json").read_text())
    # random-weight SD draws no face a detector would accept: sample without the face checks (the
    # selection logic is unit-tested in CI) and keep every styled image (random models keep no identity)
    del api["7"]["inputs"]["face_models"]
    wf = tmp_path / "syn_ms1m_tiny.json"
    wf.write_text(json.dumps(api))
    sets = [
        f"ControlNetLoader.control_net_name={MODELS['cnet']}", "FDTAACGSampler.width=64", "FDTAACGSampler.height=64", "FDTAACGSampler.steps=2",
        "FDTAACGSampler.candidates=1", "FDTAACGSampler.sampler_name=euler",
        "FDTASTGLoader.checkpoint=dcface_tiny.safetensors",
        "FDTASTGMixer.images_per_identity=2", "FDTASTGMixer.steps=2",
        "FDTAAgeShifter.batch_size=4", "FDTACSIMFilter.threshold=-1", "FDTACSIMFilter.min_images_per_identity=0",
        "FDTADatasetWriter.output_name=fdta/syn_ms1m_test",
    ]  # fmt: skip
    run_dir = tmp_path / "run"
    argv = ["run", str(wf), "--run-dir", str(run_dir), "--identities", "4", "--chunk-size", "2", "--seed", "11",
            "--server", comfy.url, "--timeout", "600"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    rc = fdta(argv)
    out = capsys.readouterr().out
    assert rc == 0, f"{out}\n{comfy.log_tail(80)}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["done"] == 2 and summary["failed"] == 0

    # resumable: the same command again has nothing left to do and queues nothing
    before = len(comfy.get("/history"))
    assert fdta(argv) == 0
    capsys.readouterr()
    assert len(comfy.get("/history")) == before

    chunks = sorted((comfy.output_dir / "fdta" / "syn_ms1m_test" / "chunks").iterdir())
    assert [c.name for c in chunks if not c.name.startswith(".")] == [
        "000000000-000000002",
        "000000002-000000004",
    ]
    merged = tmp_path / "merged"
    assert fdta(["rec", "merge", str(merged), str(comfy.output_dir / "fdta" / "syn_ms1m_test")]) == 0
    capsys.readouterr()
    assert fdta(["rec", "info", str(merged), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # 4 identities x 2 STG styles x (original + 1 aged) = 16 images
    assert info["ok"] and info["layout"] == "insightface" and info["classes"] == 4 and info["images"] == 16

    import sqlite3

    con = sqlite3.connect(merged / "manifest.sqlite")
    rows = con.execute("SELECT history, seeds, age_target, reference_key FROM images").fetchall()
    assert len(rows) == 16
    histories = {tuple(json.loads(h)) for h, *_ in rows}
    assert ("acg", "stg", "csim") in histories and ("acg", "stg", "age", "csim") in histories
    assert all(ref for *_, ref in rows)
