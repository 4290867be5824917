"""Age nodes inside a real ComfyUI: the loader lists SAM files from models/fdta/age (incl. converted ones)."""

from __future__ import annotations

from tests.comfy.harness import ComfyServer


def _combo_options(decl) -> list:
    # V1 style: [[options...], {...}]; V3 style: ["COMBO", {"options": [...]}]
    if isinstance(decl[0], list):
        return decl[0]
    return decl[1].get("options", [])


def test_age_loader_lists_checkpoints(comfy: ComfyServer) -> None:
    from fdta_core.age.loading import read_checkpoint, save_safetensors
    from fdta_core.testing.age import save_sam_checkpoint, tiny_sam

    folder = comfy.models / "fdta" / "age"
    folder.mkdir(parents=True, exist_ok=True)
    pt = save_sam_checkpoint(tiny_sam(0), folder / "sam_tiny_test.pt", cuda_tagged=True)
    save_safetensors(read_checkpoint(pt), folder / "sam_tiny_test.safetensors")
    (folder / "notes.txt").write_text("not a model")
    info = comfy.object_info()
    assert "FDTAAgeLoader" in info and "FDTAAgeShifter" in info
    options = _combo_options(info["FDTAAgeLoader"]["input"]["required"]["model_name"])
    assert "sam_tiny_test.pt" in options and "sam_tiny_test.safetensors" in options
    assert "notes.txt" not in options
    shifter = info["FDTAAgeShifter"]["input"]["required"]
    assert _combo_options(shifter["mode"]) == ["list", "range", "relative"]


def test_age_graph_on_aligned_faces(comfy: ComfyServer) -> None:
    """LoadImage x2 -> FDTAAlignFaces -> FDTAAgeShifter (tiny SAM, list mode): 2 faces x (1 + 2 ages);
    the preview is saved and the provenance (shown by PreviewAny) carries the age targets."""
    import re

    import numpy as np
    from PIL import Image

    from fdta_core.testing.age import save_sam_checkpoint, tiny_sam
    from fdta_core.testing.faces import make_tiny_face_pack, tiny_face_image
    from tests.comfy.harness import node_outputs

    folder = comfy.models / "fdta" / "age"
    folder.mkdir(parents=True, exist_ok=True)
    save_sam_checkpoint(tiny_sam(1), folder / "sam_live_graph.pt", cuda_tagged=True)
    make_tiny_face_pack(comfy.models / "insightface", "age_live_pack")
    for i, anchor in enumerate([(128, 96), (96, 128)]):
        img, _, _ = tiny_face_image(256, 256, anchor, background=30)
        Image.fromarray(img).save(comfy.input_dir / f"age_live_{i}.png")
    graph = {
        "L0": {"class_type": "LoadImage", "inputs": {"image": "age_live_0.png"}},
        "L1": {"class_type": "LoadImage", "inputs": {"image": "age_live_1.png"}},
        "B": {"class_type": "ImageBatch", "inputs": {"image1": ["L0", 0], "image2": ["L1", 0]}},
        "M": {"class_type": "FDTAFaceModelLoader",
              "inputs": {"pack": "age_live_pack", "provider": "CPU", "det_size": 256, "det_threshold": 0.5}},
        "A": {"class_type": "FDTAAlignFaces",
              "inputs": {"image": ["B", 0], "face_models": ["M", 0], "min_face_size": 0,
                         "assume_aligned_112": True, "identity_start": 0, "one_identity": False}},
        "G": {"class_type": "FDTAAgeLoader",
              "inputs": {"model_name": "sam_live_graph.pt", "device": "auto", "precision": "auto"}},
        "S": {"class_type": "FDTAAgeShifter",
              "inputs": {"faceset": ["A", 0], "age_model": ["G", 0], "mode": "list", "ages": "20, 65",
                         "age_low": 20, "age_high": 70, "count": 3, "sampling": "even", "seed": 0,
                         "base_age": 30, "keep_originals": True, "batch_size": 0}},
        "P": {"class_type": "PreviewImage", "inputs": {"images": ["S", 1]}},
        "T": {"class_type": "PreviewAny", "inputs": {"source": ["S", 0]}},
    }  # fmt: skip
    entry = comfy.run(graph, timeout=300)
    images = node_outputs(entry, "P")["images"]
    assert len(images) == 1  # a bounded preview: one sheet, one row per identity (original + 2 aged)
    sheet = np.asarray(Image.open(comfy.temp_dir / images[0].get("subfolder", "") / images[0]["filename"]))
    assert sheet.shape[:2] == (4 + 2 * (112 + 14 + 4), 4 + 72 + 3 * (112 + 4))
    text = node_outputs(entry, "T")["text"][0]
    targets = re.findall(r"age_target=([0-9.]+|None)", text)
    assert targets == ["None", "20.0", "65.0"] * 2, targets
    assert re.findall(r"identity=(\d+)", text) == ["0"] * 3 + ["1"] * 3
    histories = re.findall(r"history=\[([^\]]*)\]", text)
    assert histories[1].endswith("'age'") and "'age'" not in histories[0]
    x0, y0 = 4 + 72, 4  # first row: the original, then its aged variants
    orig = sheet[y0 : y0 + 112, x0 : x0 + 112].astype(int)
    aged = sheet[y0 : y0 + 112, x0 + 116 : x0 + 116 + 112].astype(int)
    assert np.abs(aged - orig).mean() > 1  # the model really changed the face


def test_age_loader_reads_extra_model_paths_folder(comfy: ComfyServer) -> None:
    """A SAM file in a folder registered as fdta_age in extra_model_paths.yaml is listed and loads."""
    from fdta_core.testing.age import save_sam_checkpoint, tiny_sam
    from tests.comfy.conftest import EXTRA_MODELS

    save_sam_checkpoint(tiny_sam(2), comfy.base / EXTRA_MODELS / "fdta_age" / "sam_extra_live.pt")
    options = _combo_options(comfy.object_info()["FDTAAgeLoader"]["input"]["required"]["model_name"])
    assert "sam_extra_live.pt" in options
    graph = {
        "G": {"class_type": "FDTAAgeLoader", "inputs": {"model_name": "sam_extra_live.pt", "device": "cpu",
                                                         "precision": "fp32"}},
        "P": {"class_type": "PreviewAny", "inputs": {"source": ["G", 0]}},
    }  # fmt: skip
    text = comfy.run(graph, timeout=120)["outputs"]["P"]["text"][0]
    assert "sam_extra_live.pt" in text  # the handle's repr names the file it loaded
