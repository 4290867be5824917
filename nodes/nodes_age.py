"""Age nodes: load SAM's age model and turn a faceset into aged variants (FDTA's M_a).

The nodes only parse inputs, manage devices through ComfyUI's model management and call
``fdta_core.age``; all image logic (frame change, batching, provenance) lives there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..fdta_core.age.loading import CHECKPOINT_EXTENSIONS, EXPECTED_FILES, load_sam
from ..fdta_core.age.model import SAM, SAMConfig
from ..fdta_core.age.shift import (
    MODES,
    SAMPLINGS,
    AgeTargets,
    activation_bytes_per_image,
    choose_batch_size,
    parse_ages,
    placement_error,
    plan_targets,
    shift_faceset,
)
from ..fdta_core.errors import InputError
from ..fdta_core.faceset import FaceSet, faceset_preview, uint8_to_image
from ..fdta_core.timing import StageClock
from ._common import (
    CATEGORY,
    AgeModel,
    Faceset,
    ModelFiles,
    bool_input,
    combo_input,
    device_input,
    int_input,
    load_patched,
    model_file_input,
    node_errors,
    precision_input,
    progress_callback,
    seed_input,
)
from ._validation import FDTANode, validate

log = logging.getLogger("FDTA")

FOLDER = "fdta_age"
SUBCATEGORY = f"{CATEGORY}/age"
#: Batch used on the CPU when batch_size is 0 (auto).
CPU_AUTO_BATCH = 2
MAX_BATCH = 64

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class AgeModelHandle:
    """What ``FDTA_AGE_MODEL`` carries: the SAM module inside ComfyUI's ModelPatcher, and how it was loaded."""

    patcher: object  # comfy.model_patcher.ModelPatcher
    config: SAMConfig
    dtype: torch.dtype
    path: str

    @property
    def model(self) -> SAM:
        return self.patcher.model  # type: ignore[attr-defined]


AGE_FILES = ModelFiles(
    folder=FOLDER,
    extensions=CHECKPOINT_EXTENSIONS,
    what="age model",
    expected=EXPECTED_FILES,
    fix="download SAM's sam_ffhq_aging.pt (research-only weights) into models/fdta/age/ "
    "(optionally convert it with 'fdta age convert'), then refresh the node list.",
)


def _pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    import comfy.model_management as mm

    if device.type != "cuda":
        if choice in ("fp16", "bf16"):
            log.info("[FDTA] age model: %s requested on %s; using fp32 there", choice, device)
        return torch.float32
    if choice == "fp32":
        return torch.float32
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16" or mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


