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
