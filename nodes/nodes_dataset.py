"""Dataset node: write a faceset as one committed chunk of an insightface-layout data set."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io, ui

from ..fdta_core.dataset import DatasetChunk, chunk_range_of, merge, write_faceset
from ..fdta_core.dataset.merge import MergedDataset
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


def _dataset_root(dataset, where: str) -> str:
    """Where a connected FDTA_DATASET lives: the data-set root (all its chunks), or a merged folder."""
    if isinstance(dataset, str | Path):
        return str(dataset)
    if isinstance(dataset, DatasetChunk | MergedDataset):
        return dataset.train_folder()
    raise InputError(
        f"expected an FDTA_DATASET, got {type(dataset).__name__}",
        where=where,
        fix="connect the dataset output of FDTADatasetWriter or FDTADatasetMerge.",
    )


class FDTADatasetMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTADatasetMerge",
            display_name="FDTA Dataset Merge",
            category=f"{CATEGORY}/dataset",
            description=(
                "Joins data sets into one train.rec (insightface layout) with its merged provenance manifest, "
                "written atomically. A data set written by FDTADatasetWriter stands for all its committed "
                "chunks. renumber combines independent sets whose identity ids overlap (e.g. Syn-MS1M and "
                "Syn-MPIE): labels run over the inputs in order, each set's identities kept apart. Same as "
                "`fdta rec merge OUT PATH... [--renumber]`."
            ),
            is_output_node=True,
            inputs=[
                io.String.Input(
                    "output_name",
                    default="fdta/merged",
                    tooltip="merged folder, relative to ComfyUI's output folder (an earlier merge there is "
                    "replaced; a folder holding anything else is refused)",
                ),
                io.Boolean.Input(
                    "renumber",
                    default=False,
                    tooltip="the inputs are independent data sets (their identity ids may overlap): number "
                    "labels over the inputs in order. Off: ids must be unique over all inputs and set the order.",
                ),
                io.String.Input(
                    "more_inputs",
                    default="",
                    multiline=True,
                    tooltip="further data-set, chunk or merged folders, one per line (relative to the output "
                    "folder), after the connected ones",
                ),
                Dataset.Input("dataset", optional=True, tooltip="first data set (all its committed chunks)"),
                Dataset.Input("dataset_2", optional=True, tooltip="second data set"),
            ],
            outputs=[
                Dataset.Output(
                    display_name="dataset",
                    tooltip="the merged set (its folder holds one train.rec), for the trainer",
                ),
            ],
        )

    @classmethod
    def execute(cls, output_name: str, renumber: bool, more_inputs: str, dataset=None, dataset_2=None):
        with node_errors("FDTADatasetMerge"):
            paths = [
                _dataset_root(d, w)
                for d, w in ((dataset, "dataset"), (dataset_2, "dataset_2"))
                if d is not None
            ]
            paths += [
                str(resolve_inside(line.strip(), output_roots(), where="more_inputs"))
                for line in (more_inputs or "").splitlines()
                if line.strip()
            ]
            if not paths:
                raise InputError(
                    "nothing to merge",
                    where="dataset",
                    fix="connect a dataset or list data-set folders in more_inputs.",
                )
            out = resolve_inside(output_name, output_roots(), where="output_name")
            if any(Path(p).resolve() == out for p in paths):
                raise InputError(
                    f"{out} is an input and the output",
                    where="output_name",
                    fix="choose a new output folder.",
                )
            summary = merge(out, paths, renumber=bool(renumber), progress=progress_callback(1))
        result = MergedDataset(str(out), int(summary["images"]), int(summary["classes"]), bool(renumber))
        text = (
            f"merged {len(paths)} input(s) ({len(summary['sources'])} chunk/record folder(s)) into {out}: "
            f"{summary['images']} images, {summary['classes']} identities"
        )
        return io.NodeOutput(result, ui=ui.PreviewText(text))


NODES = [FDTADatasetWriter, FDTADatasetMerge]
