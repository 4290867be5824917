"""Face verification on insightface ``.bin`` benchmarks (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW; DESIGN 5.3).

The protocol is the one every published table uses (insightface ``eval/verification.py``): embedding =
model(x) + model(flip(x)), L2-normalised; distance = squared L2 (0..4); "same" when distance < threshold;
10 contiguous folds; on each fold the threshold in 0.00..3.99 (step 0.01) that is best on the other nine
folds is scored on it; the mean and std of the 10 accuracies are reported (fractions in 0..1).

``.bin`` files are pickles, and a pickle can run code. :func:`load_bin` uses a restricted unpickler that
admits only what real benchmark files hold, and refuses anything else before it is constructed.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InputError, UnsafeFileError
from ..imagecodec import decode_into

log = logging.getLogger(__name__)

#: Pair counts of the standard benchmarks (a file with another count still evaluates; a warning is logged).
STANDARD_PAIRS: dict[str, int] = {"lfw": 6000, "cfp_fp": 7000, "agedb_30": 6000, "calfw": 6000, "cplfw": 6000}

NUM_FOLDS = 10
THRESHOLDS = np.arange(0, 4, 0.01)


# ---------------------------------------------------------------------------- safe loading
class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside a ``.bin``: it may only be passed to ``_reconstruct``
    (calling it, as a crafted pickle could, fails)."""

    def __init__(self, *args, **kwargs) -> None:
        raise UnsafeFileError("constructing numpy.ndarray directly is not allowed in a .bin")


def _np_reconstruct(subtype, shape, dtype_code):  # numpy's ndarray pickle entry point, checked
    if subtype is not _NdarrayToken:
        raise UnsafeFileError(f"array type {subtype!r} is not allowed in a .bin")
    if (
        not isinstance(shape, tuple)
        or not all(isinstance(d, int) and 0 <= d for d in shape)
        or len(shape) > 1
    ):
        raise UnsafeFileError(f"array shape {shape!r} is not an encoded image's")
    return np.ndarray.__new__(np.ndarray, shape, np.uint8)


def _np_dtype(code, align=False, copy=False):
    code = code.decode() if isinstance(code, bytes) else code
    if code not in ("u1", "uint8"):
        raise UnsafeFileError(f"numpy dtype {code!r} is not allowed in a .bin (only uint8 image arrays)")
    return np.dtype(np.uint8)


def _codecs_encode(text, encoding="utf-8"):
    # Python 3 writes bytes under pickle protocol <= 2 as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeFileError("only _codecs.encode(str, 'latin1') is allowed in a .bin")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _np_dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _BinUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"the file references {module}.{name}, which a verification .bin never holds; refused "
                "without executing it",
                fix="use benchmark files from a trusted source (insightface's lfw.bin, cfp_fp.bin, ...).",
            ) from None

    def persistent_load(self, pid):  # noqa: D401
        raise UnsafeFileError("persistent ids are not allowed in a .bin")


def _as_bytes(item, i: int, where: str) -> bytes:
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise DatasetError(f"{where}: image {i} is {type(item).__name__}, expected encoded bytes")


