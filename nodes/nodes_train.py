"""Training and evaluation nodes: start/inspect/stop a training run, and score a model on .bin benchmarks.

Training runs in a detached ``torchrun`` process (it outlives the prompt, and it would block ComfyUI for
days otherwise); the node only writes the recipe into a run folder under ComfyUI's output directory,
starts the process and reports its state. Queue the node again with ``action=status`` to refresh.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from comfy_api.latest import io, ui

from ..fdta_core.dataset.merge import MergedDataset
from ..fdta_core.dataset.writer import DatasetChunk
from ..fdta_core.errors import InputError
from ..fdta_core.fsutil import resolve_inside
from ..fdta_core.train.recipes import PRESETS
from ._common import (
    CATEGORY,
    Dataset,
    combo_input,
    device_input,
    int_input,
    model_folders,
    node_errors,
    output_roots,
    patch_module,
    progress_callback,
)
from ._validation import FDTANode, validate

AREA = f"{CATEGORY}/training"


def _dataset_path(dataset, dataset_dir: str) -> str:
    """The folder to train on: from a connected FDTA_DATASET or the typed path.

    FDTADatasetWriter hands on a :class:`DatasetChunk`: its data-set root is trained on (its merged
    ``train.rec``, else all its committed chunks, labelled as merge would), never the one chunk this
    prompt wrote. FDTADatasetMerge hands on a :class:`MergedDataset` (the merged folder).
    """
    if dataset is not None:
        if isinstance(dataset, str | os.PathLike):
            return str(dataset)
        if isinstance(dataset, DatasetChunk | MergedDataset):
            return dataset.train_folder()
        raise InputError(
            f"expected an FDTA_DATASET, got {type(dataset).__name__}",
            where="dataset",
            fix="connect the dataset output of FDTADatasetWriter or FDTADatasetMerge, or type the folder in dataset_dir.",
        )
    if not dataset_dir.strip():
        raise InputError(
            "no training data: connect a dataset or type its folder",
            where="dataset_dir",
            fix="give the folder holding train.rec/train.idx (relative names are under ComfyUI's output folder).",
        )
    p = Path(os.path.expanduser(dataset_dir.strip()))
    return str(p if p.is_absolute() else Path(output_roots()[0]) / p)


def _find_file(name: str, folders: list[str], where: str) -> str:
    p = Path(os.path.expanduser(name.strip()))
    if p.is_absolute():
        if not p.is_file():
            raise InputError(f"{p} not found", where=where)
        return str(p)
    for folder in folders:
        if (Path(folder) / p).is_file():
            return str(Path(folder) / p)
    raise InputError(
        f"'{name}' not found in {', '.join(folders)}",
        where=where,
        fix="give an absolute path or put the file there.",
    )


def _run_folder(name: str) -> Path | None:
    """``name`` as a training run folder (absolute, or under the output folder), else ``None``."""
    p = Path(os.path.expanduser(name.strip()))
    for cand in [p] if p.is_absolute() else [Path(r) / p for r in output_roots()]:
        if cand.is_dir() and ((cand / "recipe.json").is_file() or (cand / "model.pt").is_file()):
            return cand
    return None


def _bin_folders() -> list[str]:
    import folder_paths

    return [*output_roots(), folder_paths.get_input_directory()]


def _bins(text: str, where: str) -> list[str]:
    return [_find_file(line, _bin_folders(), where) for line in text.splitlines() if line.strip()]


class FDTATrainerLauncher(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTATrainerLauncher",
            display_name="FDTA Trainer Launcher",
            category=AREA,
            description=(
                "Starts face-recognition training (IResNet + CosFace/ArcFace, arcface_torch recipe) on a written "
                "dataset as a detached torchrun process, in a run folder under ComfyUI's output folder, and "
                "returns at once. Launching into a folder with a checkpoint resumes it. action=status shows the "
                "run's state; action=stop makes it checkpoint and exit."
            ),
            inputs=[
                combo_input(
                    "action",
                    ["start_or_resume", "status", "stop"],
                    "start_or_resume",
                    "Start (or resume) the run, only report its state, or ask it to stop.",
                ),
                io.String.Input(
                    "run_name",
                    default="fdta/train/run1",
                    tooltip="Run folder, relative to ComfyUI's output folder (checkpoints, logs, model.pt)",
                ),
                combo_input(
                    "preset",
                    list(PRESETS),
                    "synthetic",
                    "Recipe preset: synthetic sets of 0.5M-1.2M images, the arcface_torch r50 "
                    "MS1MV3 recipe, or a tiny CPU smoke run.",
                ),
                io.String.Input(
                    "dataset_dir",
                    default="",
                    tooltip="Folder with train.rec/train.idx when no dataset is connected "
                    "(relative to the output folder)",
                ),
                combo_input(
                    "network",
                    ["preset", "r18", "r34", "r50", "r100"],
                    "preset",
                    "IResNet depth (preset: the preset's, r50 for the full recipes)",
                ),
                combo_input(
                    "loss",
                    ["preset", "cosface", "arcface"],
                    "preset",
                    "Margin loss: CosFace (s 64, m 0.4) or ArcFace (s 64, m 0.5)",
                ),
                int_input("epochs", 0, 0, 1000, "Training epochs (0: the preset's)"),
                int_input(
                    "batch_size",
                    0,
                    0,
                    4096,
                    "Images per GPU per step (0: the preset's, 128); lr scales with the global batch.",
                ),
                int_input(
                    "gpus", 1, 1, 64, "Processes (GPUs) on this machine; more than 1 uses torchrun DDP."
                ),
                device_input(("auto", "cuda", "cpu"), "Training device"),
                io.String.Input(
                    "val_bins",
                    default="",
                    multiline=True,
                    tooltip="Verification .bin files, one per line (absolute, or under the output/input "
                    "folder), evaluated every verify_every steps.",
                ),
                io.String.Input(
                    "overrides",
                    default="{}",
                    multiline=True,
                    tooltip='Any other recipe keys as JSON, e.g. {"lr": 0.05, "sample_rate": 0.3}.',
                ),
                Dataset.Input("dataset", optional=True, tooltip="A dataset written by FDTADatasetWriter."),
            ],
            outputs=[
                io.String.Output("run_dir", tooltip="Absolute path of the run folder."),
                io.String.Output(
                    "state", tooltip="The run's state as text (status, step, loss, verification)"
                ),
            ],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> float:
        return time.time()  # the state changes on its own: never serve this node from the cache

    @classmethod
    def validate_inputs(cls, action=None, preset=None, network=None, loss=None, device=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(
        cls,
        action,
        run_name,
        preset,
        dataset_dir,
        network,
        loss,
        epochs,
        batch_size,
        gpus,
        device,
        val_bins,
        overrides,
        dataset=None,
    ) -> io.NodeOutput:
        from ..fdta_core.train import launch
        from ..fdta_core.train.recipes import make_config

        with node_errors("FDTATrainerLauncher"):
            run_dir = resolve_inside(run_name, output_roots(), where="run_name")
            if action == "status":
                state = launch.run_state(run_dir)
            elif action == "stop":
                state = launch.request_stop(run_dir)
            else:
                try:
                    extra = json.loads(overrides or "{}")
                except json.JSONDecodeError as exc:
                    raise InputError(f"not valid JSON ({exc})", where="overrides") from None
                if not isinstance(extra, dict):
                    raise InputError("must be a JSON object", where="overrides")
                chosen = {
                    "data": _dataset_path(dataset, dataset_dir),
                    "output": str(run_dir),
                    "network": None if network == "preset" else network,
                    "loss": None if loss == "preset" else loss,
                    "epochs": epochs or None,
                    "batch_size": batch_size or None,
                    "device": device,
                    "val_bins": _bins(val_bins, "val_bins") or None,
                }
                config = make_config(
                    preset, **{**extra, **{k: v for k, v in chosen.items() if v is not None}}
                )
                run_dir, _ = launch.prepare_run(config)
                state = launch.start_detached(run_dir, launch.Topology(nproc_per_node=int(gpus)))
            text = launch.format_state(state)
        return io.NodeOutput(str(run_dir), text, ui=ui.PreviewText(text))


class FDTAVerify(FDTANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FDTAVerify",
            display_name="FDTA Verify (LFW / CFP-FP / AgeDB ...)",
            category=AREA,
            description=(
                "Verification accuracy of a face-recognition model on .bin benchmarks, with the protocol of "
                "published tables (flip-sum embeddings, 10 folds, best threshold on 9, mean and std)."
            ),
            inputs=[
                io.String.Input(
                    "model",
                    default="",
                    tooltip="model.pt of a run, an arcface_torch backbone.pth, an .onnx, or a run folder "
                    "(connect the launcher's run_dir) (absolute, or in models/fdta/fr or the output folder)",
                ),
                io.String.Input(
                    "bins",
                    default="",
                    multiline=True,
                    tooltip=".bin benchmark files, one per line (absolute, or under the output/input folder)",
                ),
                int_input("batch_size", 64, 1, 1024, "Images per forward pass."),
            ],
            outputs=[
                io.String.Output(
                    "table",
                    tooltip="FDTA Table 1's layout (LFW, CFP-FP, CPLFW, AgeDB, CALFW, average; a .bin goes "
                    "into its column by file name) with the published rows beside this model's, then the "
                    "per-benchmark accuracy (percent, mean and std of 10 folds)",
                ),
                io.String.Output(
                    "json", tooltip="The same as JSON: {benchmark: {accuracy_mean, accuracy_std, pairs}}."
                ),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, batch_size=None) -> bool | str:
        return validate(cls, locals())

    @classmethod
    def execute(cls, model, bins, batch_size) -> io.NodeOutput:
        import comfy.model_management as mm

        from ..fdta_core.eval.models import load_model_embedder
        from ..fdta_core.eval.table import format_paper_table, paper_table
        from ..fdta_core.eval.verification import format_table, verify

        with node_errors("FDTAVerify"):
            if not model.strip():
                raise InputError(
                    "no model given", where="model", fix="give the path of model.pt or an .onnx file."
                )
            run_dir = _run_folder(model)
            if run_dir is not None and not (run_dir / "model.pt").is_file():
                from ..fdta_core.train import launch

                text = (
                    "no model.pt yet: the run has not finished. Queue again when it has "
                    "(the launcher with action=status shows its progress).\n"
                    + launch.format_state(launch.run_state(run_dir))
                )
                return io.NodeOutput(text, "{}", ui=ui.PreviewText(text))
            path = (
                str(run_dir / "model.pt")
                if run_dir is not None
                else _find_file(model, [*model_folders("fdta_fr"), *output_roots()], "model")
            )
            files = _bins(bins, "bins")
            if not files:
                raise InputError(
                    "no .bin files given", where="bins", fix="list lfw.bin, cfp_fp.bin, ... one per line."
                )
            device = mm.get_torch_device()

            def managed(net):  # ComfyUI's model manager places the torch network
                patcher = patch_module(net)
                mm.load_models_gpu([patcher])
                return patcher.model

            embed, size = load_model_embedder(
                path, str(device), providers="CUDA" if device.type == "cuda" else "CPU", prepare=managed
            )
            progress = progress_callback(1)
            results = verify(embed, files, batch_size=int(batch_size), size=size, progress=progress)
            label = Path(path).parent.name if Path(path).name == "model.pt" else Path(path).name
            table = format_paper_table(paper_table(results, label)) + "\n\n" + format_table(results)
            data = json.dumps(
                {
                    r.name: {
                        "accuracy_mean": r.accuracy_mean,
                        "accuracy_std": r.accuracy_std,
                        "pairs": r.pairs,
                    }
                    for r in results
                }
            )
        return io.NodeOutput(table, data, ui=ui.PreviewText(table))


NODES = [FDTATrainerLauncher, FDTAVerify]
