"""Training recipes: one dataclass holds every knob; presets are small dicts over it (as arcface_torch's
config files are), and the resolved recipe is written into the run directory so a run is reproducible and
resumable from that file alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, check_choice


@dataclass
class TrainConfig:
    """Everything a training run needs. ``lr`` is the rate for a *global* batch of ``lr_batch`` images
    and is scaled linearly to the real global batch (``lr_batch = 0`` takes ``lr`` as is)."""

    data: str = ""
    output: str = ""
    # backbone
    network: str = "r50"
    layers: list[int] | None = None
    width: int = 64
    embedding_size: int = 512
    image_size: int = 112
    dropout: float = 0.0
    # loss
    loss: str = "cosface"
    margin: float | None = None
    scale: float = 64.0
    sample_rate: float = 1.0
    num_classes: int = 0
    # optimisation
    batch_size: int = 128
    lr: float = 0.1
    lr_batch: int = 1024
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 20
    max_steps: int = 0
    warmup_epochs: float = 0.0
    poly_power: float = 2.0
    fp16: bool = True
    grad_clip: float = 5.0
    flip: bool = True
    seed: int = 0
    # runtime
    device: str = "auto"
    num_workers: int = 2
    threads: int = 0
    dali: str = "auto"
    # bookkeeping
    val_bins: list[str] = field(default_factory=list)
    verify_every: int = 2000
    save_every: int = 2000
    keep_checkpoints: int = 2
    log_every: int = 50

    def validate(self) -> TrainConfig:
        if not self.data:
            raise ConfigError(
                "no training data given",
                where="recipe.data",
                fix="pass the folder holding train.rec, or a data-set folder (chunks/: every chunk is read).",
            )
        if not self.output:
            raise ConfigError("no output (run) directory given", where="recipe.output")
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.epochs >= 1 or self.max_steps >= 1, "give epochs >= 1 or max_steps >= 1"),
            (0 < self.sample_rate <= 1, "sample_rate must be in (0, 1]"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "device must be auto, cpu or cuda",
            ),
            (self.dali in ("auto", "on", "off"), "dali must be auto, on or off"),
            (
                self.save_every >= 1 and self.log_every >= 1 and self.verify_every >= 1,
                "save/log/verify intervals must be >= 1",
            ),
            (self.image_size % 16 == 0, "image_size must be a multiple of 16"),
            (self.threads >= 0, "threads must be >= 0 (0: torch's default)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg, where="recipe")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown recipe keys: {', '.join(unknown)}", fix=f"known keys: {', '.join(sorted(names))}"
            )
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"recipe {path} not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"recipe {path} is not valid JSON ({exc})") from None


#: arcface_torch ``ms1mv3_r50``: r50, CosFace (s 64, m 0.4), SGD 0.1 @ 1024, wd 5e-4, 20 epochs, fp16,
#: 128 per GPU on 8 GPUs.
ARCFACE_R50_MS1MV3: dict[str, Any] = {
    "network": "r50",
    "embedding_size": 512,
    "loss": "cosface",
    "scale": 64.0,
    "sample_rate": 1.0,
    "batch_size": 128,
    "lr": 0.1,
    "lr_batch": 1024,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "epochs": 20,
    "warmup_epochs": 0.0,
    "fp16": True,
    "grad_clip": 5.0,
    "verify_every": 2000,
    "save_every": 2000,
}

#: Synthetic sets of 0.5M-1.2M images (DCFace / FDTA scale): same backbone and loss, more epochs (the
#: published synthetic runs use 26-40), a short warmup because a small set makes few steps per epoch.
SYNTHETIC: dict[str, Any] = {
    **ARCFACE_R50_MS1MV3,
    "epochs": 34,
    "warmup_epochs": 1.0,
    "verify_every": 1000,
    "save_every": 1000,
}

#: A few-minute CPU smoke run (tiny network at 32 x 32 input); for checking a set and the plumbing.
TINY: dict[str, Any] = {
    "network": "r4",
    "width": 8,
    "embedding_size": 64,
    "image_size": 32,
    "scale": 16.0,
    "loss": "cosface",
    "margin": 0.2,
    "batch_size": 32,
    "lr": 0.1,
    "lr_batch": 0,
    "epochs": 5,
    "fp16": False,
    "num_workers": 0,
    # one intra-op thread: a tiny network gains nothing from more, and on a busy machine OpenMP threads
    # that wait for each other make a step 10-50x slower
    "threads": 1,
    "verify_every": 100,
    "save_every": 100,
    "log_every": 10,
}

PRESETS: dict[str, dict[str, Any]] = {
    "arcface_r50_ms1mv3": ARCFACE_R50_MS1MV3,
    "synthetic": SYNTHETIC,
    "tiny": TINY,
}


def make_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a preset plus overrides (``None`` values are ignored)."""
    base: dict[str, Any] = {}
    if preset:
        check_choice(None, "preset", preset, PRESETS, error=ConfigError)
        base.update(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(base)
