"""The shipped workflows as ComfyUI's template browser serves them, and the one-stage examples run.

ComfyUI 0.3.64 lists every ``<pack>/workflows/*.json`` at ``GET /workflow_templates`` and serves the
folder at ``/api/workflow_templates/<pack>/``; its frontend (1.27) shows ``<stem>.jpg`` as the card's
thumbnail. Each editor file converts against the server's own schemas to exactly its API twin (so no
widget is missing or shifted), and the small examples run on tiny random models with 112x112 faces
(taken as aligned, so the tiny detector is not asked to find a face in noise).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdta_core.workflow import ui_to_api
from tests.comfy.harness import PACK_NAME, ComfyServer, node_outputs

REPO = Path(__file__).resolve().parents[2]
WF = REPO / "workflows"
NAMES = sorted(p.stem for p in WF.glob("*.json"))
EXAMPLES = ["example_align_and_csim", "example_stg_two_faces", "example_age_shifter"]


def test_templates_are_listed_and_served_with_thumbnails(comfy: ComfyServer) -> None:
    listed = comfy.get("/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == NAMES, listed
    for name in NAMES:
        for ext, kind in (("jpg", "image/jpeg"), ("json", "application/json")):
            url = f"{comfy.url}/api/workflow_templates/{PACK_NAME}/{name}.{ext}"
            with urllib.request.urlopen(url, timeout=30) as r:
                body = r.read()
                assert r.status == 200 and r.headers.get_content_type() == kind, (url, r.headers)
            if ext == "jpg":
                assert body[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("name", NAMES)
def test_every_template_loads_against_the_live_schemas(comfy: ComfyServer, name: str) -> None:
    """The editor file, read with this server's node schemas, is exactly its API twin: every node type
    exists and every widget value lands on the input it was written for."""
    ui = json.loads((WF / f"{name}.json").read_text())
    api = json.loads((WF / "api" / f"{name}.json").read_text())
    assert ui_to_api(ui, comfy.object_info()) == api


@pytest.fixture(scope="module")
def example_models(comfy: ComfyServer):
    """Tiny models under the names the examples use (the STG as a converted safetensors under its own
    name, set per run), and two 112x112 "photos" in the input folder."""
    import torch

    from fdta_core.testing.age import save_sam_checkpoint, tiny_sam
    from fdta_core.testing.faces import make_tiny_face_pack
    from fdta_core.testing.stg import save_tiny_stg

    make_tiny_face_pack(comfy.models / "insightface", "buffalo_l")
    save_tiny_stg(comfy.models / "fdta" / "stg" / "dcface_tiny.safetensors")
    age_dir = comfy.models / "fdta" / "age"
    age_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_sam_checkpoint(tiny_sam(seed=1), age_dir / "sam_ffhq_aging.pt")
    rng = np.random.default_rng(11)
    for name in ("fdta_your_photo_1.png", "fdta_your_photo_2.png"):
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(comfy.input_dir / name)


def _example(name: str) -> dict:
    api = json.loads((WF / "api" / f"{name}.json").read_text())
    for node in api.values():
        if node["class_type"] == "FDTASTGLoader":
            node["inputs"]["model_name"] = "dcface_tiny.safetensors"
        if node["class_type"] == "FDTASTGMixer":
            node["inputs"]["steps"] = 2
    return api


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_validate_and_run(comfy: ComfyServer, example_models, name: str) -> None:
    api = _example(name)
    entry = comfy.run(api, timeout=600)
    previews = [nid for nid, n in api.items() if n["class_type"] == "PreviewImage"]
    for nid in previews:
        assert node_outputs(entry, nid)["images"], f"{name}: preview {nid} is empty"
    if name == "example_align_and_csim":
        # two photos of "one identity": the sheet shows both; the first is the source, CSIM 1 to itself
        assert len(previews) == 3
