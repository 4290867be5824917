"""Data-set quality metrics (DCFace's definitions, DESIGN 5.5) computed on in-memory embeddings.

* **uniqueness**: greedy r-ball packing of the class centres. Centres are visited in order; a centre is
  packed when its cosine similarity to every packed centre is at most ``threshold`` (0.3: r is the L2
  radius ``sqrt(2 - 2 * 0.3)`` on the unit sphere). Uniqueness = packed / classes.
* **intra-class consistency**: share of images whose cosine similarity to their own class centre is
  above ``threshold`` (within r of it).
* **CSIM spread** and **attribute balance** (requested vs achieved proportions).

A class centre is the mean of the class's L2-normalised embeddings, normalised again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .csim import csim_histogram, l2_normalize
from .identity import DCFACE_THRESHOLD


def class_centers(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class ids sorted, unit centres [C, D])``."""
    emb = l2_normalize(embeddings)
    lab = np.asarray(labels)
    if emb.shape[0] != lab.shape[0]:
        raise InputError(f"{emb.shape[0]} embeddings for {lab.shape[0]} labels", where="metrics")
    ids, inv = np.unique(lab, return_inverse=True)
    sums = np.zeros((len(ids), emb.shape[1]))
    np.add.at(sums, inv, emb)
    return ids, l2_normalize(sums)


def greedy_packing(centers: np.ndarray, threshold: float = DCFACE_THRESHOLD) -> np.ndarray:
    """Indices of the centres a greedy r-ball packing keeps (visit order = array order)."""
    c = l2_normalize(centers)
    kept: list[int] = []
    if len(c) == 0:
        return np.zeros((0,), np.int64)
    block = np.zeros((0, c.shape[1]))
    for i in range(len(c)):
        if block.shape[0] == 0 or float((block @ c[i]).max()) <= threshold:
            kept.append(i)
            block = np.vstack([block, c[i]])
    return np.asarray(kept, np.int64)


def uniqueness(embeddings: np.ndarray, labels: np.ndarray, threshold: float = DCFACE_THRESHOLD) -> float:
    """Share of classes kept by a greedy r-ball packing of the class centres (1.0 = all distinct)."""
    _, centers = class_centers(embeddings, labels)
    if len(centers) == 0:
        return float("nan")
    return len(greedy_packing(centers, threshold)) / len(centers)


def intra_class_consistency(
    embeddings: np.ndarray, labels: np.ndarray, threshold: float = DCFACE_THRESHOLD
) -> tuple[float, dict[int, float]]:
    """Share of images within r of their class centre: overall and per class."""
    emb = l2_normalize(embeddings)
    ids, centers = class_centers(embeddings, labels)
    if len(ids) == 0:
        return float("nan"), {}
    inv = np.searchsorted(ids, np.asarray(labels))
    sims = np.sum(emb * centers[inv], axis=1)
    inside = sims > threshold
    per = {int(c): float(inside[inv == k].mean()) for k, c in enumerate(ids)}
    return float(inside.mean()), per


def csim_spread(csim: np.ndarray, bins: int = 20) -> dict[str, Any]:
    """Mean, std, quantiles and histogram of CSIM values (NaN = unknown, ignored)."""
    c = np.asarray(csim, np.float64)
    c = c[np.isfinite(c)]
    if c.size == 0:
        return {"count": 0}
    counts, edges = csim_histogram(c, bins)
    q = np.quantile(c, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "count": int(c.size),
        "mean": float(c.mean()),
        "std": float(c.std()),
        "min": float(c.min()),
        "max": float(c.max()),
        "quantiles": {k: float(v) for k, v in zip(("p05", "p25", "p50", "p75", "p95"), q, strict=True)},
        "histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]},
    }


def proportions(values: Sequence[Any]) -> dict[str, float]:
    """Share of each value (as text), ``None`` values ignored."""
    vals = [str(v) for v in values if v is not None and v != ""]
    if not vals:
        return {}
    cnt = Counter(vals)
    return {k: cnt[k] / len(vals) for k in sorted(cnt)}


