"""Audit and report-uniqueness time at 10K and 100K identity embeddings, and how it grows.

Random unit 512-d identity embeddings (nearly orthogonal, like ArcFace class centres of distinct
people) with 0.1% planted duplicate pairs (cosine 0.35-0.8). Times ``audit_identities`` (duplicate
pairs + flagged) and the report's uniqueness packing (``greedy_packing``) at each size in one run, prints
the recall of the planted pairs, and ends with ``audit growth 10K->100K: R.RRx`` (target R <= 15;
a quadratic search would be ~100x; the two sizes are timed again side by side until the ratio's spread
is under 10% or ``--cap`` seconds pass). Up to 50K identities the search is exact; above it clustered.

    python bench/bench_audit.py [--sizes 10000 100000] [--dim 512]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._steady import load_average, steady_ratio  # noqa: E402
from fdta_core.faces.audit import IdentitySet, audit_identities  # noqa: E402
from fdta_core.faces.metrics import greedy_packing  # noqa: E402


def planted_set(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = max(1, n // 1000)
    src = rng.choice(n // 2, k, replace=False)
    dst = n // 2 + rng.choice(n - n // 2, k, replace=False)
    for a, b in zip(src, dst, strict=True):
        c = rng.uniform(0.35, 0.8)
        r = rng.normal(size=dim)
        r -= (r @ x[a]) * x[a]
        r /= np.linalg.norm(r)
        x[b] = c * x[a] + np.sqrt(1 - c * c) * r
    return x, {(int(a), int(b)) for a, b in zip(src, dst, strict=True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--cap", type=float, default=120.0, help="seconds to repeat the growth measurement")
    args = ap.parse_args(argv)
    sets = []
    for n in args.sizes:
        x, planted = planted_set(n, args.dim)
        data = IdentitySet(f"random {n}", np.arange(n), x)
        sets.append(data)
        t0 = time.perf_counter()
        res = audit_identities(data, (), 0.3)
        t_audit = time.perf_counter() - t0
        t0 = time.perf_counter()
        kept = greedy_packing(x, 0.3)
        t_uniq = time.perf_counter() - t0
        found = {(a, b) for a, b, _ in res.duplicate_pairs}
        recall = len(found & planted) / len(planted)
        print(
            f"{n:>8} identities: audit {t_audit:8.2f} s ({res.search[0].method}), "
            f"report uniqueness {t_uniq:8.2f} s ({len(kept) / n:.4f}), "
            f"planted pairs found {len(found & planted)}/{len(planted)} (recall {recall:.2f}), "
            f"other pairs {len(found - planted)}",
            flush=True,
        )

    def rate(data: IdentitySet) -> float:
        t0 = time.perf_counter()
        audit_identities(data, (), 0.3)
        return 1.0 / (time.perf_counter() - t0)

    # the small size takes under a second, so one timing of it moves the ratio a lot: repeat both
    st = steady_ratio(lambda: rate(sets[0]), lambda: rate(sets[1]), cap_s=args.cap)
    print(f"{st.line()}; load average {load_average():.1f}")
    print(f"audit growth {args.sizes[0] // 1000}K->{args.sizes[1] // 1000}K: {st.ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
