"""The identity rules (DESIGN 5.8), in one place: who counts as the same person, who counts as a real one.

* Two identities are the same person when the cosine similarity of their identity embeddings is at or
  above the threshold (DCFace's 0.3 on ArcFace class centres is the published convention).
* A synthetic identity is a copy of a real person when it is at or above the (real-person) threshold to
  any real identity: the STG reference subjects or a real data set the user names.

Embeddings live in an :class:`IdentityIndex`, a FAISS inner-product index over unit vectors, so a check
against N earlier identities is one vectorised search, and a data set of N identities is checked for
duplicates with one range search (exact up to :data:`EXACT_LIMIT` identities, an inverted-file index
above it). The ACG, the CSIM stage, the report's uniqueness metric and ``fdta audit`` all use these.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelFormatError
from .csim import l2_normalize

log = logging.getLogger(__name__)

#: DCFace's cosine threshold for "same identity".
DCFACE_THRESHOLD = 0.3

#: Up to this many base vectors a range search is exact (a flat index); above it an IVF index
#: (approximate, see :func:`range_pairs`) keeps the cost near-linear in the number of identities.
EXACT_LIMIT = 50_000

#: File suffix of a persisted index.
INDEX_SUFFIX = ".faiss"


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency of the faces extra
        raise ImportError(
            "the identity checks need FAISS: pip install faiss-cpu (or faiss-gpu on a CUDA machine)"
        ) from exc
    return faiss


def same_identity(cosine: float | np.ndarray, threshold: float = DCFACE_THRESHOLD) -> Any:
    """The uniqueness rule: cosine at or above ``threshold`` means the same person."""
    return np.asarray(cosine) >= threshold if isinstance(cosine, np.ndarray) else cosine >= threshold


def check_threshold(value: float, where: str) -> float:
    """A cosine threshold must lie in [-1, 1]."""
    v = float(value)
    if not -1.0 <= v <= 1.0 or math.isnan(v):
        raise InputError(f"{where} is a cosine similarity in [-1, 1], got {value}", where=where)
    return v


def unit_rows(embeddings: np.ndarray, where: str = "identity index") -> np.ndarray:
    """``[N, D]`` float32 unit rows (a [D] vector becomes one row); zero or non-finite rows are refused."""
    a = np.asarray(embeddings)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise InputError(f"embeddings must be [N, D], got shape {list(a.shape)}", where=where)
    # float32 (what FAISS searches) with the squared norms summed in float64: within one float32 rounding
    # of normalising in float64, without a float64 copy of the whole set (4x faster at 100K x 512)
    a = np.ascontiguousarray(a, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        n = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    if a.shape[0] and (not np.all(np.isfinite(n)) or np.any(n == 0.0)):
        raise InputError("an embedding is zero or not finite", where=where)
    return a * (1.0 / n).astype(np.float32)[:, None]


class IdentityIndex:
    """Unit identity embeddings with an int id and a text label each, searchable by cosine (FAISS).

    ``ids`` are identity numbers (plan index, class label, real subject number); ``labels`` are what
    messages show ("identity 12", "reference subject 3"). Only ids and vectors are persisted.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._index = None if dim is None else _faiss().IndexFlatIP(int(dim))
        self.ids: list[int] = []
        self.labels: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def _ensure(self, dim: int) -> None:
        if self._index is None:
            self.dim = int(dim)
            self._index = _faiss().IndexFlatIP(self.dim)
        elif dim != self.dim:
            raise InputError(
                f"embedding size {dim} differs from the index's {self.dim} (different face models?)",
                where="identity index",
                fix="embed every identity with the same recognition model.",
            )

    def add(self, label: str, embedding: np.ndarray, ident: int | None = None) -> None:
        """Add one identity (``ident`` defaults to its position)."""
        self.extend([label], unit_rows(embedding), None if ident is None else [ident])

    def extend(self, labels: Sequence[str], embeddings: np.ndarray, ids: Sequence[int] | None = None) -> None:
        e = unit_rows(embeddings)
        if len(labels) != len(e) or (ids is not None and len(ids) != len(e)):
            raise InputError(f"{len(e)} embeddings for {len(labels)} labels", where="identity index")
        if not len(e):
            return
        self._ensure(e.shape[1])
        start = len(self.ids)
        self._index.add(e)
        self.ids.extend(int(i) for i in (ids if ids is not None else range(start, start + len(e))))
        self.labels.extend(str(x) for x in labels)

    def vectors(self) -> np.ndarray:
        """All stored unit vectors ``[N, D]`` float32."""
        if self._index is None or not len(self):
            return np.zeros((0, self.dim or 0), np.float32)
        return self._index.reconstruct_n(0, len(self))

    def copy(self) -> IdentityIndex:
        out = IdentityIndex(self.dim)
        if len(self):
            out._index.add(self.vectors())
        out.ids, out.labels = list(self.ids), list(self.labels)
        return out

    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query row: ``(cosine of the nearest entry, its position)``; ``(-inf, -1)`` when empty."""
        q = unit_rows(embeddings)
        if not len(self):
            return np.full(len(q), -np.inf), np.full(len(q), -1, np.int64)
        self._ensure(q.shape[1])
        sims, pos = self._index.search(q, 1)
        return sims[:, 0].astype(np.float64), pos[:, 0].astype(np.int64)

    def most_similar(self, embedding: np.ndarray) -> tuple[float, str | None]:
        """``(cosine, label)`` of the closest entry, or ``(-inf, None)`` for an empty index."""
        sims, pos = self.search(embedding)
        if pos[0] < 0:
            return float("-inf"), None
        return float(sims[0]), self.labels[int(pos[0])]

    def save(self, path: str | os.PathLike) -> None:
        """Write the index (FAISS' own serialisation of an id-mapped flat index) atomically."""
        from ..fsutil import atomic_write_bytes

        faiss = _faiss()
        flat = faiss.IndexFlatIP(int(self.dim or 0))
        idmap = faiss.IndexIDMap2(flat)
        if len(self):
            idmap.add_with_ids(self.vectors(), np.asarray(self.ids, np.int64))
        atomic_write_bytes(path, faiss.serialize_index(idmap).tobytes())

    @classmethod
    def load(cls, path: str | os.PathLike, label: str = "identity {id}") -> IdentityIndex:
        """Read an index written by :meth:`save`; ``label`` formats each entry's label from its id."""
        faiss = _faiss()
        p = Path(path)
        try:
            raw = np.frombuffer(p.read_bytes(), np.uint8)
            idx = faiss.deserialize_index(raw)  # keep this object alive: a downcast view does not own it
        except (OSError, RuntimeError) as exc:
            raise ModelFormatError(
                f"cannot read identity index {p}: {exc}",
                fix="delete it to start a fresh index (earlier identities are then not checked).",
            ) from exc
        if not isinstance(idx, faiss.IndexIDMap2):
            raise ModelFormatError(f"{p} is not an FDTA identity index (an id-mapped flat index)")
        out = cls(idx.d if idx.ntotal else None)  # an empty index takes its size from its first entry
        if idx.ntotal:
            ids = faiss.vector_to_array(idx.id_map).astype(np.int64)
            inner = faiss.downcast_index(idx.index)
            vecs = inner.reconstruct_n(0, idx.ntotal)
            out.extend([label.format(id=int(i)) for i in ids], vecs, ids.tolist())
        return out

    def merge_from(self, other: IdentityIndex) -> None:
        if len(other):
            self.extend(other.labels, other.vectors(), other.ids)

    def without(self, ids: Sequence[int]) -> IdentityIndex:
        """A copy without the entries whose id is in ``ids``."""
        drop = {int(i) for i in ids}
        keep = [k for k, i in enumerate(self.ids) if i not in drop]
        out = IdentityIndex(self.dim)
        if keep:
            out.extend([self.labels[k] for k in keep], self.vectors()[keep], [self.ids[k] for k in keep])
        return out


# ----------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class IdentityViolation:
    """One identity rule an embedding breaks: ``code`` is ``duplicate`` or ``real_person``."""

    code: str
    detail: str
    cosine: float
    label: str


def identity_violations(
    embedding: np.ndarray,
    *,
    accepted: IdentityIndex | None,
    real: IdentityIndex | None,
    uniqueness_threshold: float = DCFACE_THRESHOLD,
    real_person_threshold: float = DCFACE_THRESHOLD,
) -> list[IdentityViolation]:
    """The rules ``embedding`` breaks: a real person first, then a duplicate of an accepted identity."""
    out: list[IdentityViolation] = []
    if real is not None:
        sim, lab = real.most_similar(embedding)
        if lab is not None and same_identity(sim, real_person_threshold):
            out.append(
                IdentityViolation(
                    "real_person",
                    f"resembles real {lab} (cos {sim:.2f} >= {real_person_threshold:.2f})",
                    sim,
                    lab,
                )
            )
    if accepted is not None:
        sim, lab = accepted.most_similar(embedding)
        if lab is not None and same_identity(sim, uniqueness_threshold):
            out.append(
                IdentityViolation(
                    "duplicate",
                    f"same identity as {lab} (cos {sim:.2f} >= {uniqueness_threshold:.2f})",
                    sim,
                    lab,
                )
            )
    return out


# ----------------------------------------------------------------------------- data-set scale search
@dataclass(frozen=True)
class SearchInfo:
    """How a range search ran: ``exact`` (flat) or ``clustered`` with ``nlist`` cells, ``nprobe`` probed."""

    method: str
    nlist: int = 0
    nprobe: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "nlist": self.nlist, "nprobe": self.nprobe}


