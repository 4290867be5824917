"""Dataset node: write a faceset as one committed chunk of an insightface-layout data set."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io, ui

from ..fdta_core.dataset import DatasetChunk, chunk_range_of, merge, write_faceset
from ..fdta_core.dataset.merge import MergedDataset
from ..fdta_core.dataset.writer import MAX_IDENTITIES, check_chunk_slot, missing_text, planned_range
from ..fdta_core.errors import InputError
from ..fdta_core.faceset import ChunkStamp, FaceSet
from ..fdta_core.fsutil import resolve_inside
from ..fdta_core.prompts.spec import parse_spec
from ..fdta_core.runner.repair import MISSING_KEY
from ..fdta_core.timing import STAGES_UI_KEY, format_stage_table, stage_table
from ._common import (
    CATEGORY,
    Dataset,
    Faceset,
    bool_input,
    int_input,
    node_errors,
    output_roots,
    progress_callback,
)
from ._server import panel_report_chunk
from ._validation import FDTANode, PromptGraph, check_widgets, validate


def _planned_stamp(graph: PromptGraph | None) -> ChunkStamp | None:
    """The chunk the one FDTAAttributeSpec upstream of the writer plans (None when it cannot be known
    before running: no spec, several, or its range/seed/spec linked from other nodes)."""
    if graph is None:
        return None
    specs = [n for n in graph.upstream() if graph.class_of(n) == "FDTAAttributeSpec"]
    if len(specs) != 1:
        return None
    v = graph.literals(specs[0])
    try:
        start, count, seed = int(v["identity_start"]), int(v["identity_count"]), int(v["seed"])
        spec_hash = parse_spec(str(v["spec"]), source="spec").hash
        return ChunkStamp(start, start + count, spec_hash, seed)
    except (KeyError, TypeError, ValueError):  # the spec node reports its own bad values
        return None


def check_writer(values: dict, graph: PromptGraph | None) -> None:
    """What the writer would refuse after the whole pipeline, refused at queue time: the output name,
    a range override that disagrees with the plan, a range beyond 2^24, and a chunk that would overlap
    or silently replace one on disk."""
    name = values.get("output_name")
    root = resolve_inside(name, output_roots(), where="output_name") if isinstance(name, str) else None
    start, count = values.get("identity_start"), values.get("identity_count")
    start = -1 if start is None else int(start)
    count = 0 if count is None else int(count)
    overwrite = bool(values.get("overwrite", False))
    stamp = _planned_stamp(graph)
    if stamp is not None:
        s, e = planned_range(stamp, start, count)
    elif start >= 0 and count > 0:
        s, e = start, start + count
    else:
        return
    if e > MAX_IDENTITIES:
        raise InputError(
            f"identity {e - 1} is beyond 2^24: float32 labels would no longer be exact",
            where="identity_start",
            fix="keep identity ids below 16777216 (split the data set into several output folders).",
        )
    if root is not None:
        check_chunk_slot(root, s, e, stamp=stamp, overwrite=overwrite)


class FDTADatasetWriter(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTADatasetWriter",
            display_name="FDTA Dataset Writer",
            category=f"{CATEGORY}/dataset",
            description=(
                "Writes the faceset as one chunk (an identity range) of a RecordIO data set in the layout "
                "insightface's arcface_torch trains from: JPEG quality 95, a SQLite provenance manifest per "
                "image, committed atomically (a cancelled or crashed run leaves no half chunk). The chunk's "
                "identity range comes with the faceset (planned by FDTAAttributeSpec), so chunks never collide; "
                "a chunk already on disk is replaced only by the same run (same spec and seed, e.g. after a "
                "crash) or with overwrite on, and every replacement is recorded. Join chunks with "
                "`fdta rec merge OUT DATASET`."
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
                int_input(
                    "identity_start",
                    -1,
                    -1,
                    (1 << 24) - 1,
                    "Override of the chunk's first identity. Leave at -1: the range comes with the "
                    "faceset from FDTAAttributeSpec. Only for facesets built by hand (then -1 takes the "
                    "smallest label); on a planned faceset it must equal the plan.",
                    optional=True,
                ),
                int_input(
                    "identity_count",
                    0,
                    0,
                    1 << 24,
                    "Override of the chunk's identity count. Leave at 0: the range comes with the "
                    "faceset (for hand-built facesets 0 covers up to the largest label).",
                    optional=True,
                ),
                bool_input(
                    "overwrite",
                    False,
                    "Replace a chunk of the same range that another run wrote (its images are lost; "
                    "the replacement is recorded). Off: such a write is refused at queue time. A re-run of "
                    "the same run (same spec and seed) may always replace its own chunk.",
                    optional=True,
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
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks of literal widget values (nodes/_validation.py)."""
        check_widgets(cls, values)
        check_writer(values, graph)

    @classmethod
    def validate_inputs(
        cls, output_name=None, identity_start=None, identity_count=None, overwrite=None
    ) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        faceset,
        output_name: str,
        identity_start: int = -1,
        identity_count: int = 0,
        overwrite: bool = False,
    ) -> io.NodeOutput:
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
                overwrite=bool(overwrite),
                progress=progress_callback(len(faceset)),
                node="FDTADatasetWriter",
            )
        result = DatasetChunk(dataset=str(root), chunk=info)
        panel_report_chunk(str(root), info)
        text = (
            f"chunk {info.name}: {info.images} images of {info.classes} identities "
            f"(identities {info.start}..{info.end - 1}) written to {Path(info.path)} in {info.seconds:.1f}s"
        )
        if info.replaced:
            r = info.replaced[-1]
            text += (
                f"\nREPLACED the earlier copy of chunk {info.name} ({r['images']} images, spec "
                f"{r['spec_hash'] or '?'}, run seed {r['run_seed']}; {r['reason']}); recorded in "
                f"{Path(info.path) / 'chunk.json'} and dataset.json"
            )
        if info.repairs:
            r = info.repairs[-1]
            text += f"\nrepair round {r['round']}: added identities {r['added'] or 'none'} of {r['tried']}"
        text += missing_text(info)
        text += "\n" + format_stage_table(stage_table(info.stages))
        missing = [int(m["identity"]) for m in info.missing]
        # the stage timings also go to the prompt's history: `fdta run` sums them into its table
        return io.NodeOutput(result, ui={"text": [text], MISSING_KEY: missing, STAGES_UI_KEY: info.stages})


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


