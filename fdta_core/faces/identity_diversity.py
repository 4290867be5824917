"""Identity diversity of a set of identity embeddings: how spread the identities are on the hypersphere.

* **Pairwise similarity distribution**: the cosine of every pair of identities (quantiles, the 99th
  percentile, a histogram). Computed block by block with FAISS' BLAS kernels
  (``faiss.pairwise_distances``), exact quantiles up to :data:`EXACT_PAIRS` pairs and a histogram of
  :data:`FINE_BINS` bins (resolution 0.001) above; above :data:`MAX_IDENTITIES` identities a fixed,
  seeded sample of them is used (said so in the result).
* **Nearest-identity similarity**: each identity's cosine to its closest other identity (``faiss.knn``):
  the packing margin that uniqueness thresholds act on.
* **Vendi score** (Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine
  Learning", TMLR 2023): ``exp(-sum_i l_i log l_i)`` over the eigenvalues ``l_i`` of ``K / n``, ``K`` the
  cosine-similarity matrix of the ``n`` unit embeddings: the effective number of distinct identities
  (1 when all are the same, ``n`` when all are orthogonal). The nonzero eigenvalues of ``X X^T / n``
  equal those of ``X^T X / n``, so it is computed from the ``d x d`` matrix: linear in ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .identity import _faiss, unit_rows

#: Up to this many pairs the quantiles are exact (every similarity is kept in memory, 16 MB at most).
EXACT_PAIRS = 2_000_000
#: Above this many identities a seeded sample of this size is used for the pairwise distribution.
MAX_IDENTITIES = 20_000
#: Histogram bins over [-1, 1] when the quantiles come from the histogram.
FINE_BINS = 2000
#: Bins of the histogram that reports and plots show.
SHOW_BINS = 40
QUANTILES = (0.5, 0.9, 0.99)


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score of the rows of ``embeddings`` under cosine similarity (see the module docstring)."""
    x = unit_rows(embeddings, "vendi score").astype(np.float64)
    n = len(x)
    if n == 0:
        return 0.0
    cov = (x.T @ x) / n  # d x d; same nonzero eigenvalues as K / n
    lam = np.linalg.eigvalsh(cov)
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()  # trace(K/n) = 1 exactly for unit rows; renormalise rounding
    return float(math.exp(-float(np.sum(lam * np.log(lam)))))


@dataclass
class SimilarityStats:
    """The pairwise and nearest-identity cosine distributions of a set of identities."""

    identities: int
    pairs: int
    sampled: int | None
    exact: bool
    quantiles: dict[str, float]
    mean: float
    max: float
    histogram: dict[str, Any]
    nearest: dict[str, float] = field(default_factory=dict)
    vendi: float | None = None

    @property
    def p99(self) -> float | None:
        return self.quantiles.get("p99")

    def to_dict(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "pairs": self.pairs,
            "sampled_identities": self.sampled,
            "exact_quantiles": self.exact,
            "quantiles": self.quantiles,
            "p99": self.p99,
            "mean": self.mean,
            "max": self.max,
            "histogram": self.histogram,
            "nearest_identity": self.nearest,
            "vendi_score": self.vendi,
        }

    def summary_line(self) -> str:
        if not self.pairs:
            return f"identity diversity: {self.identities} identities, no pairs"
        q = self.quantiles
        near = (
            f"; nearest other identity: median {self.nearest['p50']:.3f}, max {self.nearest['max']:.3f}"
            if self.nearest
            else ""
        )
        vendi = f"; Vendi score {self.vendi:.2f} of {self.identities}" if self.vendi is not None else ""
        samp = f" (sample of {self.sampled})" if self.sampled else ""
        return (
            f"identity diversity: pairwise cosine of {self.pairs} pairs{samp}: median {q['p50']:.3f}, "
            f"p90 {q['p90']:.3f}, p99 {q['p99']:.3f}, max {self.max:.3f}{near}{vendi}"
        )

    def text_histogram(self, width: int = 40) -> list[str]:
        """The shown histogram as text rows (for node reports)."""
        counts = self.histogram["counts"]
        edges = self.histogram["edges"]
        top = max(counts) if counts else 0
        rows = []
        for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
            if c:
                bar = "#" * max(1, round(width * c / top))
                rows.append(f"  [{lo:+.2f}, {hi:+.2f}) {c:>8d} {bar}")
        return rows


