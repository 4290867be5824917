"""The training process: one per GPU (or CPU process) under ``torchrun``, or alone.

Run directory (``config.output``)::

    recipe.json            the recipe as given (written by the launcher / CLI)
    run.json               what the trainer derived: classes, images, world size, steps, effective lr
    train.log              human log (rank 0)
    metrics.jsonl          one JSON object per line: {"event": "train"|"verify"|"checkpoint"|..., ...}
    state.json             status (running/finished/stopped/failed), step, total, ETA, last checkpoint
    checkpoints/step_XXXXXXXX/rank_R.pt, checkpoints/latest.json
    model.pt               backbone weights + arch of the latest checkpoint (weights-only loadable)
    STOP                   create it to make the run checkpoint and exit (the launcher's stop)

Resume is exact: the checkpoint holds the model, the Partial-FC shard, optimizer and scaler state, the
position (epoch, batch) and the torch RNG states; the data order and flips derive from (seed, epoch).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError, DatasetError, InputError, ModelFormatError, ModelNotFoundError
from ..eval.models import torch_embedder
from ..eval.verification import verify
from ..fsutil import atomic_open, atomic_write_text
from ..iresnet import build_backbone
from ..seeds import derive_seed
from .data import (
    EpochBatchSampler,
    dali_available,
    make_dali_loader,
    make_loader,
    open_face_dataset,
    to_model_input,
)
from .losses import MarginSpec
from .partial_fc import PartialFC
from .recipes import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------- small pieces
def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, power: float = 2.0) -> float:
    """Linear warmup from 0, then polynomial decay to 0 at ``total_steps`` (arcface_torch's PolyScheduler)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, max(0.0, (step - warmup_steps) / span))
    return base_lr * (1.0 - frac) ** power


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(config: TrainConfig, local_rank: int) -> torch.device:
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "a GPU was asked for (device=cuda) but torch sees none",
                where="recipe.device",
                fix="use device=cpu or auto, or install a CUDA build of torch and check the driver.",
            )
        if want == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device(want)
    return torch.device("cpu")


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank, local, world)


