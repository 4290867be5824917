"""STG nodes: load the DCFace mixer, build a reference bank, and render styled images of each identity."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

from ..fdta_core.errors import InputError
from ..fdta_core.faces.identity import model_file_id
from ..fdta_core.faceset import faceset_preview, image_to_uint8, uint8_to_image
from ..fdta_core.fsutil import resolve_inside
from ..fdta_core.stg import POLICIES, ReferenceBank, STGSampler, build_model, load_stg_weights, mix
from ..fdta_core.stg.checkpoint import ADAFACE_STYLE_FILE
from ..fdta_core.stg.policies import GRID_POLICIES, MPIE_EXPRESSIONS, MPIE_LIGHTINGS, MPIE_YAWS
from ..fdta_core.stg.solvers import SAMPLERS, check_sampler
from ..fdta_core.timing import StageClock
from ._common import (
    CATEGORY,
    FaceModels,
    Faceset,
    ModelFiles,
    STGModel,
    combo_input,
    float_input,
    int_input,
    load_patched,
    model_file_input,
    node_errors,
    precision_input,
    progress_callback,
    seed_input,
)
from ._common import ReferenceBank as ReferenceBankType
from ._validation import FDTANode, PromptGraph, check_widgets, validate

log = logging.getLogger("FDTA")

STG_FOLDER = "fdta_stg"
#: Cells of the Syn-MPIE style grid (13 yaws x 7 lightings x 2 expressions = 182), from the core's table.
MPIE_CELLS = len(MPIE_YAWS) * len(MPIE_LIGHTINGS) * len(MPIE_EXPRESSIONS)
STG_EXPECTED = ("dcface_5x5.ckpt", "dcface_3x3.ckpt", "<name>.safetensors from `fdta stg convert`")


@dataclass
class STGHandle:
    """What flows through an ``FDTA_STG_MODEL`` socket: the ComfyUI-managed model and its settings."""

    patcher: Any  # comfy.model_patcher.ModelPatcher around fdta_core.stg.STGModel
    grid: int
    file: str
    report: str


STG_FILES = ModelFiles(
    folder=STG_FOLDER,
    extensions=(".ckpt", ".safetensors", ".pt", ".pth"),
    what="STG checkpoint",
    expected=STG_EXPECTED,
    fix=f"download DCFace's released mixer checkpoints into models/fdta/stg (the frozen style "
    f"backbone {ADAFACE_STYLE_FILE} is included in them).",
)


def check_bank(values: dict, graph: PromptGraph | None) -> None:
    """The reference folder / .rec / tags CSV exist under ComfyUI's input folder."""
    import folder_paths

    root = folder_paths.get_input_directory()
    source = values.get("source", "folder")
    if source in ("folder", "rec") and isinstance(values.get("path"), str):
        p = resolve_inside(values["path"], [root], where="path")
        if not p.exists():
            raise InputError(
                f"the reference {'folder' if source == 'folder' else '.rec file'} {p} does not exist",
                where="path",
                fix=_bank_fix(source, values["path"], root),
            )
    tags = values.get("tags_csv")
    if isinstance(tags, str) and tags.strip():
        t = resolve_inside(tags, [root], where="tags_csv")
        if not t.is_file():
            raise InputError(
                f"tags CSV {t} does not exist",
                where="tags_csv",
                fix="put the CSV (columns path, subject, yaw, lighting, expression) there, or clear tags_csv.",
            )


def _bank_fix(source: str, path: str, root: str) -> str:
    if source == "rec":
        return f"copy the reference train.rec/train.idx under ComfyUI's input folder ({root}) and set 'path' to it."
    return (
        f"create {os.path.join(root, path)} with one sub-folder per real reference subject holding their face "
        f"images (e.g. {os.path.join(path, 'subject0', '0.png')}), or set 'path' to an existing folder "
        "relative to ComfyUI's input folder."
    )


