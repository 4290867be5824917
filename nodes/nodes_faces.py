"""Faces nodes: load an insightface pack, align faces, filter styled faces by CSIM.

The nodes only parse inputs, call ``fdta_core.faces`` and convert outputs; the ONNX models run through
onnxruntime (not torch), so ComfyUI's ModelPatcher does not manage them.
"""

from __future__ import annotations

import numpy as np
from comfy_api.latest import io

from ..fdta_core.errors import ModelNotFoundError
from ..fdta_core.faces import PROVIDER_CHOICES, list_packs, load_face_pack
from ..fdta_core.faces.csim import REFERENCES, contact_sheet, csim_filter, histogram_image
from ..fdta_core.faces.identity import bank_subject_embeddings
from ..fdta_core.faces.pack import DEFAULT_FILES, pack_dirs
from ..fdta_core.faceset import faceset_to_image, image_to_uint8, uint8_to_image
from ..fdta_core.timing import StageClock
from ._common import (
    CATEGORY,
    FaceModels,
    Faceset,
    ReferenceBank,
    bool_input,
    combo_input,
    float_input,
    int_input,
    model_folders,
    node_errors,
    progress_callback,
)
from ._server import panel_report_csim
from ._validation import FDTANode, validate

_CAT = f"{CATEGORY}/faces"


def _packs() -> list[str]:
    try:
        packs = list_packs(model_folders("insightface"))
    except Exception:  # noqa: BLE001 - a broken folder must not hide the node; load reports it
        packs = []
    # Offer buffalo_l even when absent so that running the node says where to put it.
    return packs or ["buffalo_l"]


def _check_pack(pack: str) -> None:
    """The pack folder exists and holds ONNX files (what load_face_pack needs first)."""
    candidates = pack_dirs(model_folders("insightface"), str(pack))
    if not any(d.is_dir() and any(d.glob("*.onnx")) for d in candidates):
        raise ModelNotFoundError(
            f"face model pack '{pack}'",
            searched=candidates,
            expected=[DEFAULT_FILES[r] for r in ("detector", "recognizer", "genderage")],
            where="pack",
            fix=f"put the pack's .onnx files in models/insightface/models/{pack}/ "
            "(insightface model weights are for non-commercial research only).",
        )