def _all_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether *any* rank raised ``flag`` (so every rank takes the same decision)."""
    if info.world_size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class RunFiles:
    """Paths and writers of the run directory (only rank 0 writes logs and state)."""

    def __init__(self, root: str | Path, main: bool) -> None:
        self.root = Path(root)
        self.main = main
        self.ckpt = self.root / "checkpoints"
        self.stop_file = self.root / "STOP"
        self.state: dict[str, Any] = {}
        if main:
            self.ckpt.mkdir(parents=True, exist_ok=True)

    def metric(self, event: str, **data: Any) -> None:
        if not self.main:
            return
        rec = {"event": event, "time": time.time(), **data}
        with open(self.root / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def set_state(self, **data: Any) -> None:
        if not self.main:
            return
        self.state.update(data, updated=time.time(), pid=os.getpid())
        atomic_write_text(self.root / "state.json", json.dumps(self.state, indent=1), fsync=False)


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("fdta_core")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


# ---------------------------------------------------------------------------- checkpoints
def latest_checkpoint(run_dir: str | Path) -> dict | None:
    """``checkpoints/latest.json`` of a run (``{"step", "dir", "world_size", ...}``) or None."""
    path = Path(run_dir) / "checkpoints" / "latest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------- the trainer
class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs (or resumes) the training loop."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config.validate()
        self.device = resolve_device(config, int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._threads_before = torch.get_num_threads()
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.info = init_distributed(self.device)
        self.files = RunFiles(config.output, self.info.main)
        self._log_handler = _attach_log_file(self.files.root / "train.log") if self.info.main else None
        self._stop_signal = False
        c = config

        self.dataset = open_face_dataset(c.data, image_size=c.image_size)
        self.num_classes = self.dataset.num_classes
        if c.num_classes and c.num_classes != self.num_classes:
            raise DatasetError(
                f"the recipe says {c.num_classes} classes but {c.data} holds {self.num_classes}",
                where="recipe.num_classes",
                fix="set num_classes to 0 (read from the data) or to the true count.",
            )
        self.use_dali = (
            c.dali != "off"
            and self.device.type == "cuda"
            and self.dataset.kind == "dali"
            and dali_available()
        )
        if c.dali == "on" and not self.use_dali:
            raise ConfigError(
                "dali=on needs NVIDIA DALI installed, a CUDA device and a set in the DALI layout",
                where="recipe.dali",
                fix="use dali=auto or off.",
            )
        self.sampler = EpochBatchSampler(
            len(self.dataset),
            c.batch_size,
            rank=self.info.rank,
            world_size=self.info.world_size,
            seed=c.seed,
            flip=c.flip,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = c.max_steps if c.max_steps > 0 else c.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(c.warmup_epochs * self.steps_per_epoch))
        self.global_batch = c.batch_size * self.info.world_size
        self.base_lr = c.lr * self.global_batch / c.lr_batch if c.lr_batch > 0 else c.lr

        torch.manual_seed(derive_seed(c.seed, "init-backbone"))
        self.backbone = build_backbone(
            c.network,
            num_features=c.embedding_size,
            dropout=c.dropout,
            width=c.width,
            input_size=c.image_size,
            layers=c.layers,
        ).to(self.device)
        torch.manual_seed(derive_seed(c.seed, "init-pfc", self.info.rank))
        self.pfc = PartialFC(
            MarginSpec.named(c.loss, c.scale, c.margin),
            c.embedding_size,
            self.num_classes,
            c.sample_rate,
            self.info.rank,
            self.info.world_size,
        ).to(self.device)
        torch.manual_seed(derive_seed(c.seed, "train", self.info.rank))
        if self.info.world_size > 1:
            with (
                warnings.catch_warnings()
            ):  # broadcast_buffers=False is what we mean (arcface_torch's choice)
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.nn.parallel.DistributedDataParallel(
                    self.backbone,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False,
                    bucket_cap_mb=16,
                )
        else:
            self.model = self.backbone
        self.optimizer = torch.optim.SGD(
            [
                {"params": [p for p in self.backbone.parameters() if p.requires_grad]},
                {"params": self.pfc.parameters()},
            ],
            lr=self.base_lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
        )
        self.amp = c.fp16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._saved_step = -1

    # -------------------------------------------------------------- checkpoints
    def _check_same_data(self) -> None:
        """A data-set folder of chunks can grow between launches; a checkpoint only resumes on the data
        it was trained on (the class layer and the sample order depend on it)."""
        try:
            old = json.loads((self.files.root / "run.json").read_text())
        except (OSError, ValueError):
            return
        was = (old.get("num_classes"), old.get("num_images"))
        now = (self.num_classes, len(self.dataset))
        if None not in was and tuple(was) != now:
            raise DatasetError(
                f"the checkpoint was trained on {was[0]} identities / {was[1]} images, "
                f"{self.config.data} now holds {now[0]} / {now[1]} (chunks added or removed?)",
                where="resume",
                fix="start a new run folder to train on the changed data, or restore the data the run began with.",
            )

    def _resume(self) -> None:
        latest = latest_checkpoint(self.files.root)
        if self.info.world_size > 1:
            # every rank resumes from the step rank 0 sees (node folders may differ without a shared FS)
            box = [latest]
            dist.broadcast_object_list(box, src=0)
            latest = box[0]
        if latest is None:
            return
        self._check_same_data()
        if int(latest["world_size"]) != self.info.world_size:
            raise ConfigError(
                f"the checkpoint at step {latest['step']} was written by {latest['world_size']} processes, "
                f"this run has {self.info.world_size}",
                where="resume",
                fix="resume with the same number of processes (nproc x nnodes) or start a new run directory.",
            )
        path = self.files.root / "checkpoints" / latest["dir"] / f"rank_{self.info.rank}.pt"
        if not path.is_file():
            raise DatasetError(
                f"rank {self.info.rank} has no checkpoint file {path} for step {latest['step']}",
                where="resume",
                fix="multi-node runs need a run folder shared by all nodes (or the same checkpoints copied to each).",
            )
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise DatasetError(f"{path} is not an fdta training checkpoint")
        self.backbone.load_state_dict(state["backbone"])
        self.pfc.load_state_dict(state["pfc"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = (
            int(state["step"]),
            int(state["epoch"]),
            int(state["batch"]),
        )
        _set_rng_state(state["rng"], self.device)
        self._saved_step = self.step
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path.parent,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )
        self.files.metric("resume", step=self.step, epoch=self.epoch, batch=self.batch_in_epoch)

    def save_checkpoint(self) -> None:
        name = f"step_{self.step:08d}"
        folder = self.files.ckpt / name
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch_in_epoch,
            "backbone": self.backbone.state_dict(),
            "arch": self.backbone.arch(),
            "pfc": self.pfc.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": _rng_state(self.device),
        }
        with atomic_open(folder / f"rank_{self.info.rank}.pt") as f:
            torch.save(state, f)
        self._saved_step = self.step
        if self.info.world_size > 1:
            dist.barrier()
        # one writer per node (the same file, atomically, when the folder is shared)
        if self.info.local_rank != 0:
            return
        if self.info.main:
            with atomic_open(self.files.root / "model.pt") as f:
                torch.save(
                    {"backbone": self.backbone.state_dict(), "arch": self.backbone.arch(), "step": self.step},
                    f,
                )
        latest = {"step": self.step, "dir": name, "world_size": self.info.world_size, "time": time.time()}
        atomic_write_text(self.files.ckpt / "latest.json", json.dumps(latest))
        olds = sorted(
            p
            for p in self.files.ckpt.iterdir()
            if p.is_dir() and p.name.startswith("step_") and p.name != name
        )
        for old in olds[: max(0, len(olds) - (self.config.keep_checkpoints - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        self.files.metric("checkpoint", step=self.step, dir=name)
        self.files.set_state(last_checkpoint=name)
        log.info("checkpoint %s written", name)

    # -------------------------------------------------------------- verification
    def verify(self) -> dict[str, dict]:
        """Verification on the recipe's ``.bin`` files (rank 0 only), logged and returned."""
        if not self.info.main or not self.config.val_bins:
            return {}
        was_training = self.backbone.training
        try:
            results = verify(
                torch_embedder(self.backbone, str(self.device)),
                self.config.val_bins,
                size=self.config.image_size,
            )
        finally:
            self.backbone.train(was_training)
        table = {
            r.name: {"accuracy_mean": r.accuracy_mean, "accuracy_std": r.accuracy_std, "pairs": r.pairs}
            for r in results
        }
        for name, r in table.items():
            log.info(
                "verify step %d %s: %.2f%% +- %.2f",
                self.step,
                name,
                100 * r["accuracy_mean"],
                100 * r["accuracy_std"],
            )
        self.files.metric("verify", step=self.step, results=table)
        self.files.set_state(last_verification={"step": self.step, "results": table})
        return table

    # -------------------------------------------------------------- loop
    def _loader(self):
        c = self.config
        if self.use_dali:
            log.info("data: NVIDIA DALI (set in DALI layout)")
            return make_dali_loader(
                self.dataset.reader.rec_path,
                batch_size=c.batch_size,
                rank=self.info.rank,
                world_size=self.info.world_size,
                device_id=self.device.index or 0,
                seed=c.seed,
            )
        return make_loader(
            self.dataset, self.sampler, num_workers=c.num_workers, pin_memory=self.device.type == "cuda"
        )

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        log.warning("signal %d received: checkpointing and stopping", signum)
        self._stop_signal = True

    def train(self, progress=None) -> dict[str, Any]:
        """Run until ``total_steps`` (or a stop request); returns the final state."""
        c = self.config
        try:
            signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            pass
        if self.info.main and self.files.stop_file.exists():
            self.files.stop_file.unlink()
        if self.info.world_size > 1:
            dist.barrier()
        self._resume()
        run = {
            "num_classes": self.num_classes,
            "num_images": len(self.dataset),
            "layout": self.dataset.kind,
            "world_size": self.info.world_size,
            "global_batch": self.global_batch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "base_lr": self.base_lr,
            "device": str(self.device),
            "amp": self.amp,
            "dali": self.use_dali,
        }
        if self.info.main:
            atomic_write_text(self.files.root / "run.json", json.dumps(run, indent=1), fsync=False)
            log.info("training %s: %s", self.files.root, json.dumps(run))
        self.files.set_state(
            status="running",
            step=self.step,
            total_steps=self.total_steps,
            epoch=self.epoch,
            error=None,
            error_resumable=None,
            error_fix=None,
        )
        self.files.metric("start", **run, step=self.step)
        status = self._loop(progress)
        if self._saved_step != self.step:  # the same decision on every rank (save_checkpoint has a barrier)
            self.save_checkpoint()
        if status == "finished" and c.val_bins and self.step % c.verify_every:
            self.verify()
        self.files.set_state(status=status, step=self.step, epoch=self.epoch)
        self.files.metric("end", status=status, step=self.step)
        log.info("run %s at step %d/%d", status, self.step, self.total_steps)
        return dict(self.files.state, status=status, step=self.step)

    def _loop(self, progress) -> str:
        c = self.config
        loader = self._loader()
        self.backbone.train()
        self.pfc.train()
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        t_last, n_last, loss_sum, loss_n = time.time(), self.step, torch.zeros((), device=self.device), 0
        amp_ctx = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        while self.step < self.total_steps:
            if not self.use_dali:
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for images, labels in loader:
                if self.step >= self.total_steps:
                    break
                lr = lr_at(self.step, self.base_lr, self.total_steps, self.warmup_steps, c.poly_power)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                x = images if self.use_dali else to_model_input(images, self.device)
                labels = labels.to(self.device, non_blocking=True)
                with amp_ctx:
                    emb = self.model(x)
                loss = self.pfc(emb.float(), labels)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    if c.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.batch_in_epoch += 1
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                loss_sum += loss.detach()
                loss_n += 1
                if progress is not None:
                    progress(self.step, self.total_steps)
                if self.step % c.log_every == 0 or self.step == self.total_steps:
                    now = time.time()
                    sps = (self.step - n_last) * self.global_batch / max(now - t_last, 1e-9)
                    avg = float(loss_sum.item()) / max(loss_n, 1)
                    if not math.isfinite(avg):
                        raise FloatingPointError(
                            f"loss is {avg} at step {self.step}; lower lr or check the data"
                        )
                    eta = (self.total_steps - self.step) * self.global_batch / max(sps, 1e-9)
                    log.info(
                        "step %d/%d epoch %d loss %.4f lr %.5f %.0f samples/s eta %.0f min",
                        self.step,
                        self.total_steps,
                        self.epoch,
                        avg,
                        lr,
                        sps,
                        eta / 60,
                    )
                    self.files.metric(
                        "train", step=self.step, epoch=self.epoch, loss=avg, lr=lr, samples_per_sec=sps
                    )
                    self.files.set_state(
                        step=self.step, epoch=self.epoch, loss=avg, samples_per_sec=sps, eta_s=eta
                    )
                    t_last, n_last, loss_sum, loss_n = now, self.step, torch.zeros((), device=self.device), 0
                if self.step % c.verify_every == 0:
                    self.verify()
                if self.step % c.save_every == 0:
                    self.save_checkpoint()
                # every rank checks at the same steps, so the collective below always matches up
                if self.step % 10 == 0 and _all_true(
                    self._stop_signal or (self.info.main and self.files.stop_file.exists()),
                    self.info,
                    self.device,
                ):
                    log.info("stop requested at step %d", self.step)
                    return "stopped"
                if self.batch_in_epoch == 0:
                    break  # next epoch: new permutation
        return "finished"

    def close(self) -> None:
        torch.set_num_threads(self._threads_before)
        if self._log_handler is not None:
            logging.getLogger("fdta_core").removeHandler(self._log_handler)
            self._log_handler.close()
        if self.info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


