"""Faces nodes in a real ComfyUI: LoadImage -> FDTAAlignFaces -> FDTACSIMFilter with a tiny insightface
pack; previews land in the temp folder, an image without a face is reported (not a crash), an incomplete
pack names the folder searched, and an insightface folder from extra_model_paths.yaml is honoured."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from tests.comfy.conftest import EXTRA_MODELS
from tests.comfy.harness import ComfyServer, node_outputs

PACK = "live_tiny_pack"
#: aligned faces computed in the test from the landmarks the tiny detector is built to find
EXPECTED: list[np.ndarray] = []


@pytest.fixture(scope="module")
def face_inputs(comfy: ComfyServer) -> list[str]:
    """A tiny pack in models/insightface/models/ and three 256x256 images: two faces, one without."""
    from fdta_core.faces.align import align_face
    from fdta_core.testing.faces import make_tiny_face_pack, tiny_face_image

    make_tiny_face_pack(comfy.models / "insightface", PACK)
    rng = np.random.default_rng(0)
    names = []
    EXPECTED.clear()
    for i, anchor in enumerate([(128, 96), (64, 128), None]):
        if anchor is None:
            img = np.zeros((256, 256, 3), np.uint8)
        else:
            img, _, kps = tiny_face_image(256, 256, anchor)
        # faint texture (far below the detector's threshold) so the two faces are not pixel-identical
        img = np.clip(img.astype(np.int16) + rng.integers(0, 25, img.shape), 0, 255).astype(np.uint8)
        if anchor is not None:
            EXPECTED.append(align_face(img, kps))  # what the node must produce from the known landmarks
        name = f"live_face_{i}.png"
        Image.fromarray(img).save(comfy.input_dir / name)
        names.append(name)
    return names


def faces_graph(names: list[str], pack: str = PACK, *, one_identity: bool = True) -> dict:
    g: dict = {}
    for i, name in enumerate(names):
        g[f"L{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    g["B0"] = {"class_type": "ImageBatch", "inputs": {"image1": ["L0", 0], "image2": ["L1", 0]}}
    g["B1"] = {"class_type": "ImageBatch", "inputs": {"image1": ["B0", 0], "image2": ["L2", 0]}}
    g["M"] = {
        "class_type": "FDTAFaceModelLoader",
        "inputs": {"pack": pack, "provider": "CPU", "det_size": 256, "det_threshold": 0.5},
    }
    g["A"] = {
        "class_type": "FDTAAlignFaces",
        "inputs": {"image": ["B1", 0], "face_models": ["M", 0], "min_face_size": 32,
                   "assume_aligned_112": True, "identity_start": 5, "one_identity": one_identity},
    }  # fmt: skip
    g["C"] = {
        "class_type": "FDTACSIMFilter",
        "inputs": {"faceset": ["A", 0], "face_models": ["M", 0], "threshold": 0.3, "reference": "source",
                   "min_images_per_identity": 0, "batch_size": 8, "sheet_identities": 4},
    }  # fmt: skip
    g["P_aligned"] = {"class_type": "PreviewImage", "inputs": {"images": ["A", 1]}}
    g["P_report"] = {"class_type": "PreviewAny", "inputs": {"source": ["A", 2]}}
    g["P_sheet"] = {"class_type": "PreviewImage", "inputs": {"images": ["C", 1]}}
    g["P_stats"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 2]}}
    g["P_hist"] = {"class_type": "PreviewImage", "inputs": {"images": ["C", 3]}}
    g["P_kept"] = {"class_type": "PreviewAny", "inputs": {"source": ["C", 0]}}
    return g


def _images(comfy: ComfyServer, entry: dict, node: str) -> list[Image.Image]:
    out = []
    for im in node_outputs(entry, node)["images"]:
        assert im["type"] == "temp"
        path = comfy.temp_dir / im.get("subfolder", "") / im["filename"]
        assert path.is_file(), path
        out.append(Image.open(path))
    return out


def test_align_and_csim_filter(comfy: ComfyServer, face_inputs: list[str]) -> None:
    info = comfy.object_info()
    packs = info["FDTAFaceModelLoader"]["input"]["required"]["pack"]
    assert PACK in json.dumps(packs)
    entry = comfy.run(faces_graph(face_inputs), timeout=180)
    report = node_outputs(entry, "P_report")["text"][0]
    assert report.splitlines()[0] == "aligned 2 of 3 image(s); dropped 1", report
    assert "image 2: no face found (256x256 image)" in report
    aligned = _images(comfy, entry, "P_aligned")
    assert [im.size for im in aligned] == [(112, 112), (112, 112)]
    for got, want in zip(aligned, EXPECTED, strict=True):
        diff = np.abs(np.asarray(got.convert("RGB"), np.int16) - want.astype(np.int16))
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, diff.mean()
    stats = node_outputs(entry, "P_stats")["text"][0]
    assert "identities kept 1 / 1" in stats, stats
    kept = int(re.search(r"kept (\d+) / 2 images", stats).group(1))
    assert kept >= 1  # the source face itself has CSIM 1
    assert "1.000]" in stats  # max CSIM: the source against itself
    sheet, hist = _images(comfy, entry, "P_sheet"), _images(comfy, entry, "P_hist")
    assert len(sheet) == 1 and len(hist) == 1 and sheet[0].size[0] > 112
    kept_repr = node_outputs(entry, "P_kept")["text"][0]
    csims = re.findall(r"csim=([-0-9.e]+)", kept_repr)
    assert len(csims) == kept and float(csims[0]) == pytest.approx(1.0, abs=1e-4)
    assert re.findall(r"identity=(\d+)", kept_repr)[0] == "5"


def test_incomplete_pack_names_folder_and_files(comfy: ComfyServer, face_inputs: list[str]) -> None:
    from fdta_core.testing.faces import write_tiny_detector

    folder = comfy.models / "insightface" / "models" / "live_half_pack"
    write_tiny_detector(folder / "det_10g.onnx")
    msgs = json.loads(comfy.run_error(faces_graph(face_inputs, "live_half_pack")))
    data = msgs[0][1]
    assert data["node_type"] == "FDTAFaceModelLoader"
    msg = data["exception_message"]
    assert msg.startswith("FDTAFaceModelLoader."), msg
    assert str(folder) in msg and "w600k_r50.onnx" in msg


def test_missing_pack_names_every_folder_searched(comfy: ComfyServer, face_inputs: list[str]) -> None:
    """ComfyUI 0.3.64 does not check V3 combo values against their options; the node's validate_inputs
    refuses a missing pack at queue time (HTTP 400), listing the default and the extra_model_paths.yaml
    folders."""
    payload = json.loads(comfy.run_error(faces_graph(face_inputs, "no_such_pack")))
    (nid,) = [k for k, e in payload["node_errors"].items() if e["class_type"] == "FDTAFaceModelLoader"]
    msg = payload["node_errors"][nid]["errors"][0]["details"]
    assert "FDTAFaceModelLoader.pack: face model pack 'no_such_pack' not found" in msg, msg
    assert str(comfy.models / "insightface" / "models" / "no_such_pack") in msg
    assert str(comfy.base / EXTRA_MODELS / "insightface" / "models" / "no_such_pack") in msg
    assert "w600k_r50.onnx" in msg and "det_10g.onnx" in msg


def test_pack_from_extra_model_paths(comfy: ComfyServer, face_inputs: list[str]) -> None:
    from fdta_core.testing.faces import make_tiny_face_pack

    make_tiny_face_pack(comfy.base / EXTRA_MODELS / "insightface", "live_extra_pack", seed=1)
    packs = comfy.object_info()["FDTAFaceModelLoader"]["input"]["required"]["pack"]
    assert "live_extra_pack" in json.dumps(packs)
    entry = comfy.run(faces_graph(face_inputs, "live_extra_pack"), timeout=180)
    assert node_outputs(entry, "P_report")["text"][0].startswith("aligned 2 of 3 image(s)")