class FDTAFaceModelLoader(FDTANode):
    @classmethod
    def MODEL_RESOLVERS(cls) -> dict:
        return {"pack": _check_pack}

    @classmethod
    def define_schema(cls) -> io.Schema:
        packs = _packs()
        return io.Schema(
            node_id="FDTAFaceModelLoader",
            display_name="FDTA Face Model Loader",
            category=_CAT,
            description=(
                "Loads an insightface model pack (SCRFD detector, ArcFace recogniser, gender/age) from "
                "models/insightface/models/<pack>/ (extra_model_paths.yaml 'insightface' entries included). "
                "insightface weights are licensed for non-commercial research only."
            ),
            inputs=[
                combo_input(
                    "pack",
                    packs,
                    "buffalo_l" if "buffalo_l" in packs else packs[0],
                    "Pack folder under models/insightface/models/ (e.g. buffalo_l: det_10g.onnx, "
                    "w600k_r50.onnx, genderage.onnx).",
                ),
                combo_input(
                    "provider",
                    list(PROVIDER_CHOICES),
                    "auto",
                    "ONNX execution provider. auto = CUDA when onnxruntime-gpu offers it, else CPU. "
                    "An unavailable provider falls back to CPU with a warning in the log.",
                ),
                int_input(
                    "det_size",
                    640,
                    160,
                    1280,
                    "Detector input size (square, multiple of 32); 640 suits photos, smaller is faster.",
                    step=32,
                ),
                float_input("det_threshold", 0.5, 0.05, 0.99, 0.01, "Minimum detection score for a face."),
            ],
            outputs=[FaceModels.Output(display_name="face_models", tooltip="The loaded face models.")],
        )

    @classmethod
    def validate_inputs(cls, pack=None, provider=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(cls, pack: str, provider: str, det_size: int, det_threshold: float) -> io.NodeOutput:
        with node_errors("FDTAFaceModelLoader"):
            models = load_face_pack(
                model_folders("insightface"),
                pack,
                providers=provider,
                det_size=int(det_size),
                require=("recognizer",),
                det_threshold=float(det_threshold),
            )
            return io.NodeOutput(models)


class FDTAAlignFaces(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAAlignFaces",
            display_name="FDTA Align Faces",
            category=_CAT,
            description=(
                "Detects the main face of every image (any size), aligns it to the 112x112 ArcFace template and "
                "returns a faceset. Images without a usable face are dropped and listed in the report; the batch "
                "goes on. Images that are already 112x112 are taken as aligned."
            ),
            inputs=[
                io.Image.Input("image", tooltip="Images of any size (grayscale and RGBA are converted)."),
                FaceModels.Input("face_models", tooltip="From FDTA Face Model Loader (needs a detector)."),
                int_input(
                    "min_face_size",
                    32,
                    0,
                    4096,
                    "Drop faces whose box is smaller than this many pixels (shorter side): an upscaled tiny face "
                    "makes a blurry 112x112 crop. 0 keeps every face.",
                ),
                bool_input(
                    "assume_aligned_112", True, "Take 112x112 inputs as already aligned (no detection)."
                ),
                int_input(
                    "identity_start",
                    0,
                    0,
                    2**31 - 1,
                    "Identity label of the first image; each image is its own identity.",
                ),
                bool_input(
                    "one_identity",
                    False,
                    "Give every image the same identity (identity_start) instead of one each.",
                ),
            ],
            outputs=[
                Faceset.Output(
                    display_name="faceset",
                    tooltip="Aligned faces; the first of each identity is its source face.",
                ),
                io.Image.Output(display_name="aligned", tooltip="The aligned 112x112 faces, for preview."),
                io.String.Output(
                    display_name="report", tooltip="How many faces were aligned and why images were dropped."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, min_face_size=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        image,
        face_models,
        min_face_size: int,
        assume_aligned_112: bool,
        identity_start: int,
        one_identity: bool,
    ) -> io.NodeOutput:
        with node_errors("FDTAAlignFaces"):
            clock = StageClock()
            arr = image_to_uint8(image, where="FDTAAlignFaces.image")
            res = face_models.align_batch(
                arr,
                min_face_size=float(min_face_size),
                assume_aligned=bool(assume_aligned_112),
                progress=progress_callback(len(arr)),
            )
            n = len(arr)
            labels = np.full(n, identity_start, np.int64) if one_identity else identity_start + np.arange(n)
            fs = res.to_faceset(labels)
            clock.stamp(fs, None, "align", "FDTAAlignFaces", n)
            return io.NodeOutput(fs, faceset_to_image(fs), res.report())


class FDTACSIMFilter(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTACSIMFilter",
            display_name="FDTA CSIM Filter",
            category=_CAT,
            description=(
                "Keeps the faces whose ArcFace cosine similarity (CSIM) to their identity's reference (the source "
                "face, or the identity's mean embedding) reaches the threshold, writes CSIM into provenance, and "
                "shows the evidence: a contact sheet (source, then each face with its CSIM; rejected ones crossed "
                "out) and a histogram."
            ),
            inputs=[
                Faceset.Input(
                    "faceset", tooltip="Styled faces with their source faces (e.g. from the STG mixer)."
                ),
                FaceModels.Input(
                    "face_models", tooltip="From FDTA Face Model Loader (needs the recogniser)."
                ),
                float_input(
                    "threshold",
                    0.3,
                    -1.0,
                    1.0,
                    0.01,
                    "Keep faces with CSIM >= this. Styled images of one identity typically reach 0.5-0.65; "
                    "DCFace counts cosine > 0.3 as the same identity.",
                ),
                combo_input(
                    "reference",
                    list(REFERENCES),
                    "source",
                    "source: compare with the identity's source face; mean: with the mean embedding of its images.",
                ),
                int_input(
                    "min_images_per_identity",
                    0,
                    0,
                    100000,
                    "Drop an identity whole when fewer of its images pass (0 = never).",
                ),
                int_input("batch_size", 32, 1, 1024, "Faces per ArcFace batch (memory vs speed)."),
                int_input(
                    "sheet_identities", 8, 1, 256, "How many identities (rows) the contact sheet shows."
                ),
                float_input(
                    "leak_threshold",
                    0.3,
                    -1.0,
                    1.0,
                    0.01,
                    "With a reference bank: drop a styled face whose CSIM to its real reference subject "
                    "reaches this (or its CSIM to the source): the real person's identity leaked in.",
                    optional=True,
                ),
                ReferenceBank.Input(
                    "reference_bank",
                    optional=True,
                    tooltip="The STG reference bank: every face's CSIM to its reference subject is recorded and "
                    "leaked faces are dropped (counted in stats, sheet and provenance).",
                ),
            ],
            outputs=[
                Faceset.Output(
                    display_name="kept", tooltip="The faces that passed, CSIM in their provenance."
                ),
                io.Image.Output(
                    display_name="contact_sheet",
                    tooltip="Source face, then each face with its CSIM; rejected crossed out.",
                ),
                io.String.Output(
                    display_name="stats", tooltip="Counts, CSIM mean/spread and a text histogram."
                ),
                io.Image.Output(
                    display_name="histogram", tooltip="CSIM histogram with the threshold in red."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, reference=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        faceset,
        face_models,
        threshold: float,
        reference: str,
        min_images_per_identity: int,
        batch_size: int,
        sheet_identities: int,
        leak_threshold: float = 0.3,
        reference_bank=None,
    ) -> io.NodeOutput:
        with node_errors("FDTACSIMFilter"):
            clock = StageClock()
            subjects = None
            if reference_bank is not None and len(reference_bank):
                # only the subjects this faceset was styled after: the bank may be an MS1M-size index
                used = {
                    p.extra.get("stg_reference_subject")
                    for p in faceset.provenance
                    if isinstance(p.extra, dict)
                }
                subjects = bank_subject_embeddings(
                    reference_bank,
                    lambda x: face_models.embed(x, batch_size=int(batch_size)),
                    names={str(u) for u in used if u is not None},
                    batch_size=int(batch_size),
                )
            kept, stats = csim_filter(
                faceset,
                face_models,
                float(threshold),
                reference,
                int(min_images_per_identity),
                batch_size=int(batch_size),
                progress=progress_callback(len(faceset)),
                reference_subjects=subjects,
                leak_threshold=float(leak_threshold),
            )
            sheet = contact_sheet(faceset, stats, max_identities=int(sheet_identities))
            hist = histogram_image(stats.csim, float(threshold))
            clock.stamp(kept, faceset, "csim", "FDTACSIMFilter", len(faceset))
            panel_report_csim(stats, sheet)
            return io.NodeOutput(kept, uint8_to_image(sheet), stats.to_text(), uint8_to_image(hist))


NODES = [FDTAFaceModelLoader, FDTAAlignFaces, FDTACSIMFilter]