class FDTADatasetMerge(FDTANode):
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
                    tooltip="Merged folder, relative to ComfyUI's output folder (an earlier merge there is "
                    "replaced; a folder holding anything else is refused)",
                ),
                bool_input(
                    "renumber",
                    False,
                    "The inputs are independent data sets (their identity ids may overlap): number "
                    "labels over the inputs in order. Off: ids must be unique over all inputs and set the order.",
                ),
                io.String.Input(
                    "more_inputs",
                    default="",
                    multiline=True,
                    tooltip="Further data-set, chunk or merged folders, one per line (relative to the output "
                    "folder), after the connected ones.",
                ),
                Dataset.Input("dataset", optional=True, tooltip="First data set (all its committed chunks)"),
                Dataset.Input("dataset_2", optional=True, tooltip="Second data set."),
            ],
            outputs=[
                Dataset.Output(
                    display_name="dataset",
                    tooltip="The merged set (its folder holds one train.rec), for the trainer.",
                ),
            ],
        )

    @classmethod
    def check_inputs(cls, values: dict, graph: PromptGraph | None = None) -> None:
        """Queue-time checks: the output folder and the extra inputs stay inside ComfyUI's output folder."""
        check_widgets(cls, values)
        if isinstance(values.get("output_name"), str):
            resolve_inside(values["output_name"], output_roots(), where="output_name")
        for line in str(values.get("more_inputs") or "").splitlines():
            if line.strip():
                resolve_inside(line.strip(), output_roots(), where="more_inputs")

    @classmethod
    def validate_inputs(cls, output_name=None, more_inputs=None) -> bool | str:
        return validate(cls, locals())

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