class FDTASTGLoader(FDTANode):
    @classmethod
    def MODEL_RESOLVERS(cls) -> dict:
        return {"model_name": lambda name: STG_FILES.resolve(name, where="model_name")}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTASTGLoader",
            display_name="FDTA STG Loader (DCFace mixer)",
            category=f"{CATEGORY}/stg",
            description="Loads a DCFace dual-condition mixer checkpoint (dcface_5x5.ckpt, dcface_3x3.ckpt, or a "
            "safetensors file made by `fdta stg convert`) from models/fdta/stg. The style grid size is read from the "
            "checkpoint; Lightning checkpoints are read without executing any pickled code.",
            inputs=[
                model_file_input(STG_FILES, "DCFace mixer checkpoint"),
            ],
            outputs=[
                STGModel.Output(
                    display_name="stg_model", tooltip="The STG mixer (EMA UNet + ID and style encoders)"
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, model_name=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        with node_errors("FDTASTGLoader"):

            def load(path: str, _device: Any) -> tuple[Any, Any]:
                weights = load_stg_weights(path)
                return build_model(weights), weights

            patcher, _path, weights = load_patched(STG_FILES, model_name, where="model_name", load=load)
            log.info("[FDTA] STG: %s", weights.report.summary())
            return io.NodeOutput(
                STGHandle(patcher, weights.config.grid, model_name, weights.report.summary())
            )


def _align_fn(face_models: Any):
    """Alignment by the faces stage (``FDTA_FACE_MODELS``: detector + 5-point ArcFace alignment)."""
    if face_models is None:
        return None
    from ..fdta_core.stg.bank import align_with_face_models

    return align_with_face_models(face_models)


class FDTAReferenceBank(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAReferenceBank",
            display_name="FDTA Reference Bank",
            category=f"{CATEGORY}/stg",
            description="Real reference faces whose pose, lighting and expression the STG mixer borrows: a folder "
            "(one sub-folder per subject, under ComfyUI's input folder), an insightface .rec, or an IMAGE batch. "
            "Faces that are not 112x112 are aligned with the connected face models. Tags (subject, yaw, lighting, "
            "expression) come from a CSV or from key=value folder names such as yaw=-30.",
            inputs=[
                combo_input(
                    "source", ["folder", "rec", "images"], "folder", "Where the references come from."
                ),
                io.String.Input(
                    "path",
                    default="fdta/references",
                    tooltip="Folder or .rec path, relative to ComfyUI's input folder.",
                ),
                io.String.Input(
                    "tags_csv",
                    default="",
                    optional=True,
                    tooltip="Optional CSV (columns path, subject, yaw, lighting, expression), relative to the input folder.",
                ),
                int_input("max_subjects", 0, 0, 10_000_000, "Use at most this many subjects (0 = all)"),
                int_input(
                    "max_per_subject", 0, 0, 100_000, "Use at most this many images per subject (0 = all)"
                ),
                int_input("first_subject", 0, 0, 10_000_000, "(.rec) skip this many identities first."),
                io.Image.Input("images", optional=True, tooltip="Reference faces when source is 'images'."),
                FaceModels.Input(
                    "face_models",
                    optional=True,
                    tooltip="Face detector + alignment for references that are not aligned 112x112 faces.",
                ),
            ],
            outputs=[
                ReferenceBankType.Output(
                    display_name="reference_bank", tooltip="The reference faces with keys and tags."
                ),
                io.Image.Output(display_name="preview", tooltip="The first reference faces."),
                io.String.Output(
                    display_name="summary", tooltip="Counts of images, subjects and tagged images."
                ),
            ],
        )

    @classmethod
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks of literal widget values (nodes/_validation.py)."""
        check_widgets(cls, values)
        check_bank(values, graph)

    @classmethod
    def validate_inputs(cls, source=None, path=None, tags_csv=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        source: str,
        path: str,
        max_subjects: int,
        max_per_subject: int,
        first_subject: int,
        tags_csv: str = "",
        images=None,
        face_models=None,
    ) -> io.NodeOutput:
        import folder_paths

        with node_errors("FDTAReferenceBank"):
            align = _align_fn(face_models)
            align_id = model_file_id(face_models, "detector") if face_models is not None else ""
            root = folder_paths.get_input_directory()
            if source == "images":
                if images is None:
                    raise InputError("source is 'images' but no IMAGE is connected", where="images")
                bank = ReferenceBank.from_images(image_to_uint8(images, where="images"), align=align)
            elif source == "folder":
                folder = resolve_inside(path, [root], where="path")
                if not folder.is_dir():
                    raise InputError(
                        f"the reference folder {folder} does not exist",
                        where="path",
                        fix=_bank_fix(source, path, root),
                    )
                csv_path = resolve_inside(tags_csv, [root], where="tags_csv") if tags_csv.strip() else None
                bank = ReferenceBank.from_folder(
                    folder,
                    align=align,
                    align_id=align_id,
                    tags_csv=csv_path,
                    max_subjects=max_subjects,
                    max_per_subject=max_per_subject,
                )
            elif source == "rec":
                rec = resolve_inside(path, [root], where="path")
                bank = ReferenceBank.from_rec(
                    rec,
                    max_subjects=max_subjects,
                    max_per_subject=max_per_subject,
                    first_subject=first_subject,
                    align=align,
                    align_id=align_id,
                )
            else:
                raise InputError(f"unknown source '{source}'", where="source")
            preview = uint8_to_image(bank.images[:16])
            return io.NodeOutput(bank, preview, bank.summary())


class FDTASTGMixer(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTASTGMixer",
            display_name="FDTA STG Mixer",
            category=f"{CATEGORY}/stg",
            description="Renders each synthetic identity in the styles of real reference faces with the DCFace mixer "
            "(DDIM, 50 steps, eta 1 by default; DPM-Solver++ 2M or UniPC in fewer steps). Each image keeps its identity label; its provenance records the "
            "reference key, style index and seed. Noise is drawn per (identity, style) from the seed, so any chunk "
            "reproduces on its own.",
            inputs=[
                STGModel.Input("stg_model", tooltip="From FDTA STG Loader."),
                Faceset.Input(
                    "source_faces", tooltip="Source faces, one identity each (e.g. the ACG sampler output)"
                ),
                ReferenceBankType.Input("reference_bank", tooltip="From FDTA Reference Bank."),
                combo_input(
                    "style_policy",
                    list(POLICIES),
                    "subject",
                    "random: any reference; subject: one real subject per identity (Syn-MS1M); "
                    "grid_subject: 13 yaws x 7 lightings x 2 expressions from tags, all from one real subject "
                    "per identity (Syn-MPIE as the paper made it); grid: the same cells from any subjects.",
                ),
                int_input(
                    "images_per_identity",
                    4,
                    0,
                    10_000,
                    "Styled images per identity (grid policies: 0 = every cell; fewer than the cells "
                    "sample the grid balanced: every yaw, lighting and expression as evenly as the count allows)",
                ),
                seed_input(
                    "run seed; style choices and noise derive from it and the identity",
                ),
                int_input("steps", 50, 1, 1000, "DDIM steps (DCFace: 50)"),
                float_input("eta", 1.0, 0.0, 1.0, 0.05, "DDIM eta (DCFace: 1.0)"),
                int_input(
                    "batch_size", 16, 1, 1024, "Images denoised together (mixes identities and styles)"
                ),
                precision_input("fp16"),
                combo_input(
                    "sampler",
                    list(SAMPLERS),
                    "ddim",
                    "ddim: DCFace's sampler (50 steps, eta 1). dpmpp_2m / unipc: deterministic "
                    "multistep solvers (diffusers), 12-16 steps for DDIM-50 quality at a third of the cost; "
                    "eta is ignored. See docs/stg.md.",
                ),
            ],
            outputs=[
                Faceset.Output(display_name="styled_faces", tooltip="Styled images with provenance."),
                io.Image.Output(
                    display_name="contact_sheet",
                    tooltip="Per identity: source and references above the generated images.",
                ),
                io.Image.Output(
                    display_name="images",
                    tooltip="A sample of the styled images: one row per identity, at most 8 identities x 8 "
                    "images (a bounded preview; the faceset output carries them all)",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, style_policy=None, precision=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        stg_model: STGHandle,
        source_faces,
        reference_bank: ReferenceBank,
        style_policy: str,
        images_per_identity: int,
        seed: int,
        steps: int,
        eta: float,
        batch_size: int,
        precision: str,
        sampler: str = "ddim",
    ) -> io.NodeOutput:
        import comfy.model_management as mm

        with node_errors("FDTASTGMixer"):
            clock = StageClock()
            mm.load_models_gpu([stg_model.patcher])
            device = mm.get_torch_device()
            stg = STGSampler(stg_model.patcher.model, device, precision)
            n_ids = len(source_faces.identities)
            per = images_per_identity or (MPIE_CELLS if style_policy in GRID_POLICIES else 1)
            progress = progress_callback(max(1, n_ids * per * steps))
            result = mix(
                stg,
                source_faces,
                reference_bank,
                policy=style_policy,
                images_per_identity=images_per_identity,
                run_seed=seed,
                steps=steps,
                eta=eta,
                batch_size=batch_size,
                progress=progress,
                solver=check_sampler(sampler, "sampler"),
            )
            sheet = uint8_to_image(result.contact_sheet[None])
            clock.stamp(result.faceset, source_faces, "stg", "FDTASTGMixer", len(result.faceset))
            return io.NodeOutput(result.faceset, sheet, uint8_to_image(faceset_preview(result.faceset)[None]))


NODES = [FDTASTGLoader, FDTAReferenceBank, FDTASTGMixer]
