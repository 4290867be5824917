"""Issue 12 live, through ComfyUI's HTTP API with the shipped Syn-MS1M editor workflow converted as the
frontend converts it (``fdta_core.workflow.ui_to_api`` with the server's ``/object_info``), on tiny
random-weight models:

* "What happened" item 1: a user queues identities 0-1, then 2-3: both chunks survive; a conflicting
  re-run of 0-1 (another run seed) is refused at queue time naming the chunk, its maker and ``overwrite``;
  with ``overwrite`` on it replaces the chunk and says so; the old graph (writer range 0/100) is refused;
* item 2: each bad input is rejected by ``/prompt`` with HTTP 400 and nothing runs;
* item 3: ``fdta run --set`` with a misspelt input is refused with a suggestion before anything is queued.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fdta_core.cli import main as fdta
from fdta_core.workflow import ui_to_api
from tests.comfy.harness import ComfyServer, PromptFailed, node_outputs
from tests.comfy.test_workflows_live import MODELS, tiny_models  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UI_WORKFLOW = REPO / "workflows" / "syn_ms1m.json"


def _node(api: dict, cls: str) -> tuple[str, dict]:
    (hit,) = [(nid, n) for nid, n in api.items() if n["class_type"] == cls]
    return hit[0], hit[1]["inputs"]


def ui_prompt(comfy: ComfyServer, *, output: str, start: int, count: int, seed: int = 11) -> dict:
    """The shipped editor workflow as the frontend queues it, with the spec set as a user would set it
    and the tiny-model settings of tests/comfy/test_workflows_live.py."""
    api = ui_to_api(json.loads(UI_WORKFLOW.read_text()), comfy.object_info())
    _, spec = _node(api, "FDTAAttributeSpec")
    spec.update(identity_start=start, identity_count=count, seed=seed)
    _, acg = _node(api, "FDTAACGSampler")
    del acg["face_models"]  # random SD draws no face a detector accepts (see test_workflows_live)
    acg.update(width=64, height=64, steps=2, candidates=1, sampler_name="euler")
    _node(api, "ControlNetLoader")[1]["control_net_name"] = MODELS["cnet"]
    _node(api, "FDTASTGLoader")[1]["model_name"] = "dcface_tiny.safetensors"
    _node(api, "FDTASTGMixer")[1].update(images_per_identity=2, steps=2)
    _node(api, "FDTAAgeShifter")[1]["batch_size"] = 4
    _node(api, "FDTACSIMFilter")[1].update(threshold=-1, min_images_per_identity=0)
    _node(api, "FDTADatasetWriter")[1]["output_name"] = output
    return api


def refused(comfy: ComfyServer, prompt: dict) -> dict:
    """POST /prompt must answer 400; returns ComfyUI's answer. Nothing may be queued or run."""
    before = len(comfy.get("/history"))
    with pytest.raises(PromptFailed) as err:
        comfy.post("/prompt", {"prompt": prompt})
    assert "answered 400" in str(err.value), err.value
    assert comfy.get("/queue") == {"queue_running": [], "queue_pending": []}
    assert len(comfy.get("/history")) == before
    return err.value.payload


def errors_of(payload: dict, node_id: str) -> str:
    return " | ".join(e["details"] for e in payload["node_errors"][node_id]["errors"])


def test_issue_12_item_1_chunks_of_the_ui_workflow_survive(comfy: ComfyServer, tiny_models) -> None:  # noqa: F811
    out = "fdta/issue12_ui"
    chunks = comfy.output_dir / "fdta" / "issue12_ui" / "chunks"
    first = comfy.run(ui_prompt(comfy, output=out, start=0, count=2), timeout=600)
    writer_id, _ = _node(ui_prompt(comfy, output=out, start=0, count=2), "FDTADatasetWriter")
    assert "chunk 000000000-000000002" in node_outputs(first, writer_id)["text"][0]
    rec0 = (chunks / "000000000-000000002" / "train.rec").read_bytes()
    second = comfy.run(ui_prompt(comfy, output=out, start=2, count=2), timeout=600)
    assert "chunk 000000002-000000004" in node_outputs(second, writer_id)["text"][0]
    # both chunks survive, the first one untouched
    assert sorted(p.name for p in chunks.iterdir() if not p.name.startswith(".")) == [
        "000000000-000000002",
        "000000002-000000004",
    ]
    assert (chunks / "000000000-000000002" / "train.rec").read_bytes() == rec0
    # the same run queued again (e.g. after a crash) is accepted (same spec hash and run seed); the
    # writer runs again (the cache holds the 2-3 prompt) and records the replacement of its own chunk
    again = comfy.run(ui_prompt(comfy, output=out, start=0, count=2), timeout=600)
    again_text = node_outputs(again, writer_id)["text"][0]
    assert "REPLACED the earlier copy of chunk 000000000-000000002" in again_text and "same run" in again_text
    rec0 = (chunks / "000000000-000000002" / "train.rec").read_bytes()

    # a conflicting re-run (another run seed) of identities 0-1: refused at queue time, nothing runs
    payload = refused(comfy, ui_prompt(comfy, output=out, start=0, count=2, seed=12))
    msg = errors_of(payload, writer_id)
    assert "FDTADatasetWriter.overwrite: chunk 000000000-000000002 already exists" in msg
    assert "run seed 11" in msg and "run seed 12" in msg and "'overwrite' input to true" in msg
    assert (chunks / "000000000-000000002" / "train.rec").read_bytes() == rec0

    # the graph as it was shipped before (writer range 0/100 apart from the spec's): refused up front
    old = ui_prompt(comfy, output=out, start=2, count=2)
    old[writer_id]["inputs"].update(identity_start=0, identity_count=100)
    assert "planned for identities 2..3" in errors_of(refused(comfy, old), writer_id)

    # with overwrite on, the other run replaces the chunk, and the node and the data set say so
    forced = ui_prompt(comfy, output=out, start=0, count=2, seed=12)
    forced[writer_id]["inputs"]["overwrite"] = True
    third = comfy.run(forced, timeout=600)
    text = node_outputs(third, writer_id)["text"][0]
    assert "REPLACED the earlier copy of chunk 000000000-000000002" in text and "run seed 11" in text
    index = json.loads((chunks.parent / "dataset.json").read_text())
    assert [(r["chunk"], r["run_seed"], r["reason"]) for r in index["replacements"]] == [
        ("000000000-000000002", 11, "same run (spec hash and run seed agree)"),
        ("000000000-000000002", 11, "overwrite=true"),
    ]
    assert fdta(["rec", "info", str(chunks.parent)]) == 0