def _quantile_from_hist(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    cum = np.cumsum(counts)
    total = cum[-1]
    target = q * (total - 1) + 1  # rank of the quantile (1-based, like numpy's linear method at the ends)
    i = int(np.searchsorted(cum, target, side="left"))
    return float(edges[min(i + 1, len(edges) - 1)])


def similarity_stats(
    embeddings: np.ndarray,
    *,
    block: int = 2048,
    max_identities: int = MAX_IDENTITIES,
    seed: int = 0,
    vendi: bool = True,
) -> SimilarityStats:
    """Distribution of the pairwise identity cosines of ``embeddings`` ([N, D], any norm)."""
    faiss = _faiss()
    x = unit_rows(embeddings, "identity diversity")
    n_all = len(x)
    v = vendi_score(x) if (vendi and n_all) else None
    sampled = None
    if n_all > max_identities:
        rng = np.random.default_rng(seed)
        x = x[np.sort(rng.choice(n_all, size=max_identities, replace=False))]
        sampled = max_identities
    n = len(x)
    pairs = n * (n - 1) // 2
    show_edges = np.linspace(-1.0, 1.0, SHOW_BINS + 1)
    if pairs == 0:
        return SimilarityStats(
            n_all, 0, sampled, True, {}, float("nan"), float("nan"),
            {"edges": show_edges.round(4).tolist(), "counts": [0] * SHOW_BINS}, {}, v,
        )  # fmt: skip
    exact = pairs <= EXACT_PAIRS
    fine_edges = np.linspace(-1.0, 1.0, FINE_BINS + 1)
    fine = np.zeros(FINE_BINS, np.int64)
    kept: list[np.ndarray] = []
    total = 0.0
    top = -math.inf
    for s in range(0, n, block):
        q = x[s : s + block]
        sims = faiss.pairwise_distances(q, x[s:], metric=faiss.METRIC_INNER_PRODUCT)
        # the upper triangle: row r of the block pairs with columns after it
        rows = np.arange(len(q))[:, None]
        cols = np.arange(sims.shape[1])[None, :]
        vals = np.clip(sims[cols > rows].astype(np.float64), -1.0, 1.0)
        total += float(vals.sum())
        top = max(top, float(vals.max())) if len(vals) else top
        fine += np.histogram(vals, bins=fine_edges)[0]
        if exact:
            kept.append(vals)
    if exact:
        allv = np.concatenate(kept)
        quant = {f"p{round(100 * p)}": float(np.quantile(allv, p)) for p in QUANTILES}
    else:
        quant = {f"p{round(100 * p)}": _quantile_from_hist(fine, fine_edges, p) for p in QUANTILES}
    shown = fine.reshape(SHOW_BINS, FINE_BINS // SHOW_BINS).sum(axis=1)
    # nearest other identity (exact k-NN in FAISS)
    sims, _ = faiss.knn(x, x, 2, metric=faiss.METRIC_INNER_PRODUCT)
    near = np.clip(sims[:, 1].astype(np.float64), -1.0, 1.0)
    nearest = {
        "p50": float(np.quantile(near, 0.5)),
        "p99": float(np.quantile(near, 0.99)),
        "max": float(near.max()),
        "mean": float(near.mean()),
    }
    return SimilarityStats(
        identities=n_all,
        pairs=pairs,
        sampled=sampled,
        exact=exact,
        quantiles={k: round(v_, 6) for k, v_ in quant.items()},
        mean=round(total / pairs, 6),
        max=round(top, 6),
        histogram={"edges": show_edges.round(4).tolist(), "counts": shown.astype(int).tolist()},
        nearest={k: round(v_, 6) for k, v_ in nearest.items()},
        vendi=None if v is None else round(v, 6),
    )