#: Cell size and probes of the approximate (clustered) search above :data:`EXACT_LIMIT`: each query is
#: compared with PROBES x CELL_SIZE base vectors. On random 512-d embeddings with planted pairs at cosine
#: 0.35-0.8 (``bench/bench_audit.py``, 100K identities, 2 cores), recall / time: 1000 x 8: 0.70 / 6.2 s;
#: 1000 x 12: 0.87 / 8.5-10 s; 500 x 24: 0.91 / 10-11 s; 1000 x 32: 1.00 / 22 s. 1000 x 12 keeps the
#: 10K -> 100K growth near the bench's 15x: 14.5-15.5 measured warm and repeated (6.6-6.9 s at 100K, each
#: cell a FAISS range search); both sizes are compute-bound and this search does 12x the exact one's
#: products. Misses are the weakest pairs (cosine < 0.6); real class
#: centres cluster (gender, ethnicity, age), which helps the cells. ``exact=True`` when no miss is acceptable.
CELL_SIZE = 1000
PROBES = 12


def _range(index: Any, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAISS range search with an inclusive threshold: ``(query row, base row, cosine)`` of every pair
    with cosine >= ``threshold`` (rows local to ``queries`` and to the index)."""
    thr = np.float32(threshold)
    lims, dist, lab = index.range_search(queries, float(np.nextafter(thr, np.float32(-2))))  # keeps ip > r
    rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims.astype(np.int64)))
    keep = dist >= thr
    return rows[keep], lab[keep].astype(np.int64), dist[keep].astype(np.float64)


def _exact_pairs(q: np.ndarray, b: np.ndarray, threshold: float, self_join: bool, block: int):
    faiss = _faiss()
    idx = faiss.IndexFlatIP(b.shape[1])
    idx.add(b)
    qi, bj, cs = [], [], []
    for s in range(0, len(q), block):
        rows, lab, cos = _range(idx, q[s : s + block], threshold)
        rows += s
        keep = lab > rows if self_join else slice(None)
        qi.append(rows[keep])
        bj.append(lab[keep])
        cs.append(cos[keep])
    return np.concatenate(qi), np.concatenate(bj), np.concatenate(cs)


def _clustered_pairs(q: np.ndarray, b: np.ndarray, threshold: float, self_join: bool, seed: int = 0):
    """Spherical k-means cells of about :data:`CELL_SIZE` base vectors; each query is compared (one
    BLAS product per cell) with the base vectors of its :data:`PROBES` nearest cells. In a self-join
    every vector is a query, so a pair is found when either one's cells reach the other."""
    faiss = _faiss()
    n, d = b.shape
    nlist = max(2, int(round(n / CELL_SIZE)))
    probes = min(nlist, PROBES)
    rng = np.random.default_rng(seed)
    sample = b[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
    km = faiss.Kmeans(d, nlist, niter=10, spherical=True, seed=seed, verbose=False)
    km.train(sample)
    cent = faiss.IndexFlatIP(d)
    cent.add(km.centroids)
    _, home = cent.search(b, 1)
    _, probe = cent.search(q, probes)
    home = home[:, 0]
    b_order = np.argsort(home, kind="stable")
    b_starts = np.searchsorted(home[b_order], np.arange(nlist + 1))
    flat_cell = probe.reshape(-1)
    flat_row = np.repeat(np.arange(len(q), dtype=np.int64), probes)
    q_order = np.argsort(flat_cell, kind="stable")
    q_starts = np.searchsorted(flat_cell[q_order], np.arange(nlist + 1))
    qi, bj, cs = [], [], []
    for c in range(nlist):
        brow = b_order[b_starts[c] : b_starts[c + 1]]
        qrow = flat_row[q_order[q_starts[c] : q_starts[c + 1]]]
        if not len(brow) or not len(qrow):
            continue
        # faiss's range search: the products in BLAS blocks, thresholded as they come (no dense
        # [queries x cell] matrix to scan afterwards: that scan cost as much as the products)
        cell = faiss.IndexFlatIP(d)
        cell.add(b[brow])
        r, k, cos = _range(cell, q[qrow], threshold)
        qi.append(qrow[r])
        bj.append(brow[k].astype(np.int64))
        cs.append(cos)
    if not qi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), nlist, probes
    a, bb, c = np.concatenate(qi), np.concatenate(bj), np.concatenate(cs)
    if self_join:
        keep = a != bb
        a, bb, c = a[keep], bb[keep], c[keep]
        a, bb = np.minimum(a, bb), np.maximum(a, bb)
    key = a * np.int64(len(b) + 1) + bb
    _, first = np.unique(key, return_index=True)
    return a[first], bb[first], c[first], nlist, probes


def range_pairs(
    queries: np.ndarray,
    base: np.ndarray | None = None,
    threshold: float = DCFACE_THRESHOLD,
    *,
    exact: bool = False,
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, SearchInfo]:
    """All (query, base) pairs with cosine >= ``threshold``: ``(qi, bj, cos, info)``, sorted.

    Without ``base`` the queries are searched against themselves and each pair appears once with
    ``qi < bj``. Exact (a FAISS flat index) for up to :data:`EXACT_LIMIT` base vectors or with
    ``exact``; above that clustered (:func:`_clustered_pairs`): cost linear in the number of
    identities, and a pair whose two vectors fall in cells far apart can be missed (recall is measured
    in ``bench/bench_audit.py``).
    """
    q = unit_rows(queries, "range search")
    self_join = base is None
    b = q if self_join else unit_rows(base, "range search")
    if len(q) and len(b) and q.shape[1] != b.shape[1]:
        raise InputError(
            f"embedding sizes differ ({q.shape[1]} vs {b.shape[1]})",
            where="range search",
            fix="embed both sets with the same recognition model.",
        )
    if not len(q) or not len(b):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), SearchInfo("exact")
    if exact or len(b) <= EXACT_LIMIT:
        a, bb, c = _exact_pairs(q, b, threshold, self_join, block)
        info = SearchInfo("exact")
    else:
        a, bb, c, nlist, probes = _clustered_pairs(q, b, threshold, self_join)
        info = SearchInfo("clustered", nlist, probes)
    order = np.lexsort((bb, a))
    return a[order], bb[order], c[order], info


