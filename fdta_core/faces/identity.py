"""Identity checks: uniqueness among synthetic identities and distance from real people.

DCFace treats two class centres with cosine similarity above 0.3 as the same identity; FDTA uses the
same rule to refuse a new synthetic identity that repeats an earlier one, and to refuse one that is too
close to a real reference subject (a synthetic data set must not reproduce a real person).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .csim import l2_normalize

#: DCFace's cosine threshold for "same identity".
DCFACE_THRESHOLD = 0.3


@dataclass
class IdentityCheck:
    """Result of one check: accepted or not, and the closest earlier / reference identity."""

    accepted: bool
    nearest: int | None
    similarity: float
    reason: str = ""


class UniquenessChecker:
    """Accepts identities one by one; refuses one whose embedding has cosine similarity above
    ``threshold`` with an accepted earlier one. Order matters (first come, first kept), which keeps the
    result deterministic for a given identity order."""

    def __init__(self, threshold: float = DCFACE_THRESHOLD, dim: int | None = None) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise InputError(f"threshold must lie in [-1, 1], got {threshold}", where="UniquenessChecker")
        self.threshold = float(threshold)
        self._emb: list[np.ndarray] = []
        self._keys: list[int] = []
        self.dim = dim

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, embedding: np.ndarray) -> IdentityCheck:
        """Whether ``embedding`` would be accepted (does not add it)."""
        e = l2_normalize(np.asarray(embedding, np.float64).reshape(-1))
        if self.dim is not None and e.shape[0] != self.dim:
            raise InputError(
                f"embedding has {e.shape[0]} dims, expected {self.dim}", where="UniquenessChecker"
            )
        if not self._emb:
            return IdentityCheck(True, None, -1.0)
        sims = np.stack(self._emb) @ e
        j = int(np.argmax(sims))
        s = float(sims[j])
        if s > self.threshold:
            return IdentityCheck(
                False, self._keys[j], s, f"cosine {s:.3f} > {self.threshold} to identity {self._keys[j]}"
            )
        return IdentityCheck(True, self._keys[j], s)

    def add(self, key: int, embedding: np.ndarray) -> IdentityCheck:
        """Check and, when accepted, remember ``embedding`` under ``key``."""
        res = self.check(embedding)
        if res.accepted:
            e = l2_normalize(np.asarray(embedding, np.float64).reshape(-1))
            self.dim = e.shape[0]
            self._emb.append(e)
            self._keys.append(int(key))
        return res


def unique_identities(
    embeddings: np.ndarray, threshold: float = DCFACE_THRESHOLD, keys: np.ndarray | None = None
) -> tuple[np.ndarray, list[IdentityCheck]]:
    """Greedy pass over identity embeddings in order: mask of the accepted ones and every check."""
    emb = np.asarray(embeddings)
    ks = np.arange(len(emb)) if keys is None else np.asarray(keys)
    chk = UniquenessChecker(threshold)
    results = [chk.add(int(k), e) for k, e in zip(ks, emb, strict=True)]
    return np.array([r.accepted for r in results], bool), results


class RealPersonCheck:
    """Refuses an identity whose embedding is within ``threshold`` cosine of any real reference subject
    (e.g. the class centres of the real data set that lends the styles)."""

    def __init__(
        self, reference_embeddings: np.ndarray, threshold: float = DCFACE_THRESHOLD, keys=None
    ) -> None:
        ref = np.asarray(reference_embeddings, np.float64)
        if ref.ndim != 2 or ref.shape[0] == 0:
            raise InputError(
                f"reference embeddings must be a non-empty [N, D] array, got {list(ref.shape)}",
                where="RealPersonCheck",
            )
        self.reference = l2_normalize(ref)
        self.keys = list(range(len(ref))) if keys is None else list(keys)
        self.threshold = float(threshold)

    def check(self, embedding: np.ndarray) -> IdentityCheck:
        e = l2_normalize(np.asarray(embedding, np.float64).reshape(-1))
        if e.shape[0] != self.reference.shape[1]:
            raise InputError(
                f"embedding has {e.shape[0]} dims, the references have {self.reference.shape[1]}",
                where="RealPersonCheck",
                fix="embed both with the same recognition model.",
            )
        sims = self.reference @ e
        j = int(np.argmax(sims))
        s = float(sims[j])
        if s > self.threshold:
            return IdentityCheck(
                False,
                self.keys[j],
                s,
                f"too close to real subject {self.keys[j]} (cosine {s:.3f} > {self.threshold})",
            )
        return IdentityCheck(True, self.keys[j], s)

    def check_many(self, embeddings: np.ndarray) -> tuple[np.ndarray, list[IdentityCheck]]:
        res = [self.check(e) for e in np.asarray(embeddings)]
        return np.array([r.accepted for r in res], bool), res


def _save_npz(path, keys: list, emb: list[np.ndarray], threshold: float) -> None:
    import io

    from ..fsutil import atomic_write_bytes

    buf = io.BytesIO()
    arr = np.stack(emb) if emb else np.zeros((0, 0))
    np.savez(buf, keys=np.asarray(keys, np.int64), embeddings=arr, threshold=np.float64(threshold))
    atomic_write_bytes(path, buf.getvalue())


def save_checker(checker: UniquenessChecker, path) -> None:
    """Store the accepted identities (keys + unit embeddings) so a later chunk continues the check."""
    _save_npz(path, checker._keys, checker._emb, checker.threshold)


def load_checker(path, threshold: float | None = None) -> UniquenessChecker:
    """A checker holding the identities saved by :func:`save_checker` (no pickle involved)."""
    with np.load(path, allow_pickle=False) as z:
        chk = UniquenessChecker(float(z["threshold"]) if threshold is None else threshold)
        for k, e in zip(z["keys"].tolist(), z["embeddings"], strict=True):
            chk._keys.append(int(k))
            chk._emb.append(np.asarray(e, np.float64))
        if chk._emb:
            chk.dim = chk._emb[0].shape[0]
    return chk


def filter_identities(
    faceset,
    models_or_fn,
    *,
    threshold: float = DCFACE_THRESHOLD,
    checker: UniquenessChecker | None = None,
    real: RealPersonCheck | None = None,
    batch_size: int = 32,
):
    """Drop whole identities of a faceset that repeat an earlier identity or resemble a real person.

    Each identity is represented by its source face (its first image when it has none). ``checker``
    carries identities accepted before (e.g. earlier chunks, see :func:`load_checker`) and is updated.
    Returns ``(kept faceset, {identity: IdentityCheck})``; kept images get the nearest similarities in
    their provenance ``extra``.
    """
    from .csim import _embedder

    fn = _embedder(models_or_fn, batch_size)
    chk = checker if checker is not None else UniquenessChecker(threshold)
    by_id = faceset.by_identity()
    ids = list(by_id)
    if not ids:
        return faceset, {}
    reps = np.stack([faceset.sources.get(i, faceset.images[by_id[i][0]]) for i in ids])
    emb = np.asarray(fn(reps), np.float64)
    results: dict[int, IdentityCheck] = {}
    for ident, e in zip(ids, emb, strict=True):
        if real is not None:
            r = real.check(e)
            if not r.accepted:
                results[ident] = r
                continue
        results[ident] = chk.add(ident, e)
    keep = np.array([results[int(lab)].accepted for lab in faceset.labels], bool)
    prov = list(faceset.provenance)
    for i in np.nonzero(keep)[0]:
        r = results[int(faceset.labels[i])]
        prov[i] = prov[i].derive("identity_check", extra={"nearest_identity_cosine": round(r.similarity, 6)})
    full = faceset.derived(faceset.images, faceset.labels, prov, faceset.sources)
    return full.select(keep), results