#: Failures that running the same command again cannot cure: the input itself must change first.
_NOT_CURED_BY_RESUME = (ConfigError, DatasetError, InputError, ModelNotFoundError, ModelFormatError)


def failure_record(exc: BaseException) -> dict[str, Any]:
    """What ``state.json`` keeps of a failure: the message, and whether resuming can help.

    A crash, an out-of-memory or a kill is worth resuming from the last checkpoint; a corrupt data set or
    a bad recipe fails again the same way, so the launcher passes on the error's own fix instead.
    """
    resumable = not isinstance(exc, _NOT_CURED_BY_RESUME)
    record: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}", "error_resumable": resumable}
    fix = getattr(exc, "fix", None)
    record["error_fix"] = fix if isinstance(fix, str) and fix else None
    return record


def run_training(config: TrainConfig, progress=None) -> dict[str, Any]:
    """Train (or resume) according to ``config``; records a failure in ``state.json`` before re-raising."""
    trainer = None
    try:
        trainer = Trainer(config)
        return trainer.train(progress)
    except BaseException as exc:
        failure = failure_record(exc)
        if trainer is not None:
            trainer.files.set_state(status="failed", **failure)
        elif int(os.environ.get("RANK", "0")) == 0 and config.output:
            Path(config.output).mkdir(parents=True, exist_ok=True)
            RunFiles(config.output, True).set_state(status="failed", **failure)
        raise
    finally:
        if trainer is not None:
            trainer.close()