def greedy_unique(
    centers: np.ndarray, threshold: float = DCFACE_THRESHOLD, *, exact: bool = False
) -> np.ndarray:
    """Mask of the identities a first-come-first-kept pass keeps (visit order = row order).

    Equals DCFace's greedy r-ball packing, computed from the duplicate pairs in one range search plus a
    linear pass (an identity is dropped when an earlier *kept* identity is its duplicate).
    """
    n = len(centers)
    keep = np.ones(n, bool)
    if n < 2:
        return keep
    a, b, _c, _ = range_pairs(centers, None, threshold, exact=exact)
    order = np.argsort(b, kind="stable")
    a, b = a[order], b[order]
    starts = np.searchsorted(b, np.arange(n + 1))
    for j in range(n):
        s, e = starts[j], starts[j + 1]
        if s < e and keep[a[s:e]].any():
            keep[j] = False
    return keep


# ----------------------------------------------------------------------------- facesets
@dataclass
class IdentityCheck:
    """Outcome of the identity rules for one identity of a faceset."""

    accepted: bool
    nearest: str | None
    similarity: float
    reason: str = ""
    code: str = ""


def filter_identities(
    faceset,
    models_or_fn,
    *,
    threshold: float = DCFACE_THRESHOLD,
    accepted: IdentityIndex | None = None,
    real: IdentityIndex | None = None,
    real_threshold: float | None = None,
    batch_size: int = 32,
):
    """Drop whole identities of a faceset that repeat an earlier identity or resemble a real person.

    Each identity is represented by its source face (its first image when it has none). ``accepted``
    holds identities accepted before (earlier chunks, see :meth:`IdentityIndex.load`) and is updated.
    Returns ``(kept faceset, {identity: IdentityCheck})``; kept images get the nearest similarity in
    their provenance ``extra``.
    """
    from .csim import _embedder

    fn = _embedder(models_or_fn, batch_size)
    acc = accepted if accepted is not None else IdentityIndex()
    rthr = threshold if real_threshold is None else real_threshold
    by_id = faceset.by_identity()
    ids = list(by_id)
    if not ids:
        return faceset, {}
    reps = np.stack([faceset.sources.get(i, faceset.images[by_id[i][0]]) for i in ids])
    emb = np.asarray(fn(reps), np.float64)
    results: dict[int, IdentityCheck] = {}
    for ident, e in zip(ids, emb, strict=True):
        bad = identity_violations(
            e, accepted=acc, real=real, uniqueness_threshold=threshold, real_person_threshold=rthr
        )
        if bad:
            v = bad[0]
            results[ident] = IdentityCheck(False, v.label, v.cosine, v.detail, v.code)
            continue
        sim, lab = acc.most_similar(e)
        acc.add(f"identity {ident}", e, ident)
        results[ident] = IdentityCheck(True, lab, sim)
    keep = np.array([results[int(lab)].accepted for lab in faceset.labels], bool)
    prov = list(faceset.provenance)
    for i in np.nonzero(keep)[0]:
        r = results[int(faceset.labels[i])]
        sim = r.similarity if np.isfinite(r.similarity) else -1.0
        prov[i] = prov[i].derive("identity_check", extra={"nearest_identity_cosine": round(float(sim), 6)})
    full = faceset.derived(faceset.images, faceset.labels, prov, faceset.sources)
    return full.select(keep), results


