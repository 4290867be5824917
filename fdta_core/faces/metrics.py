"""Data-set quality metrics (DCFace's definitions, DESIGN 5.5) computed on in-memory embeddings.

* **uniqueness**: greedy r-ball packing of the class centres. Centres are visited in order; a centre is
  packed when its cosine similarity to every packed centre is below ``threshold`` (the identity rule) (0.3: r is the L2
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

from .csim import csim_histogram, l2_normalize
from .identity import DCFACE_THRESHOLD, greedy_unique, identity_centers


def class_centers(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(class ids sorted, unit centres [C, D])`` (the identity embedding of DESIGN 5.8)."""
    return identity_centers(embeddings, labels)


def greedy_packing(centers: np.ndarray, threshold: float = DCFACE_THRESHOLD) -> np.ndarray:
    """Indices of the centres a greedy r-ball packing keeps (visit order = array order): the identity
    rules' first-come-first-kept pass, near-linear through one index range search."""
    if len(centers) == 0:
        return np.zeros((0,), np.int64)
    return np.nonzero(greedy_unique(l2_normalize(centers), threshold))[0].astype(np.int64)


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


#: Plan fields whose per-value counts are quotas (the age quota is over the plan's age bins).
QUOTA_FIELDS: tuple[str, ...] = ("gender", "race", "age_bin")


def _quota_value(attrs: Mapping[str, Any], extra: Mapping[str, Any] | None, name: str) -> str | None:
    if name == "age_bin":
        v = (extra or {}).get("age_bin") or attrs.get("age_bin")
        return str(v) if v not in (None, "") else age_bucket(attrs.get("age"))
    v = attrs.get(name)
    return None if v in (None, "") else str(v)


@dataclass
class QuotaRow:
    """Planned vs written identities per value of one quota field; ``max_deviation`` in identities."""

    field: str
    planned: dict[str, int]
    written: dict[str, int]

    @property
    def max_deviation(self) -> int:
        keys = set(self.planned) | set(self.written)
        return max((abs(self.planned.get(k, 0) - self.written.get(k, 0)) for k in keys), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "planned": self.planned,
            "written": self.written,
            "max_deviation": self.max_deviation,
        }


def plan_vs_written(
    plan: Sequence[Mapping[str, Any]], written: Mapping[int, Mapping[str, Any]]
) -> tuple[list[QuotaRow], list[int]]:
    """Per quota field, how many identities the plan asked for per value and how many were written;
    and the planned identities that are missing. ``plan`` rows are ``fdta plan --json`` objects
    (``index``, ``attributes``, ``extra``); ``written`` maps identity -> its attributes."""
    rows = []
    planned_ids = {int(r["index"]): r for r in plan}
    for name in QUOTA_FIELDS:
        p = Counter(
            v
            for r in plan
            if (v := _quota_value(r.get("attributes") or {}, r.get("extra"), name)) is not None
        )
        w = Counter()
        for ident, attrs in written.items():
            src = planned_ids.get(int(ident))
            v = _quota_value((src or {}).get("attributes") or attrs, (src or {}).get("extra"), name)
            if v is not None:
                w[v] += 1
        if p or w:
            rows.append(QuotaRow(name, dict(sorted(p.items())), dict(sorted(w.items()))))
    missing = sorted(i for i in planned_ids if i not in written)
    return rows, missing


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
