"""Dataset node: write a faceset as one committed chunk of an insightface-layout data set."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io, ui

from ..fdta_core.dataset import chunk_range_of, write_faceset
from ..fdta_core.dataset.writer import MAX_IDENTITIES, check_chunk_slot, planned_range
from ..fdta_core.errors import InputError
from ..fdta_core.faceset import ChunkStamp, FaceSet
from ..fdta_core.fsutil import resolve_inside
from ..fdta_core.prompts.spec import parse_spec
from ._common import CATEGORY, Dataset, Faceset, node_errors, output_roots, progress_callback
from ._validation import PromptGraph, check_widgets, validate


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
                io.Int.Input(
                    "identity_start",
                    default=-1,
                    min=-1,
                    max=(1 << 24) - 1,
                    optional=True,
                    tooltip="Override of the chunk's first identity. Leave at -1: the range comes with the "
                    "faceset from FDTAAttributeSpec. Only for facesets built by hand (then -1 takes the "
                    "smallest label); on a planned faceset it must equal the plan.",
                ),
                io.Int.Input(
                    "identity_count",
                    default=0,
                    min=0,
                    max=1 << 24,
                    optional=True,
                    tooltip="Override of the chunk's identity count. Leave at 0: the range comes with the "
                    "faceset (for hand-built facesets 0 covers up to the largest label).",
                ),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    optional=True,
                    tooltip="Replace a chunk of the same range that another run wrote (its images are lost; "
                    "the replacement is recorded). Off: such a write is refused at queue time. A re-run of "
                    "the same run (same spec and seed) may always replace its own chunk.",
                ),
            ],
            outputs=[
                Dataset.Output(
                    display_name="dataset",
                    tooltip="The written chunk: a dict with 'path' (chunk folder holding train.rec), 'dataset', counts.",
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
            )
        result = {
            "path": info.path,
            "dataset": str(root),
            "chunk": info.name,
            "start": info.start,
            "end": info.end,
            "images": info.images,
            "classes": info.classes,
            "replaced": info.replaced[-1:],
        }
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
        return io.NodeOutput(result, ui=ui.PreviewText(text))


NODES = [FDTADatasetWriter]
