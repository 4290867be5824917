"""Stratified, seed-dependent assignment of attribute values to identity indices.

Requirement: for every prefix ``[0, m)`` of a run and every value ``j`` with proportion ``p_j``, the
achieved count ``c_j(m)`` satisfies ``|c_j(m) - p_j * m| < 1``.

Method. Read the bound as a scheduling problem: the ``c``-th occurrence of value ``j`` is a unit job
that may take slot ``m`` (1-based) only if ``c - p_j m < 1`` from then on and ``p_j m' - (c-1) < 1``
before, i.e. it has the integer window ``[floor((c-1)/p_j) + 1, ceil(c/p_j)]``. Tijdeman (1980) proved
that sequences with discrepancy below 1 exist for every proportion vector, so the job set is feasible.
For unit jobs with integer release times and deadlines on one machine, earliest-deadline-first is
optimal *whatever the tie-breaking*, and some job is always released (``sum ceil(p_j m) >= m``). So we
run EDF and break ties among the jobs with the earliest deadline at random from the run seed. Equal
proportions become randomly ordered round-robin blocks; the random ties also decorrelate fields.

All arithmetic is exact (integer weights). A sequence is simulated from index 0, so the value of
identity ``i`` never depends on the chunk it is computed in; states are cached per process so that
consecutive chunks only simulate the new part.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..seeds import derive_seed

_BLOCK = 4096


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


@dataclass
class _Stream:
    weights: tuple[int, ...]
    run_seed: int
    name: str
    total: int = 0
    counts: list[int] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    deadline: list[int] = field(default_factory=list)
    values: array = field(default_factory=lambda: array("H"))  # the sequence so far (value index per slot)

    def __post_init__(self) -> None:
        self.total = sum(self.weights)
        k = len(self.weights)
        self.counts = [0] * k
        # job c=1 of value j: window [1, ceil(W / w_j)]
        self.release = [1] * k
        self.deadline = [_ceil_div(self.total, w) for w in self.weights]
        self._ties = None
        self._ties_block = -1

    def _tie_uniforms(self, block: int) -> np.ndarray:
        if block != self._ties_block:
            rng = np.random.default_rng(derive_seed(self.run_seed, "strata", self.name, block))
            self._ties = rng.random(_BLOCK)
            self._ties_block = block
        return self._ties

    def extend(self, n: int) -> None:
        """Grow the sequence to at least ``n`` slots."""
        W = self.total
        w = self.weights
        k = len(w)
        counts, release, deadline, values = self.counts, self.release, self.deadline, self.values
        single = k == 1
        while len(values) < n:
            m = len(values) + 1  # 1-based slot being filled
            if single:
                j = 0
            else:
                best = None
                ties: list[int] = []
                for v in range(k):
                    if release[v] <= m:
                        d = deadline[v]
                        if best is None or d < best:
                            best = d
                            ties = [v]
                        elif d == best:
                            ties.append(v)
                if len(ties) == 1:
                    j = ties[0]
                else:
                    u = self._tie_uniforms((m - 1) // _BLOCK)[(m - 1) % _BLOCK]
                    j = ties[int(u * len(ties))]
                if deadline[j] < m:  # cannot happen (EDF is optimal and the job set is feasible)
                    raise AssertionError(f"stratification deadline missed for {self.name} at slot {m}")
            c = counts[j] + 1
            counts[j] = c
            # next job c+1: window [floor(c W / w) + 1, ceil((c+1) W / w)]
            release[j] = (c * W) // w[j] + 1
            deadline[j] = _ceil_div((c + 1) * W, w[j])
            values.append(j)


_CACHE: dict[tuple, _Stream] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 64


def stratified_values(weights: Sequence[int], run_seed: int, name: str, start: int, count: int) -> list[int]:
    """Value indices (into ``weights``) for slots ``[start, start + count)`` of the stream ``name``.

    ``weights`` are positive integers (proportion = weight / sum). The result depends only on
    ``weights``, ``run_seed``, ``name`` and the slot indices, never on how a run is chunked.
    """
    if start < 0 or count < 0:
        raise ValueError("start and count must be >= 0")
    if not weights or any(int(x) <= 0 for x in weights) or len(weights) > 65535:
        raise ValueError("weights must be 1 to 65535 positive integers")
    key = (tuple(int(x) for x in weights), int(run_seed), name)
    with _CACHE_LOCK:
        stream = _CACHE.get(key)
        if stream is None:
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.pop(next(iter(_CACHE)))
            stream = _CACHE[key] = _Stream(weights=key[0], run_seed=key[1], name=name)
        stream.extend(start + count)
        return stream.values[start : start + count].tolist()


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
