"""Synthetic data for training/evaluation tests and benchmarks: distinguishable classes in a ``.rec``
and a held-out verification ``.bin``.

Each class is a smooth random colour pattern (a coarse random grid blown up to 112 x 112); each image of
a class shifts it by a few pixels, changes its brightness and adds pixel noise, so a network must learn
something about the pattern (not a fixed pixel value) to tell classes apart. Everything derives from a
seed, so two calls make identical files.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..imagecodec import encode_jpeg
from ..recordio import IRHeader, RecordWriter, pack, write_property
from ..seeds import numpy_rng


@dataclass
class SyntheticClasses:
    """Generator of images of ``num_classes`` classes (deterministic in ``seed``)."""

    num_classes: int
    seed: int = 0
    size: int = 112
    grid: int = 4
    shift: int = 6
    noise: float = 12.0

    def __post_init__(self) -> None:
        import cv2

        rng = numpy_rng(self.seed, "synthetic-classes")
        pad = self.size + 2 * self.shift
        self._protos = []
        for _ in range(self.num_classes):
            coarse = rng.uniform(30, 225, (self.grid, self.grid, 3)).astype(np.float32)
            self._protos.append(cv2.resize(coarse, (pad, pad), interpolation=cv2.INTER_CUBIC))

    def image(self, cls: int, rng: np.random.Generator) -> np.ndarray:
        """One RGB uint8 image of class ``cls``."""
        dx, dy = rng.integers(0, 2 * self.shift + 1, 2)
        img = self._protos[cls][dy : dy + self.size, dx : dx + self.size]
        img = img * rng.uniform(0.8, 1.2) + rng.normal(0, self.noise, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_rec(
    folder: str | Path,
    num_classes: int = 16,
    per_class: int = 24,
    *,
    seed: int = 0,
    layout: str = "insightface",
    size: int = 112,
) -> Path:
    """Write ``train.rec``/``train.idx``/``property`` of synthetic classes; returns the folder.

    ``layout`` ``insightface`` writes header + grouped images + identity records; ``dali`` writes only
    scalar-labelled images in shuffled order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = SyntheticClasses(num_classes, seed, size)
    rng = numpy_rng(seed, "synthetic-train")
    items = [(c, encode_jpeg(gen.image(c, rng))) for c in range(num_classes) for _ in range(per_class)]
    with RecordWriter(folder / "train.rec", folder / "train.idx") as w:
        if layout == "insightface":
            n = len(items)
            w.write(0, pack(IRHeader(2, (float(n + 1), float(n + 1 + num_classes)), 0, 0)))
            for i, (c, jpg) in enumerate(items, 1):
                w.write(i, pack(IRHeader(0, float(c), i, 0), jpg))
            for c in range(num_classes):
                start = 1 + c * per_class
                w.write(n + 1 + c, pack(IRHeader(2, (float(start), float(start + per_class)), n + 1 + c, 0)))
        elif layout == "dali":
            order = numpy_rng(seed, "synthetic-shuffle").permutation(len(items))
            for key, j in enumerate(order.tolist()):
                c, jpg = items[j]
                w.write(key, pack(IRHeader(0, float(c), key, 0), jpg))
        else:
            raise ValueError(f"unknown layout {layout}")
    write_property(folder, num_classes, (size, size))
    return folder


def write_synthetic_bin(
    path: str | Path,
    num_classes: int = 16,
    pairs: int = 200,
    *,
    seed: int = 0,
    image_seed: str = "synthetic-bin",
    size: int = 112,
    as_numpy: bool = False,
) -> Path:
    """Write a verification ``.bin`` of held-out images of the same classes (half same, half different).

    Images are new draws (a different RNG stream than the ``.rec``) of the same class patterns; pairs are
    grouped in blocks as real benchmarks are (same/different alternate every 10% of the file).
    """
    gen = SyntheticClasses(num_classes, seed, size)
    rng = numpy_rng(seed, image_seed)
    bins: list = []
    issame: list[bool] = []
    for p in range(pairs):
        same = (p * 10 // pairs) % 2 == 0
        a = int(rng.integers(num_classes))
        b = a if same else int((a + rng.integers(1, num_classes)) % num_classes)
        for c in (a, b):
            jpg = encode_jpeg(gen.image(c, rng))
            bins.append(np.frombuffer(jpg, np.uint8).copy() if as_numpy else jpg)
        issame.append(bool(same))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)
    return path
