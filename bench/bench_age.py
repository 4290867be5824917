"""Age shifter throughput: faces per second batched vs one at a time, in the same run (tiny SAM).

Runs the whole per-face path (112 -> 256 frame warp, SAM encoder pair + StyleGAN2 decoder, back to
112x112 uint8) on the tiny configuration of ../shared/testdata/sam (real architecture, small widths).
The two are repeated side by side until the ratio's spread is under 10% (or a time cap;
``bench/_steady.py``); torch's threads are pinned (``--threads``, default the cores allowed).

    python bench/bench_age.py [--quick] [--faces N] [--batch B] [--threads T] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._steady import load_average, pin_threads, steady_ratio  # noqa: E402
from fdta_core.age.shift import age_faces  # noqa: E402
from fdta_core.testing.age import TINY_CONFIG, tiny_sam  # noqa: E402


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer faces and one repeat (~20 s on 2 cores)")
    ap.add_argument("--faces", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the cores allowed)"
    )
    ap.add_argument("--cap", type=float, default=None, help="seconds to repeat the comparison")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    threads = pin_threads(args.threads)
    n = args.faces or (8 if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 2)
    device = torch.device(args.device)
    model = tiny_sam(0).to(device)
    faces = np.random.default_rng(0).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    ages = [20 + (i * 7) % 60 for i in range(n)]
    age_faces(model, faces[:2], ages[:2], batch_size=2)  # warm-up
    st = steady_ratio(
        lambda: n / _time(lambda: age_faces(model, faces, ages, batch_size=args.batch), repeats),
        lambda: n / _time(lambda: age_faces(model, faces, ages, batch_size=1), repeats),
        cap_s=args.cap or (60 if args.quick else 180),
    )
    t_single, t_batch = n / st.den_median, n / st.num_median
    a = age_faces(model, faces, ages, batch_size=1)
    b = age_faces(model, faces, ages, batch_size=args.batch)
    diff = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
    print(
        f"config: tiny SAM ({TINY_CONFIG.output_size} px decoder, {TINY_CONFIG.n_styles} styles), device {device}, "
        f"torch threads {threads}, {n} faces, best of {repeats} per measurement"
    )
    print(f"one at a time : {n / t_single:8.2f} faces/s  ({t_single:.2f} s)")
    print(f"batch {args.batch:<7d}: {n / t_batch:8.2f} faces/s  ({t_batch:.2f} s)")
    print(f"{st.line()}; load average {load_average():.1f}")
    print(f"ratio batched/single: {st.ratio:.2f}x   (max pixel difference between the two: {diff})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