def load_bin_raw(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """Encoded images (2P, pair order) and the P ``issame`` booleans of a ``.bin``, loaded safely."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"benchmark file {path} not found", fix="pass the path of an existing .bin"
        ) from None
    obj = None
    last_exc: Exception | None = None
    for kwargs in ({}, {"encoding": "bytes"}):
        try:
            obj = _BinUnpickler(io.BytesIO(data), **kwargs).load()
            break
        except UnsafeFileError:
            raise
        except UnicodeDecodeError as exc:  # Python 2 str objects: retry with encoding='bytes'
            last_exc = exc
        except Exception as exc:  # noqa: BLE001 - any parse failure means "not a benchmark pickle"
            raise DatasetError(f"{path} is not a verification .bin ({type(exc).__name__}: {exc})") from None
    if obj is None:
        raise DatasetError(f"{path} could not be decoded ({last_exc})")
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise DatasetError(f"{path}: expected a pickled (bins, issame) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, list | tuple) or not isinstance(issame, list | tuple | np.ndarray):
        raise DatasetError(f"{path}: expected (list of images, list of booleans)")
    if any(not isinstance(v, bool | np.bool_) for v in issame):
        raise DatasetError(f"{path}: issame holds non-boolean values")
    images = [_as_bytes(b, i, str(path)) for i, b in enumerate(bins)]
    if len(images) != 2 * len(issame):
        raise DatasetError(f"{path}: {len(images)} images for {len(issame)} pairs (need exactly 2 per pair)")
    return images, np.asarray(issame, dtype=bool)


def decode_images(encoded: Sequence[bytes], size: int = 112) -> np.ndarray:
    """Decode JPEG/PNG bytes to an N x size x size x 3 RGB uint8 array (resized when needed)."""
    out = np.empty((len(encoded), size, size, 3), np.uint8)
    for i, buf in enumerate(encoded):
        try:
            decode_into(buf, out[i], where=f"image {i} of the benchmark")
        except DatasetError:
            raise DatasetError(f"image {i} of the benchmark could not be decoded") from None
    return out


def load_bin(path: str | Path, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x H x W x 3 RGB uint8, issame bool P)`` of a ``.bin`` file."""
    encoded, issame = load_bin_raw(path)
    name = benchmark_name(path)
    if name in STANDARD_PAIRS and STANDARD_PAIRS[name] != len(issame):
        log.warning("%s has %d pairs; the standard %s has %d", path, len(issame), name, STANDARD_PAIRS[name])
    return decode_images(encoded, size), issame


def benchmark_name(path: str | Path) -> str:
    return Path(path).stem


# ---------------------------------------------------------------------------- protocol
def fold_slices(n: int, folds: int = NUM_FOLDS) -> list[slice]:
    """Contiguous folds as sklearn's ``KFold(shuffle=False)`` cuts them (first ``n % folds`` one longer)."""
    if n < folds:
        raise InputError(f"{n} pairs cannot be split into {folds} folds")
    base, extra = divmod(n, folds)
    out, start = [], 0
    for k in range(folds):
        stop = start + base + (1 if k < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


@dataclass
class VerificationResult:
    """Accuracy of one benchmark: fold accuracies (fractions), their mean and std, and thresholds."""

    name: str
    pairs: int
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    best_thresholds: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def normalise_embeddings(emb: np.ndarray, emb_flip: np.ndarray | None = None) -> np.ndarray:
    """Sum with the flipped-image embeddings, then L2-normalise each row."""
    e = np.asarray(emb, np.float64)
    if emb_flip is not None:
        e = e + np.asarray(emb_flip, np.float64)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.maximum(norm, 1e-12)


def evaluate_pairs(embeddings: np.ndarray, issame: np.ndarray, name: str = "") -> VerificationResult:
    """Run the 10-fold threshold protocol on normalised embeddings in pair order (2P x D)."""
    issame = np.asarray(issame, bool)
    e = np.asarray(embeddings, np.float64)
    if e.shape[0] != 2 * issame.shape[0]:
        raise InputError(f"{e.shape[0]} embeddings for {issame.shape[0]} pairs")
    dist = np.sum(np.square(e[0::2] - e[1::2]), axis=1)
    # predictions for every threshold at once: P x T
    pred = dist[:, None] < THRESHOLDS[None, :]
    correct = pred == issame[:, None]
    n = issame.shape[0]
    folds = fold_slices(n)
    total = correct.sum(axis=0)
    accs, thr = [], []
    for sl in folds:
        test = correct[sl].sum(axis=0)
        train_acc = (total - test) / (n - (sl.stop - sl.start))
        best = int(np.argmax(train_acc))
        accs.append(float(test[best]) / (sl.stop - sl.start))
        thr.append(float(THRESHOLDS[best]))
    a = np.asarray(accs)
    return VerificationResult(name, n, float(a.mean()), float(a.std()), accs, thr)


# ---------------------------------------------------------------------------- models
EmbedFn = Callable[[np.ndarray], np.ndarray]
"""Maps N x H x W x 3 RGB uint8 images to N x D float embeddings (unnormalised)."""


def embed_with_flip(embed: EmbedFn, images: np.ndarray, batch_size: int = 64, progress=None) -> np.ndarray:
    """model(x) + model(flip(x)), L2-normalised, for every image (in batches)."""
    outs, outs_flip = [], []
    n = len(images)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        outs.append(np.asarray(embed(batch), np.float64))
        outs_flip.append(np.asarray(embed(np.ascontiguousarray(batch[:, :, ::-1])), np.float64))
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return normalise_embeddings(np.concatenate(outs), np.concatenate(outs_flip))


def verify(
    embed: EmbedFn,
    bins: Sequence[str | Path],
    *,
    batch_size: int = 64,
    size: int = 112,
    progress: Callable[[int, int], None] | None = None,
) -> list[VerificationResult]:
    """Evaluate ``embed`` on each ``.bin`` (loaded safely); one result per benchmark, in order."""
    results = []
    for path in bins:
        images, issame = load_bin(path, size)
        emb = embed_with_flip(embed, images, batch_size, progress)
        res = evaluate_pairs(emb, issame, benchmark_name(path))
        log.info("%s: %.4f +- %.4f (%d pairs)", res.name, res.accuracy_mean, res.accuracy_std, res.pairs)
        results.append(res)
    return results


def format_table(results: Sequence[VerificationResult]) -> str:
    """A fixed-width table in percent (as published tables), with the average of the means."""
    lines = [f"{'benchmark':<14}{'pairs':>7}{'accuracy %':>13}{'std %':>9}"]
    for r in results:
        lines.append(f"{r.name:<14}{r.pairs:>7}{100 * r.accuracy_mean:>13.2f}{100 * r.accuracy_std:>9.2f}")
    if len(results) > 1:
        avg = 100 * float(np.mean([r.accuracy_mean for r in results]))
        lines.append(f"{'average':<14}{'':>7}{avg:>13.2f}")
    return "\n".join(lines)