def identity_centers(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class ids sorted, unit centres [C, D])``: mean of L2-normalised embeddings, normalised again."""
    emb = l2_normalize(embeddings)
    lab = np.asarray(labels)
    if emb.shape[0] != lab.shape[0]:
        raise InputError(f"{emb.shape[0]} embeddings for {lab.shape[0]} labels", where="identity centres")
    ids, inv = np.unique(lab, return_inverse=True)
    sums = np.zeros((len(ids), emb.shape[1]))
    np.add.at(sums, inv, emb)
    return ids, l2_normalize(sums)


# ----------------------------------------------------------------------------- one index per run
#: Marker file that ``fdta run`` writes into a run's index folder (see :func:`prepare_run_index`).
RUN_INDEX_MARKER = "fdta_identity_index.json"


def _chunk_file(start: int, end: int) -> str:
    return f"chunk-{int(start):09d}-{int(end):09d}{INDEX_SUFFIX}"


def _parse_chunk_file(name: str) -> tuple[int, int] | None:
    if not (name.startswith("chunk-") and name.endswith(INDEX_SUFFIX)):
        return None
    parts = name[len("chunk-") : -len(INDEX_SUFFIX)].split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def prepare_run_index(folder: str | os.PathLike, run: dict[str, Any] | None = None) -> Path:
    """Create a run's identity-index folder with its marker (idempotent)."""
    import json

    from ..fsutil import atomic_write_text

    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    if not (p / RUN_INDEX_MARKER).is_file():
        atomic_write_text(p / RUN_INDEX_MARKER, json.dumps({"kind": "fdta identity index", **(run or {})}))
    return p


