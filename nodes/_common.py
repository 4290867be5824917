"""Glue shared by every FDTA node module: custom socket types, model folders, errors, progress.

This is the only place (with the node modules) that imports ComfyUI; ``fdta_core`` never does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import folder_paths
from comfy_api.latest import io

from ..fdta_core.errors import FDTAError, InputError, ModelNotFoundError
from ..fdta_core.models_catalog import FOLDERS
from ..fdta_core.plan import IdentityPlan as PlanRecord
from ..fdta_core.seeds import SEED_MAX

T = TypeVar("T")

log = logging.getLogger("FDTA")

# ---------------------------------------------------------------------------- socket types
#: Aligned 112x112 faces + labels + provenance + source faces (``fdta_core.faceset.FaceSet``).
Faceset = io.Custom("FDTA_FACESET")
#: Identities, attributes and prompts of one chunk (``fdta_core.prompts`` plan).
IdentityPlan = io.Custom("FDTA_IDENTITY_PLAN")


def as_plan(plan: Any) -> PlanRecord:
    """The plan a ``FDTA_IDENTITY_PLAN`` socket carries (a dict when it came through ComfyUI's cache or
    the API), or a clear error naming the socket."""
    if isinstance(plan, PlanRecord):
        return plan
    if isinstance(plan, dict):
        return PlanRecord.from_dict(plan)
    raise InputError(
        f"expected an identity plan, got {type(plan).__name__}",
        where="plan",
        fix="connect the plan output of FDTAAttributeSpec or FDTAAttributePrompt.",
    )


#: Detector / ArcFace / gender-age models of one insightface pack.
FaceModels = io.Custom("FDTA_FACE_MODELS")
#: STG (DCFace mixer) model.
STGModel = io.Custom("FDTA_STG_MODEL")
#: Real reference faces that give styles to the STG mixer.
ReferenceBank = io.Custom("FDTA_REFERENCE_BANK")
#: SAM age model.
AgeModel = io.Custom("FDTA_AGE_MODEL")
#: Advanced ACG settings (``fdta_core.acg.ACGOptions``) from FDTAACGOptions.
ACGOptionsSocket = io.Custom("FDTA_ACG_OPTIONS")
#: A written dataset (folder with train.rec / train.idx / property / manifest).
Dataset = io.Custom("FDTA_DATASET")

CATEGORY = "FDTA"


# ---------------------------------------------------------------------------- the widget vocabulary
# One concept, one widget: the same name, range, default and tooltip style on every node. Tooltips are
# sentences (capital first, full stop last): :func:`tip` makes them so.


def tip(text: str) -> str:
    """A tooltip in the pack's style: a sentence with a capital first letter and a full stop."""
    text = " ".join(str(text).split())
    if not text:
        return text
    if not re.match(r"^[a-z0-9_]+( mode)?:", text):  # "none: ..." names a choice: keep its case
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?)" else text + "."


def int_input(name: str, default: int, lo: int, hi: int, tooltip: str, **kw: Any) -> io.Int.Input:
    return io.Int.Input(name, default=default, min=lo, max=hi, tooltip=tip(tooltip), **kw)


def float_input(
    name: str, default: float, lo: float, hi: float, step: float, tooltip: str, **kw: Any
) -> io.Float.Input:
    return io.Float.Input(name, default=default, min=lo, max=hi, step=step, tooltip=tip(tooltip), **kw)


def combo_input(name: str, options: Any, default: str | None, tooltip: str, **kw: Any) -> io.Combo.Input:
    options = list(options)
    return io.Combo.Input(name, options=options, default=default, tooltip=tip(tooltip), **kw)


def bool_input(name: str, default: bool, tooltip: str, **kw: Any) -> io.Boolean.Input:
    return io.Boolean.Input(name, default=default, tooltip=tip(tooltip), **kw)


def seed_input(tooltip: str) -> io.Int.Input:
    """The one seed widget of every FDTA node: 0..SEED_MAX (a range ComfyUI's own seed widgets accept
    too, so one run seed passes every node), never randomised by ComfyUI after a run."""
    return io.Int.Input(
        "seed", default=0, min=0, max=SEED_MAX, control_after_generate=False, tooltip=tip(tooltip)
    )


#: Weight and compute precision choices of every FDTA model (``precision`` on every node that has one).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def precision_input(auto: str = "fp16 where ComfyUI uses it") -> io.Combo.Input:
    """The one precision widget (never ``dtype``): GPU precision, fp32 on the CPU."""
    return combo_input(
        "precision", PRECISIONS, "auto", f"Precision on a GPU (auto: {auto}); the CPU always computes in fp32"
    )


_DEVICE_TIPS = {
    "auto": "auto: ComfyUI's device (the GPU when there is one)",
    "cuda": "cuda: the GPU, failing clearly when none is visible",
    "cpu": "cpu: always the CPU (slow)",
}


def device_input(
    options: tuple[str, ...] = ("auto", "cpu"), what: str = "Where the model runs"
) -> io.Combo.Input:
    """The one device widget: ``auto`` first and default, each choice explained the same way."""
    return combo_input("device", options, "auto", f"{what}. " + "; ".join(_DEVICE_TIPS[o] for o in options))


