"""Syn-MS1M on tiny random-weight models, laid out as a user's ComfyUI is (models, input folder) so that
servers started by ``fdta run --launch`` / ``--ray`` / ``--sbatch`` find them: the same models and
settings as ``fdta demo`` (:func:`fdta_core.demo.prepare_models`), written once per test session."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from fdta_core.comfy_server import ComfyServer
from fdta_core.demo import DemoConfig, prepare_models, write_references
from tests.comfy.harness import REPO, comfy_or_skip


@dataclass
class TinyRun:
    comfyui_dir: Path
    python: Path
    workflow: Path  # API format, face checks off (random models draw no face)
    sets: list[str]  # --set overrides of the tiny models
    models_dir: Path
    input_dir: Path

    def location_args(self) -> list[str]:
        return ["--comfyui-dir", str(self.comfyui_dir), "--comfyui-python", str(self.python),
                "--models-dir", str(self.models_dir), "--input-dir", str(self.input_dir)]  # fmt: skip

    def set_args(self, output_name: str) -> list[str]:
        out: list[str] = []
        for s in [*self.sets, f"FDTADatasetWriter.output_name={output_name}"]:
            out += ["--set", s]
        return out


@pytest.fixture(scope="session")
def tiny_ms1m(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    root_dir, python = comfy_or_skip()
    root = tmp_path_factory.mktemp("tiny_ms1m")
    workflow = json.loads((REPO / "workflows" / "api" / "syn_ms1m.json").read_text())
    holder = ComfyServer(root_dir, python, root / "comfy")  # never started: only its folders are used
    models = prepare_models(
        DemoConfig(workdir=root, images_per_identity=2), holder, workflow, lambda _m: None
    )
    assert models.all_tiny and not models.face_checks
    del workflow["7"]["inputs"]["face_models"]
    workflow["7"]["inputs"].pop("reference_bank", None)
    for node in workflow.values():
        if node.get("class_type") == "FDTACSIMFilter":
            node["inputs"].pop("reference_bank", None)
    wf = root / "syn_ms1m_tiny.json"
    wf.write_text(json.dumps(workflow, indent=1))
    input_dir = root / "input"
    write_references(input_dir, seed=1)
    shutil.copy2(REPO / "workflows" / "inputs" / "fdta_face_edges.png", input_dir / "fdta_face_edges.png")
    return TinyRun(root_dir, python, wf, list(models.sets), holder.models, input_dir)
