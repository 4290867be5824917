"""DCFace's intra-class diversity metric, and the style features it is measured in.

Definition (Kim, Liu, Jain, Liu, "DCFace: Synthetic Face Generation with Dual Condition Diffusion
Model", CVPR 2023, Sec. 4 "Intra-class Diversity", Eqs. 14-15; read from the paper PDF in the authors'
repository github.com/mk-minchul/dcface, ``assets/main.pdf``):

    The style space is the feature space of an Inception network pretrained on ImageNet, as in the
    Improved Precision and Recall metric (Kynkaanniemi et al., NeurIPS 2019). For a class ``c`` with
    real style vectors ``{s_i^c}`` and generated style vectors ``{s^_j^c}`` (same label condition), let
    ``r_k(s^_j)`` be the Euclidean distance from ``s^_j`` to its k-th nearest neighbour among the
    generated vectors of the class, and ``I(s_i) = 1`` when some ``s^_j`` has ``d(s_i, s^_j) <= r_k(s^_j)``
    (else 0). Then ``D_intra = 1/C * sum_c 1/N_c * sum_i I(s_i^c)``: the share of the real images' styles
    covered by the generated images' style manifold, per class, averaged over classes (the Improved
    Recall of each class's conditional distribution). Higher means more diverse styles per identity.

The paper does not state ``k``; :data:`DEFAULT_K` = 3 is the Improved Precision and Recall default.
As in Improved Recall, a generated vector's k-th neighbour excludes itself.

In FDTA the *real images of a class* are the STG reference images its images were styled after (each
image's provenance ``reference_key``): the same label condition, as in DCFace, where each synthetic
identity's styles come from real images. The Inception network is the user's file (its ImageNet weights
are not shipped): an ONNX export of ``torchvision.models.inception_v3`` with its classifier removed (the
2048-d pool features), run with onnxruntime like the face models.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelFormatError

log = logging.getLogger(__name__)

#: k of the k-nearest-neighbour radius (Improved Precision and Recall's default; DCFace states none).
DEFAULT_K = 3
#: ImageNet normalisation of the Inception input (torchvision convention), RGB.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[len(a), len(b)]`` (float64, clipped at 0 before the root)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def knn_radii(feats: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """Distance of each vector to its k-th nearest *other* vector of ``feats`` (needs ``len > k``)."""
    d = _pairwise(feats, feats)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def class_recall(real: np.ndarray, generated: np.ndarray, k: int = DEFAULT_K) -> float:
    """Share of ``real`` vectors inside the k-NN balls of ``generated`` (DCFace Eq. 14, one class)."""
    radii = knn_radii(generated, k)
    d = _pairwise(real, generated)
    return float(np.mean(np.any(d <= radii[None, :], axis=1)))


@dataclass
class DiversityResult:
    """``value`` = D_intra over ``classes`` measured; ``per_class`` their recalls; ``skipped`` the classes
    left out and why (fewer than k+1 generated images, or no real images)."""

    value: float | None
    k: int
    per_class: dict[int, float] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "k": self.k,
            "classes": len(self.per_class),
            "skipped": len(self.skipped),
            "skipped_reasons": sorted(set(self.skipped.values())),
        }


def intra_class_diversity(
    real: np.ndarray,
    real_labels: Sequence[int] | np.ndarray,
    generated: np.ndarray,
    generated_labels: Sequence[int] | np.ndarray,
    k: int = DEFAULT_K,
) -> DiversityResult:
    """DCFace's ``D_intra`` (Eq. 15) of style vectors: the mean over classes of each class's recall."""
    if int(k) < 1:
        raise InputError(f"k must be >= 1, got {k}", where="diversity k")
    rl, gl = np.asarray(real_labels, np.int64), np.asarray(generated_labels, np.int64)
    real, generated = np.asarray(real), np.asarray(generated)
    if len(rl) != len(real) or len(gl) != len(generated):
        raise InputError("one label per style vector is needed", where="diversity")
    out = DiversityResult(None, int(k))
    for c in np.unique(gl).tolist():
        g = generated[gl == c]
        r = real[rl == c]
        if len(g) <= k:
            out.skipped[int(c)] = f"fewer than k+1={k + 1} generated images"
        elif not len(r):
            out.skipped[int(c)] = "no real images"
        else:
            out.per_class[int(c)] = class_recall(r, g, int(k))
    if out.per_class:
        out.value = float(np.mean(list(out.per_class.values())))
    return out


class StyleModel:
    """The style-feature network (an Inception ONNX export): aligned uint8 RGB faces -> ``[N, D]``.

    Faces are resized to the network's input size (299 when the graph leaves it open), scaled to [0, 1]
    and normalised with ImageNet's mean and std, NCHW float32; the output is flattened per image.
    """

    def __init__(self, path: str | os.PathLike, providers: str | Sequence[str] = "auto") -> None:
        from .providers import resolve_providers

        p = Path(path)
        if not p.is_file():
            raise InputError(
                f"style model {p} not found",
                where="--style-model",
                fix="export torchvision's inception_v3 (ImageNet weights, fc = Identity) to ONNX and pass it.",
            )
        try:
            import onnxruntime as ort

            self.session = ort.InferenceSession(str(p), providers=resolve_providers(providers))
        except ImportError as exc:
            raise InputError("the style model needs onnxruntime", where="--style-model") from exc
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ModelFormatError(f"cannot load style model {p}: {exc}") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ModelFormatError(f"style model {p} takes a {len(shape)}-d input, expected N x 3 x H x W")
        h, w = shape[2], shape[3]
        self.size = (int(h) if isinstance(h, int) else 299, int(w) if isinstance(w, int) else 299)
        self.path = p

    def __call__(self, faces: np.ndarray, batch_size: int = 32) -> np.ndarray:
        from PIL import Image

        out = []
        for s in range(0, len(faces), batch_size):
            batch = []
            for f in faces[s : s + batch_size]:
                img = Image.fromarray(np.ascontiguousarray(f)).resize(self.size[::-1], Image.BILINEAR)
                batch.append((np.asarray(img, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
            x = np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), np.float32)
            y = self.session.run(None, {self.input_name: x})[0]
            out.append(np.asarray(y, np.float32).reshape(len(batch), -1))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def reference_faces(
    source: str | os.PathLike,
    keys: Sequence[str],
    *,
    models: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """The aligned reference faces of ``keys`` (provenance ``reference_key``) from the reference bank's
    source: the folder or ``.rec`` the FDTAReferenceBank node read. Faces that are not 112x112 are
    aligned with ``models`` (a face pack). Keys not in the bank are left out (logged)."""
    from ..stg.bank import ReferenceBank

    p = Path(source)
    align = None
    if models is not None and callable(getattr(models, "align_batch", None)):

        def align(img: np.ndarray) -> np.ndarray:
            res = models.align_batch([img], assume_aligned=True)
            if not len(res.faces):
                raise InputError("no face found in a reference image", where="--references")
            return res.faces[0]

    kw: dict[str, Any] = {"align": align, "cache_dir": cache_dir}
    if p.suffix == ".rec" or (p / "train.rec").is_file():
        bank = ReferenceBank.from_rec(p if p.suffix == ".rec" else p / "train.rec", **kw)
    elif p.is_dir():
        bank = ReferenceBank.from_folder(p, **kw)
    else:
        raise InputError(
            f"{p} is neither a reference folder nor a .rec", where="--references",
            fix="pass the folder (or .rec) the FDTAReferenceBank node of the run read.",
        )  # fmt: skip
    wanted = set(keys)
    pos = [i for i, k in enumerate(bank.keys) if k in wanted]
    found = {bank.keys[i]: i for i in pos}
    missing = wanted - set(found)
    if missing:
        log.warning("%d reference key(s) are not in %s (e.g. %s)", len(missing), p, sorted(missing)[:3])
    faces = bank.images[sorted(found.values())] if found else np.zeros((0, 112, 112, 3), np.uint8)
    return {k: faces[j] for j, (k, _i) in enumerate(sorted(found.items(), key=lambda kv: kv[1]))}
