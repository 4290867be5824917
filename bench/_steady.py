"""Shared bench helpers: repeat a side-by-side measurement until its ratio holds still, and pin threads.

On a shared machine one timing says little; a ratio of two paths measured back to back, repeated, says
more. :func:`steady_ratio` alternates the two measurements and stops once the spread of the last
``window`` ratios, ``(max - min) / median``, is under ``tolerance`` (10%), or when ``cap_s`` seconds
have passed; it reports the median ratio, the spread and whether it settled.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pin_threads(n: int | None = None) -> int:
    """Set every thread pool a bench touches to ``n`` (default: the cores this process may use).

    Environment variables only reach libraries loaded afterwards: call this before importing torch,
    onnxruntime or OpenCV where possible; torch and OpenCV are also set directly when already loaded."""
    n = int(n or cores())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)
    return n


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@dataclass
class Steady:
    """Result of :func:`steady_ratio`: ``ratio`` = median of num/den over the kept repeats."""

    ratio: float
    spread: float
    repeats: int
    settled: bool
    num: list[float] = field(default_factory=list)
    den: list[float] = field(default_factory=list)

    @property
    def num_median(self) -> float:
        return statistics.median(self.num)

    @property
    def den_median(self) -> float:
        return statistics.median(self.den)

    def line(self) -> str:
        state = "settled" if self.settled else "time cap reached, NOT settled"
        return f"spread {100 * self.spread:.1f}% over the last {min(self.repeats, 3)} of {self.repeats} repeats ({state})"


def steady_ratio(
    num: Callable[[], float],
    den: Callable[[], float],
    *,
    tolerance: float = 0.10,
    window: int = 3,
    min_repeats: int = 3,
    max_repeats: int = 12,
    cap_s: float = 120.0,
) -> Steady:
    """Repeat ``num()`` and ``den()`` (each returns a rate, e.g. images/s) back to back, alternating
    which goes first, until the last ``window`` ratios ``num/den`` spread less than ``tolerance``."""
    t0 = time.perf_counter()
    a: list[float] = []
    b: list[float] = []
    ratios: list[float] = []
    spread = float("inf")
    while True:
        if len(ratios) % 2:
            y, x = den(), num()
        else:
            x, y = num(), den()
        a.append(x)
        b.append(y)
        ratios.append(x / y)
        last = ratios[-window:]
        if len(ratios) >= max(min_repeats, window):
            med = statistics.median(last)
            spread = (max(last) - min(last)) / med if med else float("inf")
            if spread < tolerance:
                return Steady(med, spread, len(ratios), True, a[-window:], b[-window:])
        elif len(ratios) >= 2:
            med = statistics.median(last)
            spread = (max(last) - min(last)) / med if med else float("inf")
        if len(ratios) >= max_repeats or time.perf_counter() - t0 > cap_s:
            return Steady(statistics.median(last), spread, len(ratios), False, a[-window:], b[-window:])