class RunIndex:
    """The identity index of one run: a folder holding one FAISS index per chunk
    (``chunk-<start>-<end>.faiss``, written atomically when the chunk's identities are accepted).

    A chunk consults the indexes of the chunks that precede it in identity order (deterministic: with
    one server they are all done; chunks that run at the same time on several servers cannot see each
    other, which ``fdta audit`` of the merged set catches).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def chunk_files(self) -> list[tuple[int, int, Path]]:
        if not self.folder.is_dir():
            return []
        out = []
        for f in self.folder.iterdir():
            rng = _parse_chunk_file(f.name)
            if rng is not None and f.is_file():
                out.append((rng[0], rng[1], f))
        return sorted(out)

    def prior(self, start: int, *, repair_of: tuple[int, Sequence[int]] | None = None) -> IdentityIndex:
        """Every identity accepted by chunks that end at or before ``start``.

        ``repair_of=(end, ids)``: a repair round of chunk ``[start, end)`` regenerates ``ids``; it must also
        stay away from the identities the chunk itself already accepted (all but ``ids``, whose earlier
        faces were dropped downstream and are replaced).
        """
        out = IdentityIndex()
        for s, e, f in self.chunk_files():
            if e <= start:
                out.merge_from(IdentityIndex.load(f))
            elif repair_of is not None and (s, e) == (start, repair_of[0]):
                out.merge_from(IdentityIndex.load(f).without(repair_of[1]))
        log.info("identity index %s: %d identities of earlier chunks", self.folder, len(out))
        return out

    def save_chunk(
        self, start: int, end: int, index: IdentityIndex, *, replacing: Sequence[int] | None = None
    ) -> Path:
        """Persist a chunk's accepted identities (replacing an earlier attempt of the same chunk).

        ``replacing``: a repair round of the chunk regenerated these ids; their entries in the chunk's
        index are replaced by ``index`` and every other entry is kept.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / _chunk_file(start, end)
        if replacing is not None and path.is_file():
            merged = IdentityIndex.load(path).without(replacing)
            merged.merge_from(index)
            index = merged
        index.save(path)
        return path

    def all(self) -> IdentityIndex:
        out = IdentityIndex()
        for _s, _e, f in self.chunk_files():
            out.merge_from(IdentityIndex.load(f))
        return out


