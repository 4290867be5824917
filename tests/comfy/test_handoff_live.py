"""From generated data to a trained model inside the graph (issue 14), on tiny random-weight models:

* Syn-MS1M written headless in two chunks, then the workflow's training group enabled (the editor's
  toggle, through the UI file): the launcher trains on *all* chunks (labels = identities written) and,
  once the run has finished, FDTAVerify prints the accuracy table in FDTA Table 1's layout;
* Syn-MPIE end to end: 182 images per identity before filtering, all from one reference subject, every
  grid cell once; with 26 images per identity each of the 13 yaws appears twice;
* the two outputs merged with ``--renumber`` into one set whose ``fdta rec info`` is sound and whose
  identity count is the sum.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main as fdta
from fdta_core.runner import patch_workflow, plan_chunks
from fdta_core.runner.patch import parse_override
from fdta_core.workflow import ui_to_api
from tests.comfy.harness import ComfyServer, node_outputs
from tests.comfy.test_workflows_live import MODELS, tiny_models  # noqa: F401 (module fixture)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
SEED = 11
#: What makes the shipped graphs run in seconds on tiny models (as in test_workflows_live).
TINY_SETS = [
    f"ControlNetLoader.control_net_name={MODELS['cnet']}", "FDTAACGSampler.width=64", "FDTAACGSampler.height=64",
    "FDTAACGSampler.steps=2", "FDTAACGSampler.candidates=1", "FDTAACGSampler.sampler_name=euler",
    "FDTASTGLoader.model_name=dcface_tiny.safetensors", "FDTASTGMixer.steps=2",
    "FDTACSIMFilter.threshold=-1", "FDTACSIMFilter.min_images_per_identity=0",
]  # fmt: skip
MS1M_OUT = "fdta/syn_ms1m_handoff"
MPIE_OUT = "fdta/syn_mpie_handoff"
BENCHMARKS = ("lfw", "cfp_fp", "cplfw", "agedb_30", "calfw")


def _without_checks_tiny_models_cannot_pass(api: dict) -> dict:
    """Random-weight SD draws no face a detector accepts: sample without the ACG face checks. The CSIM
    filter's identity-leak check compares each styled image with its source and its reference subject, and
    a random STG keeps neither, so its verdict is a coin flip: off here (test_workflows_live covers the
    checks with a controlled pack)."""
    del api["7"]["inputs"]["face_models"]
    for node in api.values():
        if node["class_type"] == "FDTACSIMFilter":
            node["inputs"].pop("reference_bank", None)
    return api


def _tiny_api(name: str, tmp_path: Path) -> Path:
    api = _without_checks_tiny_models_cannot_pass(
        json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    )
    wf = tmp_path / f"{name}_tiny.json"
    wf.write_text(json.dumps(api))
    return wf


def _fdta_run(
    comfy: ComfyServer, wf: Path, run_dir: Path, identities: int, chunk: int, sets: list[str], capsys
):
    argv = ["run", str(wf), "--run-dir", str(run_dir), "--identities", str(identities), "--chunk-size", str(chunk),
            "--seed", str(SEED), "--server", comfy.url, "--timeout", "900"]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    rc = fdta(argv)
    out = capsys.readouterr().out
    assert rc == 0, f"{out}\n{comfy.log_tail(80)}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failed"] == 0
    return summary


@pytest.fixture(scope="module")
def ms1m_written(comfy: ComfyServer, tiny_models, tmp_path_factory):  # noqa: F811
    """Syn-MS1M, 4 identities in 2 chunks, written through the headless runner (group bypassed)."""
    tmp = tmp_path_factory.mktemp("ms1m")
    argv_sets = [*TINY_SETS, "FDTASTGMixer.images_per_identity=2", "FDTAAgeShifter.batch_size=4",
                 f"FDTADatasetWriter.output_name={MS1M_OUT}"]  # fmt: skip
    wf = _tiny_api("syn_ms1m", tmp)
    argv = ["run", str(wf), "--run-dir", str(tmp / "run"), "--identities", "4", "--chunk-size", "2",
            "--seed", str(SEED), "--server", comfy.url, "--timeout", "900"]  # fmt: skip
    for s in argv_sets:
        argv += ["--set", s]
    assert fdta(argv) == 0, comfy.log_tail(80)
    root = comfy.output_dir / MS1M_OUT
    assert sorted(c.name for c in (root / "chunks").iterdir() if not c.name.startswith(".")) == [
        "000000000-000000002",
        "000000002-000000004",
    ]
    return root, argv_sets


def _launcher_status(comfy: ComfyServer, launcher_inputs: dict) -> tuple[str, str]:
    entry = comfy.run(
        {"T": {"class_type": "FDTATrainerLauncher", "inputs": {**launcher_inputs, "action": "status"}}}
    )
    text = node_outputs(entry, "T")["text"][0]
    return text, re.search(r"^status: (\S+)", text, re.M).group(1)


def test_syn_ms1m_training_group_trains_on_all_chunks_then_verify_prints_table_1(
    comfy: ComfyServer, ms1m_written, tmp_path
) -> None:
    from fdta_core.testing.train import write_synthetic_bin

    root, sets = ms1m_written
    bench = comfy.input_dir / "fdta" / "benchmarks"
    bench.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(BENCHMARKS):
        write_synthetic_bin(bench / f"{name}.bin", num_classes=4, pairs=40, size=32, seed=i)

    # the editor's toggle: the UI file with the training group set from bypassed (4) to always (0)
    ui = json.loads((WORKFLOWS / "syn_ms1m.json").read_text())
    assert {n["mode"] for n in ui["nodes"] if n["type"] in ("FDTATrainerLauncher", "FDTAVerify")} == {4}
    for n in ui["nodes"]:
        n["mode"] = 0
    full = _without_checks_tiny_models_cannot_pass(ui_to_api(ui, comfy.object_info()))
    launcher_sets = [
        "FDTATrainerLauncher.run_name=fdta/train/handoff_ms1m", "FDTATrainerLauncher.preset=tiny",
        "FDTATrainerLauncher.network=preset", "FDTATrainerLauncher.batch_size=4", "FDTATrainerLauncher.epochs=2",
        "FDTATrainerLauncher.device=cpu",
    ]  # fmt: skip
    last = plan_chunks(4, 2)[-1]
    prompt = patch_workflow(full, last, SEED, [parse_override(s) for s in [*sets, *launcher_sets]])
    lk = next(k for k, n in prompt.items() if n["class_type"] == "FDTATrainerLauncher")
    prompt[lk]["inputs"]["overrides"] = json.dumps({"save_every": 4, "log_every": 1})
    vk = next(k for k, n in prompt.items() if n["class_type"] == "FDTAVerify")
    wk = next(k for k, n in prompt.items() if n["class_type"] == "FDTADatasetWriter")
    assert prompt[lk]["inputs"]["dataset"] == [wk, 0] and prompt[vk]["inputs"]["model"] == [lk, 0]
    assert prompt[lk]["inputs"]["loss"] == "arcface"

    entry = comfy.run(prompt, timeout=900)
    first = node_outputs(entry, vk)["text"][0]
    assert "no model.pt yet" in first  # the run has only just started: verify says so, no error
    launcher_inputs = {k: v for k, v in prompt[lk]["inputs"].items() if k != "dataset"}
    deadline = time.monotonic() + 600
    text, status = _launcher_status(comfy, launcher_inputs)
    while status not in ("finished", "failed", "dead") and time.monotonic() < deadline:
        time.sleep(2)
        text, status = _launcher_status(comfy, launcher_inputs)
    assert status == "finished", text
    run_dir = comfy.output_dir / "fdta" / "train" / "handoff_ms1m"
    run = json.loads((run_dir / "run.json").read_text())
    # every chunk, labelled over the whole set: 4 identities x 2 styles x (original + aged) = 16 images
    assert (run["num_classes"], run["num_images"], run["layout"]) == (4, 16, "chunks")
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert Path(recipe["data"]) == root.resolve() or Path(recipe["data"]) == root

    # queue again (the launcher only reporting): verify scores the finished run's model.pt
    prompt[lk]["inputs"]["action"] = "status"
    entry = comfy.run(prompt, timeout=600)
    table = node_outputs(entry, vk)["text"][0]
    lines = table.splitlines()
    assert lines[0].split()[2:] == ["LFW", "CFP-FP", "CPLFW", "AgeDB", "CALFW", "avg"], table
    row = lines[1].split()
    assert row[0] == "handoff_ms1m" and len(row) == 7
    assert all(0 <= float(v) <= 100 for v in row[1:]), table
    assert any(line.startswith("Syn-MS1M (FDTA)") and line.split()[-1] == "86.51" for line in lines), table


def _mpie_references(comfy: ComfyServer, subjects: int = 2) -> list[tuple[str, str, str]]:
    """Tagged 112x112 references: every subject has one image per cell of 13 yaws x 7 lights x 2 expressions."""
    cells = [
        (str(y), str(lt), e) for y in range(-90, 91, 15) for lt in range(7) for e in ("neutral", "smile")
    ]
    root = comfy.input_dir / "fdta" / "multipie_references"
    rng = np.random.default_rng(9)
    rows = ["path,subject,yaw,lighting,expression"]
    for s in range(subjects):
        (root / f"real{s}").mkdir(parents=True, exist_ok=True)
        for k, (y, lt, e) in enumerate(cells):
            rel = f"real{s}/{k:03d}.png"
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(root / rel)
            rows.append(f"{rel},real{s},{y},{lt},{e}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return cells


def _per_identity(dataset: Path):
    out: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for chunk in sorted((dataset / "chunks").iterdir()):
        if chunk.name.startswith("."):
            continue
        con = sqlite3.connect(chunk / "manifest.sqlite")
        for ident, subj, cell in con.execute(
            "SELECT identity, json_extract(extra, '$.stg_reference_subject'), json_extract(extra, '$.stg_cell') "
            "FROM images ORDER BY key"
        ):
            out.setdefault(int(ident), []).append((subj, tuple(json.loads(cell))))
        con.close()
    return out


def test_syn_mpie_end_to_end_one_subject_every_cell_then_merge_with_syn_ms1m(
    comfy: ComfyServer, ms1m_written, tmp_path, capsys
) -> None:
    cells = _mpie_references(comfy)
    wf = _tiny_api("syn_mpie", tmp_path)
    _fdta_run(
        comfy,
        wf,
        tmp_path / "run182",
        2,
        2,
        [*TINY_SETS, f"FDTADatasetWriter.output_name={MPIE_OUT}"],
        capsys,
    )
    got = _per_identity(comfy.output_dir / MPIE_OUT)
    assert sorted(got) == [0, 1]
    subjects = []
    for ident, images in got.items():
        assert len(images) == 182, ident  # before filtering (the CSIM filter keeps every image here)
        assert len({s for s, _ in images}) == 1, ident  # all from one real reference subject
        assert sorted(c for _, c in images) == sorted(cells)  # every grid cell once
        subjects.append(images[0][0])
    assert len(set(subjects)) == 2  # two identities of one block, two different subjects

    # 26 images per identity: a balanced sample, each of the 13 yaws twice
    out26 = "fdta/syn_mpie26_handoff"
    sets26 = [*TINY_SETS, "FDTASTGMixer.images_per_identity=26", f"FDTADatasetWriter.output_name={out26}"]
    _fdta_run(comfy, wf, tmp_path / "run26", 2, 2, sets26, capsys)
    for ident, images in _per_identity(comfy.output_dir / out26).items():
        assert len(images) == 26 and len({c for _, c in images}) == 26
        assert len({s for s, _ in images}) == 1
        assert Counter(c[0] for _, c in images) == {str(y): 2 for y in range(-90, 91, 15)}, ident
        assert set(Counter(c[1] for _, c in images).values()) <= {3, 4}
        assert Counter(c[2] for _, c in images) == {"neutral": 13, "smile": 13}

    # Syn-MS1M + Syn-MPIE (identity ids overlap: both start at 0) -> one set, identity count the sum
    ms1m_root, _ = ms1m_written
    merged = tmp_path / "syn_ms1m_mpie"
    assert (
        fdta(["rec", "merge", str(merged), str(ms1m_root), str(comfy.output_dir / MPIE_OUT), "--renumber"])
        == 0
    )
    capsys.readouterr()
    assert fdta(["rec", "info", str(merged), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"], info["errors"]
    assert info["classes"] == 4 + 2 and info["images"] == 16 + 2 * 182
    assert info["manifest_rows"] == info["images"]