class FDTAAgeLoader(FDTANode):
    @classmethod
    def MODEL_RESOLVERS(cls) -> dict:
        return {"model_name": lambda name: AGE_FILES.resolve(name, where="model_name")}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAAgeLoader",
            display_name="FDTA Age Model Loader (SAM)",
            category=SUBCATEGORY,
            description="Loads SAM's age transformation model (sam_ffhq_aging.pt, or a .safetensors made by "
            "'fdta age convert') from models/fdta/age. The file is read without executing code and checked "
            "tensor by tensor. The weights are research-only (StyleGAN2 FFHQ derived).",
            inputs=[
                model_file_input(AGE_FILES, "SAM checkpoint"),
                device_input(),
                precision_input(),
            ],
            outputs=[
                AgeModel.Output(display_name="age_model", tooltip="The SAM age model, managed by ComfyUI.")
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name=None, device=None, precision=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(cls, model_name: str, device: str = "auto", precision: str = "auto") -> io.NodeOutput:
        with node_errors("FDTAAgeLoader"):

            def load(path: str, load_device: torch.device) -> tuple[SAM, torch.dtype]:
                torch_dtype = _pick_dtype(precision, load_device)
                return load_sam(path, dtype=torch_dtype), torch_dtype

            patcher, path, torch_dtype = load_patched(
                AGE_FILES, model_name, where="model_name", load=load, cpu=device == "cpu"
            )
            model, load_device = patcher.model, patcher.load_device
            log.info(
                "[FDTA] age model %s ready for %s (%s)", os.path.basename(path), load_device, torch_dtype
            )
            return io.NodeOutput(AgeModelHandle(patcher, model.config, torch_dtype, path))


class FDTAAgeShifter(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAAgeShifter",
            display_name="FDTA Age Shifter",
            category=SUBCATEGORY,
            description="Shows every face of a faceset at other ages with SAM: each 112x112 face is warped to "
            "SAM's FFHQ frame, aged, and aligned back to 112x112. Labels stay; every aged image records its "
            "age_target and the 'age' stage in its provenance. Check identity afterwards with FDTACSIMFilter.",
            inputs=[
                Faceset.Input("faceset", tooltip="Aligned faces to age (e.g. the STG mixer output)."),
                AgeModel.Input("age_model", tooltip="From FDTA Age Model Loader."),
                combo_input(
                    "mode",
                    list(MODES),
                    "list",
                    "list: every face at each age in 'ages'; range: 'count' ages evenly spaced from "
                    "age_low to age_high; relative: each shift in 'ages' added to the face's known age.",
                ),
                io.String.Input(
                    "ages",
                    default="20, 45, 70",
                    tooltip="list mode: target ages in years (0-100), comma separated; relative mode: shifts such "
                    "as '-20, +20'. Ignored in range mode.",
                ),
                int_input("age_low", 20, 0, 100, "range mode: youngest target age."),
                int_input("age_high", 70, 0, 100, "range mode: oldest target age."),
                int_input("count", 3, 1, 32, "range mode: aged images per input face."),
                combo_input(
                    "sampling",
                    list(SAMPLINGS),
                    "even",
                    "range mode: 'even' spaces the ages evenly; 'random' draws them per image from the seed.",
                ),
                seed_input(
                    "range mode with random sampling: run seed; each image's ages derive from it, its "
                    "identity and its position, so chunks reproduce the same ages.",
                ),
                int_input(
                    "base_age",
                    30,
                    0,
                    100,
                    "relative mode: the age assumed for a face whose provenance holds no age.",
                ),
                bool_input(
                    "keep_originals",
                    True,
                    "On: each original face is kept, followed by its aged variants. Off: only aged images.",
                ),
                int_input(
                    "batch_size",
                    0,
                    0,
                    MAX_BATCH,
                    "Faces per forward pass; 0 = chosen from free GPU memory (2 on the CPU).",
                ),
            ],
            outputs=[
                Faceset.Output(
                    display_name="faceset", tooltip="Originals (if kept) and aged variants, same labels."
                ),
                io.Image.Output(
                    display_name="preview",
                    tooltip="A sample of the output faces: one row per identity, at most 8 identities x 8 images "
                    "(a bounded preview; the faceset output carries them all).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, mode=None, sampling=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        faceset: FaceSet,
        age_model: AgeModelHandle,
        mode: str = "list",
        ages: str = "20, 45, 70",
        age_low: int = 20,
        age_high: int = 70,
        count: int = 3,
        sampling: str = "even",
        seed: int = 0,
        base_age: int = 30,
        keep_originals: bool = True,
        batch_size: int = 0,
    ) -> io.NodeOutput:
        with node_errors("FDTAAgeShifter"):
            clock = StageClock()
            if not isinstance(faceset, FaceSet):
                raise InputError("expected an FDTA faceset", where="faceset")
            if not isinstance(age_model, AgeModelHandle):
                raise InputError("expected an age model from FDTA Age Model Loader", where="age_model")
            values = parse_ages(ages) if mode in ("list", "relative") else ()
            targets = AgeTargets(
                mode,
                values,
                float(age_low),
                float(age_high),
                int(count),
                float(base_age),
                sampling,
                int(seed),
            )
            jobs = sum(len(items) for items in plan_targets(faceset, targets))
            batch = cls._place(age_model, batch_size, max(jobs, 1))
            progress = progress_callback(max(jobs, 1))
            device = age_model.patcher.load_device  # type: ignore[attr-defined]
            try:
                out = shift_faceset(
                    age_model.model,
                    faceset,
                    targets,
                    keep_originals=keep_originals,
                    batch_size=batch,
                    progress=progress,
                    device=device,
                    dtype=age_model.dtype,
                )
            except _OOM:
                import comfy.model_management as mm

                per = activation_bytes_per_image(age_model.config, age_model.dtype) * batch
                raise placement_error(
                    per, int(mm.get_free_memory(device)), str(device), during=f"running a batch of {batch}"
                ) from None
            clock.stamp(out, faceset, "age", "FDTAAgeShifter", len(out))
            return io.NodeOutput(out, uint8_to_image(faceset_preview(out)[None]))

    @staticmethod
    def _place(handle: AgeModelHandle, requested: int, jobs: int) -> int:
        """Load the model onto its device through ComfyUI and choose the batch size."""
        import comfy.model_management as mm

        patcher = handle.patcher
        device = patcher.load_device  # type: ignore[attr-defined]
        per_image = activation_bytes_per_image(handle.config, handle.dtype)
        weights = int(mm.module_size(handle.model))
        first_batch = max(1, min(requested or 1, jobs))
        if device.type == "cuda":
            total = int(mm.get_total_memory(device))
            if weights + per_image > total:
                raise placement_error(weights + per_image, total, str(device))
        try:
            mm.load_models_gpu([patcher], memory_required=per_image * first_batch, force_full_load=True)
        except _OOM:
            raise placement_error(weights + per_image, int(mm.get_free_memory(device)), str(device)) from None
        if requested:
            return min(int(requested), jobs)
        if device.type != "cuda":
            return min(CPU_AUTO_BATCH, jobs)
        batch = choose_batch_size(
            int(mm.get_free_memory(device)), handle.config, handle.dtype, min(MAX_BATCH, jobs)
        )
        log.info("[FDTA] age shifter: batch size %d from free memory on %s", batch, device)
        return batch


NODES = [FDTAAgeLoader, FDTAAgeShifter]
