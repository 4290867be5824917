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

import heapq
import random
import threading
from array import array
from collections.abc import Sequence

from ..seeds import derive_seed


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class _Stream:
    """EDF state of one stream: a heap of released jobs keyed by (deadline, random tie key) and a heap
    of values whose next job is not released yet. Tie keys come from one sequential generator seeded by
    ``derive_seed(run_seed, "strata", name)``: the stream is always played from slot 1, so the keys of
    slot ``m`` never depend on how a run is chunked. Equal deadlines are won by the smallest i.i.d.
    key, i.e. uniformly at random."""

    def __init__(self, weights: tuple[int, ...], run_seed: int, name: str) -> None:
        self.weights = weights
        self.total = sum(weights)
        self.name = name
        self.counts = [0] * len(weights)
        self.values = array("H")  # the sequence so far (value index per slot)
        self._rand = random.Random(derive_seed(run_seed, "strata", name)).random
        # job c=1 of value j: window [1, ceil(W / w_j)], released at slot 1
        self._ready = [(_ceil_div(self.total, w), self._rand(), j) for j, w in enumerate(weights)]
        heapq.heapify(self._ready)
        self._waiting: list[tuple[int, int]] = []  # (release slot, value)

    def extend(self, n: int) -> None:
        """Grow the sequence to at least ``n`` slots."""
        W = self.total
        w = self.weights
        counts, values, ready, waiting, rand = (
            self.counts,
            self.values,
            self._ready,
            self._waiting,
            self._rand,
        )
        push, pop = heapq.heappush, heapq.heappop
        m = len(values)
        while m < n:
            m += 1  # 1-based slot being filled
            while waiting and waiting[0][0] <= m:
                _, v = pop(waiting)
                push(ready, (_ceil_div((counts[v] + 1) * W, w[v]), rand(), v))
            deadline, _, j = pop(ready)
            if deadline < m:  # cannot happen (EDF is optimal and the job set is feasible)
                raise AssertionError(f"stratification deadline missed for {self.name} at slot {m}")
            c = counts[j] + 1
            counts[j] = c
            values.append(j)
            # next job c+1 of value j: window [floor(c W / w) + 1, ceil((c+1) W / w)]
            release = (c * W) // w[j] + 1
            if release <= m + 1:
                push(ready, (_ceil_div((c + 1) * W, w[j]), rand(), j))
            else:
                push(waiting, (release, j))


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
            stream = _CACHE[key] = _Stream(key[0], key[1], name)
        stream.extend(start + count)
        return stream.values[start : start + count].tolist()


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