def age_bucket(age: float | int | str | None, edges: Sequence[int] = (20, 30, 40, 50, 60)) -> str | None:
    """Age in years -> a bucket label such as ``"30-39"`` (``"<20"``, ``"60+"``); text ages pass through
    when they are not numbers (an attribute spec may ask for ``"young"``)."""
    if age is None or age == "":
        return None
    try:
        a = float(age)
    except (TypeError, ValueError):
        return str(age)
    if a < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if a < hi:
            return f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


@dataclass
class BalanceRow:
    attribute: str
    requested: dict[str, float]
    achieved: dict[str, float]

    @property
    def measured(self) -> bool:
        """Both sides are known (without a gender/age model nothing was achieved *measurably*)."""
        return bool(self.requested) and bool(self.achieved)

    @property
    def total_variation(self) -> float | None:
        """Half the L1 distance between requested and achieved proportions (0 = exact, 1 = disjoint);
        None when one side was not measured (a number there would be made up)."""
        if not self.measured:
            return None
        keys = set(self.requested) | set(self.achieved)
        return 0.5 * sum(abs(self.requested.get(k, 0.0) - self.achieved.get(k, 0.0)) for k in keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "requested": self.requested,
            "achieved": self.achieved,
            "total_variation": self.total_variation,
        }


def attribute_balance(
    requested: Mapping[str, Sequence[Any]], achieved: Mapping[str, Sequence[Any]]
) -> list[BalanceRow]:
    """Requested vs achieved proportions per attribute (e.g. ``gender`` asked in the plan vs predicted
    by the gender/age model). Inputs map attribute -> one value per identity (or image)."""
    rows = []
    for attr in sorted(set(requested) | set(achieved)):
        rows.append(
            BalanceRow(attr, proportions(requested.get(attr, [])), proportions(achieved.get(attr, [])))
        )
    return rows


@dataclass
class DatasetMetrics:
    images: int
    identities: int
    images_per_identity: dict[str, float]
    uniqueness: float | None = None
    consistency: float | None = None
    threshold: float = DCFACE_THRESHOLD
    csim: dict[str, Any] = field(default_factory=dict)
    balance: list[BalanceRow] = field(default_factory=list)
    per_identity_counts: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "identities": self.identities,
            "images_per_identity": self.images_per_identity,
            "uniqueness": self.uniqueness,
            "intra_class_consistency": self.consistency,
            "threshold": self.threshold,
            "csim": self.csim,
            "attribute_balance": [b.to_dict() for b in self.balance],
        }


def compute_metrics(
    labels: np.ndarray,
    embeddings: np.ndarray | None = None,
    *,
    csim: np.ndarray | None = None,
    requested: Mapping[str, Sequence[Any]] | None = None,
    achieved: Mapping[str, Sequence[Any]] | None = None,
    threshold: float = DCFACE_THRESHOLD,
) -> DatasetMetrics:
    """All metrics that the given inputs allow (embedding metrics need ``embeddings``)."""
    lab = np.asarray(labels, np.int64)
    ids, counts = np.unique(lab, return_counts=True)
    ipi = (
        {
            "mean": float(counts.mean()),
            "min": int(counts.min()),
            "max": int(counts.max()),
            "median": float(np.median(counts)),
        }
        if len(ids)
        else {}
    )
    m = DatasetMetrics(
        images=int(len(lab)),
        identities=int(len(ids)),
        images_per_identity=ipi,
        threshold=threshold,
        per_identity_counts={int(i): int(c) for i, c in zip(ids, counts, strict=True)},
    )
    if embeddings is not None and len(lab):
        m.uniqueness = uniqueness(embeddings, lab, threshold)
        m.consistency = intra_class_consistency(embeddings, lab, threshold)[0]
    if csim is not None:
        m.csim = csim_spread(csim)
    if requested or achieved:
        m.balance = attribute_balance(requested or {}, achieved or {})
    return m