# ----------------------------------------------------------------------------- real people
def subject_embeddings(
    images: np.ndarray, subjects: Sequence[str], embed: Any, *, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Identity embedding of every real subject (mean of its images' unit embeddings, normalised):
    ``embed`` maps uint8 [N,112,112,3] aligned faces to [N, D]."""
    out: dict[str, np.ndarray] = {}
    if not len(images):
        return out
    embs = []
    for s in range(0, len(images), batch_size):
        embs.append(np.asarray(embed(images[s : s + batch_size]), np.float64))
    e = l2_normalize(np.concatenate(embs))
    order: dict[str, list[int]] = {}
    for i, subj in enumerate(subjects):
        order.setdefault(str(subj), []).append(i)
    for subj, idx in order.items():
        out[subj] = l2_normalize(e[idx].mean(axis=0))
    return out


def model_file_id(models: Any, role: str = "recognizer") -> str:
    """A cache key for one model of a face pack (``role``: recognizer, detector): its file's path, size
    and modification time, so a cache made with another model file is never reused ("" when unknown)."""
    path = getattr(getattr(models, role, None), "path", None)
    if path is None:
        return ""
    try:
        st = Path(path).stat()
    except OSError:
        return ""
    return f"{role}:{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def bank_subject_embeddings(
    bank: Any,
    embed: Any,
    *,
    names: Sequence[str] | set[str] | None = None,
    cache_id: str = "",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Identity embedding of the subjects of a reference bank (:class:`fdta_core.stg.ReferenceBank`),
    computed streaming over the bank (never all of its faces at once): only ``names`` when given (the
    CSIM leak check needs just the subjects a chunk's images were styled after), else every subject
    (the ACG's real-person check), cached beside an indexed bank under ``cache_id``
    (:func:`model_file_id` of the recogniser)."""
    subjects, emb = bank.subject_embeddings(embed, names=names, cache_id=cache_id, batch_size=batch_size)
    return dict(zip(subjects, emb, strict=True))


def real_index(
    subjects: dict[str, np.ndarray] | None = None,
    sets: Sequence[tuple[str, np.ndarray]] = (),
    *,
    label: str = "reference subject",
) -> IdentityIndex:
    """One index of real people: the STG reference subjects plus user sets ``(name, [N, D])``."""
    out = IdentityIndex()
    for k, (subj, e) in enumerate((subjects or {}).items()):
        out.add(f"{label} {subj}", e, k)
    for name, arr in sets:
        a = unit_rows(arr, f"real set {name}")
        out.extend([f"person {j} of {name}" for j in range(len(a))], a, list(range(len(a))))
    return out


def resolve_index_folder(
    name: str, roots: Sequence[str | os.PathLike], *, where: str = "identity_index"
) -> Path:
    """Where a node keeps the run's identity index: a folder ``fdta run`` prepared (it holds
    :data:`RUN_INDEX_MARKER`), or a name resolved inside the output ``roots`` (created if new)."""
    from ..fsutil import resolve_inside

    raw = Path(os.path.expanduser(str(name).strip()))
    if raw.is_absolute() and (raw / RUN_INDEX_MARKER).is_file() and ".." not in raw.parts:
        return raw
    return prepare_run_index(resolve_inside(str(name), list(roots), where=where))
