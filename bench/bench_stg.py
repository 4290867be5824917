"""STG sampling throughput: batched (identities x styles together) vs one image at a time, same run.

Tiny configuration (the real topology with small widths, random weights), CPU unless CUDA is present.
Prints images/s of both and the ratio. ``--quick`` keeps it well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fdta_core.stg import GenerationRequest, STGSampler
from fdta_core.testing.stg import tiny_model


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
    args = ap.parse_args()
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
    t_single, out_single = _run(sampler, req, args.steps, 1)
    t_batch, out_batch = _run(sampler, req, args.steps, args.batch)
    diff = int(np.abs(out_single.astype(int) - out_batch.astype(int)).max())
    res = {
        "device": args.device,
        "precision": str(sampler.dtype),
        "images": n,
        "steps": args.steps,
        "batch_size": min(args.batch, n),
        "single_images_per_s": round(n / t_single, 3),
        "batched_images_per_s": round(n / t_batch, 3),
        "ratio_batched_over_single": round(t_single / t_batch, 2),
        "max_uint8_difference_single_vs_batched": diff,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