def batch_size_input(default: int, hi: int, what: str, *, lo: int = 1) -> io.Int.Input:
    """The one batch-size widget: how many items go through together; it changes speed and memory,
    never the results (every item has its own seed)."""
    auto = " (0: as many as free memory allows)" if lo == 0 else ""
    return int_input(
        "batch_size",
        default,
        lo,
        hi,
        f"{what} processed together{auto}; changes speed and memory, not results",
    )


def model_file_input(files: ModelFiles, tooltip: str, name: str = "model_name") -> io.Combo.Input:
    """The one model-file widget of a loader: ``model_name``, the files of ``files.folder`` (with the
    folders of extra_model_paths.yaml)."""
    return combo_input(
        name,
        files.names(),
        None,
        f"{tooltip} in models/{MODEL_FOLDERS.get(files.folder, files.folder)} (or a folder added as "
        f"{files.folder} in extra_model_paths.yaml)",
    )


# ---------------------------------------------------------------------------- model folders
#: FDTA's own ComfyUI folder names -> default sub-folder of ``models/`` (DESIGN section 4); the one table
#: is ``fdta_core.models_catalog.FOLDERS`` (``fdta models`` reads it too).
MODEL_FOLDERS: dict[str, str] = {
    name: os.path.join(*FOLDERS[name].split("/"))
    for name in ("insightface", "fdta_stg", "fdta_age", "fdta_fr")
}


def register_model_folders() -> None:
    """Register FDTA's model folders without clobbering ``extra_model_paths.yaml`` entries.

    ComfyUI applies ``extra_model_paths.yaml`` before custom nodes load, so a folder may already exist;
    the default path is added to it rather than replacing it.
    """
    for name, sub in MODEL_FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, sub)
        folder_paths.add_model_folder_path(name, default, is_default=True)


def model_folders(name: str) -> list[str]:
    """Every folder registered under ``name`` (defaults and ``extra_model_paths.yaml`` entries)."""
    try:
        return folder_paths.get_folder_paths(name)
    except KeyError:
        register_model_folders()
        return folder_paths.get_folder_paths(name)


@dataclass(frozen=True)
class ModelFiles:
    """A loader node's model files: which registered folder, which file types, and what a missing
    model's error says (the expected names and how to get them)."""

    folder: str
    extensions: tuple[str, ...]
    what: str
    expected: tuple[str, ...]
    fix: str

    def names(self) -> list[str]:
        """The loader's combo options: files of these types in every folder registered under ``folder``."""
        try:
            names = folder_paths.get_filename_list(self.folder)
        except KeyError:
            names = []
        return sorted(n for n in names if n.lower().endswith(self.extensions))

    def resolve(self, name: str, *, where: str) -> str:
        """The full path of ``name``, or a :class:`ModelNotFoundError` naming every folder searched."""
        path = folder_paths.get_full_path(self.folder, name) if name else None
        if not path or not os.path.isfile(path):
            raise ModelNotFoundError(
                f"{self.what} '{name}'" if name else f"a {self.what}",
                searched=model_folders(self.folder),
                expected=self.expected,
                where=where,
                fix=self.fix,
            )
        return path


def patch_module(module: Any, *, cpu: bool = False) -> Any:
    """Wrap a torch module in ComfyUI's ModelPatcher on ComfyUI's device (``cpu``: pinned to the CPU),
    so ComfyUI's memory manager loads and offloads it with everything else."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch

    load_device = torch.device("cpu") if cpu else mm.get_torch_device()
    offload = torch.device("cpu") if cpu else mm.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload)


def load_patched(
    files: ModelFiles, name: str, *, where: str, load: Callable[[str, Any], tuple[Any, T]], cpu: bool = False
) -> tuple[Any, str, T]:
    """The one loader path: resolve ``name`` (or raise naming the folders searched), build the torch
    module with ``load(path, load_device) -> (module, extra)`` and wrap it with :func:`patch_module`.
    Returns ``(patcher, path, extra)``."""
    import comfy.model_management as mm
    import torch

    path = files.resolve(name, where=where)
    module, extra = load(path, torch.device("cpu") if cpu else mm.get_torch_device())
    return patch_module(module, cpu=cpu), path, extra


def output_roots() -> list[str]:
    """Folders a node may write into: ComfyUI's output folder first."""
    return [folder_paths.get_output_directory()]


# ---------------------------------------------------------------------------- errors and progress
@contextlib.contextmanager
def node_errors(node_id: str) -> Iterator[None]:
    """Prefix FDTA errors raised inside a node with the node id, so the UI says which node failed.

    Only :class:`FDTAError` is touched; everything else (ComfyUI's interrupt in particular) passes
    through unchanged.
    """
    try:
        yield
    except FDTAError as exc:
        raise exc.at(node_id) from None


def progress_callback(total: int, node_id: str | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for ``fdta_core`` loops.

    It moves ComfyUI's progress bar and, through the bar's hook, raises ComfyUI's interrupt exception
    when the user cancels; ``fdta_core`` never catches it. It also feeds the frontend's run panel
    (a throttled ``fdta.progress`` event naming the running node, see ``nodes/_server.py``).
    """
    import comfy.model_management
    import comfy.utils

    from ._server import stage_progress

    bar = comfy.utils.ProgressBar(max(int(total), 1), node_id=node_id)

    def progress(done: int, total_now: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(int(done), int(total_now) if total_now else None)
        stage_progress(int(done), int(total_now or total))

    return progress