def _existing_chunk(comfy: ComfyServer, name: str) -> None:
    """A committed chunk of identities 0..99 made by another run (as a 100-identity prompt would)."""
    from fdta_core.dataset import write_faceset
    from fdta_core.faceset import ChunkStamp, FaceSet, Provenance

    labels = np.arange(0, 100, dtype=np.int64)
    imgs = np.random.default_rng(0).integers(0, 256, (100, 112, 112, 3), dtype=np.uint8)
    fs = FaceSet(
        imgs, labels, [Provenance(identity=int(x)) for x in labels], {}, ChunkStamp(0, 100, "other", 1)
    )
    write_faceset(fs, comfy.output_dir / name)


BAD_INPUTS = {
    # case: (class, input, value, expected text)
    "escaping output name": ("FDTADatasetWriter", "output_name", "../escape", "FDTADatasetWriter.output_name: '../escape' contains '..'"),
    "overlapping range": ("FDTADatasetWriter", "output_name", "fdta/issue12_overlap", "overlaps committed chunk 000000000-000000100"),
    "bogus sampler": ("FDTAACGSampler", "sampler_name", "bogus", "FDTAACGSampler.sampler_name: unknown sampler name 'bogus'"),
    "age loader device gpu": ("FDTAAgeLoader", "device", "gpu", "FDTAAgeLoader.device: unknown device 'gpu'"),
    "missing reference folder": ("FDTAReferenceBank", "path", "fdta/nowhere", "FDTAReferenceBank.path: the reference folder"),
    "precision typo": ("FDTASTGMixer", "precision", "fp61", "FDTASTGMixer.precision: unknown precision 'fp61'"),
    "missing STG checkpoint": ("FDTASTGLoader", "model_name", "dcface_9x9.ckpt", "FDTASTGLoader.model_name: STG checkpoint 'dcface_9x9.ckpt' not found. Looked in"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_issue_12_item_2_bad_inputs_are_refused_at_queue_time(comfy: ComfyServer, tiny_models, case) -> None:  # noqa: F811
    cls, name, value, expected = BAD_INPUTS[case]
    if case == "overlapping range":
        _existing_chunk(comfy, value)
    prompt = ui_prompt(comfy, output="fdta/issue12_bad", start=2, count=2)
    nid, inputs = _node(prompt, cls)
    inputs[name] = value
    payload = refused(comfy, prompt)
    assert payload["error"]["type"] == "prompt_outputs_failed_validation"
    text = errors_of(payload, nid)
    assert expected in text and "Fix:" in text, text
    # every output of the graph (the ACG and STG previews too) was refused, not only the broken branch
    outputs = [k for k, n in prompt.items() if n["class_type"] in ("PreviewImage", "FDTADatasetWriter")]
    refused_outputs = {o for e in payload["node_errors"].values() for o in e["dependent_outputs"]}
    assert refused_outputs == set(outputs)
    assert not (comfy.output_dir / "fdta" / "issue12_bad").exists()
    assert not (comfy.output_dir.parent / "escape").exists()


def test_issue_12_item_3_run_set_misspelt_input_is_refused(comfy: ComfyServer, tmp_path, capsys) -> None:
    api = json.loads((REPO / "workflows" / "api" / "syn_ms1m.json").read_text())
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(api))
    before = len(comfy.get("/history"))
    rc = fdta(["run", str(wf), "--run-dir", str(tmp_path / "run"), "--identities", "2", "--chunk-size", "2",
               "--seed", "1", "--server", comfy.url, "--set", "FDTAAgeShifter.keep_original=false"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0
    assert "unknown input of FDTAAgeShifter 'keep_original'" in err and "did you mean 'keep_originals'" in err
    assert len(comfy.get("/history")) == before and not (tmp_path / "run").exists()
