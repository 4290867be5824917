"""Dataset node: write a faceset as one committed chunk of an insightface-layout data set."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io, ui

from ..fdta_core.dataset import DatasetChunk, chunk_range_of, write_faceset
from ..fdta_core.errors import InputError
from ..fdta_core.faceset import FaceSet
from ..fdta_core.fsutil import resolve_inside
from ._common import CATEGORY, Dataset, Faceset, node_errors, output_roots, progress_callback


class FDTADatasetWriter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTADatasetWriter",
            display_name="FDTA Dataset Writer",
            category=f"{CATEGORY}/dataset",
            description=(
                "Writes the faceset as one chunk (an identity range) of a RecordIO data set in the layout "
                "insightface's arcface_torch trains from: JPEG quality 95, a SQLite provenance manifest per "
                "image, committed atomically (a cancelled or crashed run leaves no half chunk; writing the same "
                "range again replaces it). Join chunks with `fdta rec merge OUT DATASET`."
            ),
            is_output_node=True,
            inputs=[
                Faceset.Input(
                    "faceset", tooltip="Aligned faces with identity labels and provenance to write."
                ),
                io.String.Input(
                    "output_name",
                    default="fdta/dataset",
                    tooltip=(
                        "Dataset folder, relative to ComfyUI's output folder (absolute paths must lie inside it). "
                        "Chunks are written to <folder>/chunks/<start>-<end>/."
                    ),
                ),
                io.Int.Input(
                    "identity_start",
                    default=-1,
                    min=-1,
                    max=(1 << 24) - 1,
                    tooltip="First identity id of this chunk; -1 takes the smallest label in the faceset.",
                ),
                io.Int.Input(
                    "identity_count",
                    default=0,
                    min=0,
                    max=1 << 24,
                    tooltip="Identities in this chunk (use the plan's identity_count); 0 covers up to the largest label.",
                ),
            ],
            outputs=[
                Dataset.Output(
                    display_name="dataset",
                    tooltip="The written chunk (its folder holds train.rec) and its data set, for the trainer.",
                ),
            ],
        )

    @classmethod
    def execute(cls, faceset, output_name: str, identity_start: int, identity_count: int) -> io.NodeOutput:
        with node_errors("FDTADatasetWriter"):
            if not isinstance(faceset, FaceSet):
                raise InputError(
                    f"expected an FDTA_FACESET, got {type(faceset).__name__}",
                    where="faceset",
                    fix="connect the faceset output of an FDTA node.",
                )
            root = resolve_inside(output_name, output_roots(), where="output_name")
            start, end = chunk_range_of(
                faceset, identity_start if identity_start >= 0 else None, identity_count or None
            )
            info = write_faceset(
                faceset,
                root,
                start=start,
                count=end - start,
                progress=progress_callback(len(faceset)),
            )
        result = DatasetChunk(dataset=str(root), chunk=info)
        text = (
            f"chunk {info.name}: {info.images} images of {info.classes} identities "
            f"(identities {info.start}..{info.end - 1}) written to {Path(info.path)} in {info.seconds:.1f}s"
        )
        return io.NodeOutput(result, ui=ui.PreviewText(text))


NODES = [FDTADatasetWriter]
