"""STG sampling throughput: batched (identities x styles together) vs one image at a time, same run.

Tiny configuration (the real topology with small widths, random weights), CPU unless CUDA is present.
Prints images/s of both and the ratio, repeated side by side until the ratio's spread is under 10% (or a
time cap; ``bench/_steady.py``), with torch's threads pinned. ``--quick`` keeps it around a minute on 2
cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._steady import load_average, pin_threads, steady_ratio  # noqa: E402
from fdta_core.stg import GenerationRequest, STGSampler  # noqa: E402
from fdta_core.testing.stg import tiny_model  # noqa: E402


def _run(
    sampler: STGSampler, req: GenerationRequest, steps: int, batch_size: int
) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = sampler.generate(req, steps=steps, batch_size=batch_size)
    if sampler.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--identities", type=int, default=4)
    ap.add_argument("--styles", type=int, default=4, help="styles per identity")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--quick", action="store_true", help="2 identities x 2 styles, 3 steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores allowed)")
    ap.add_argument("--cap", type=float, default=None, help="seconds to repeat the comparison")
    args = ap.parse_args()
    threads = pin_threads(args.threads)
    if args.quick:
        args.identities, args.styles, args.steps = 2, 2, 3
    rng = np.random.default_rng(0)
    n = args.identities * args.styles
    req = GenerationRequest(
        id_images=rng.integers(0, 256, (args.identities, 112, 112, 3), dtype=np.uint8),
        id_index=np.repeat(np.arange(args.identities), args.styles),
        style_images=rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8),
        seeds=list(range(n)),
    )
    model = tiny_model(seed=0).to(args.device)
    sampler = STGSampler(model, args.device, args.precision)
    small = GenerationRequest(req.id_images[:1], req.id_index[:1], req.style_images[:1], req.seeds[:1])
    sampler.generate(small, steps=1)  # warm-up
    _t, out_single = _run(sampler, req, args.steps, 1)
    _t, out_batch = _run(sampler, req, args.steps, args.batch)
    diff = int(np.abs(out_single.astype(int) - out_batch.astype(int)).max())
    st = steady_ratio(
        lambda: n / _run(sampler, req, args.steps, args.batch)[0],
        lambda: n / _run(sampler, req, args.steps, 1)[0],
        cap_s=args.cap or (60 if args.quick else 180),
    )
    res = {
        "device": args.device,
        "precision": str(sampler.dtype),
        "images": n,
        "steps": args.steps,
        "batch_size": min(args.batch, n),
        "single_images_per_s": round(st.den_median, 3),
        "batched_images_per_s": round(st.num_median, 3),
        "ratio_batched_over_single": round(st.ratio, 2),
        "max_uint8_difference_single_vs_batched": diff,
        "threads": threads,
        "spread": round(st.spread, 4) if st.spread != float("inf") else None,
        "settled": st.settled,
    }
    print(json.dumps(res, indent=1))
    print(f"{st.line()}; load average {load_average():.1f}")


if __name__ == "__main__":
    main()
