"""GPU suite: absolute figures, GPU memory peaks and the achieved fraction of the device's bf16 matmul
peak (measured here, by the same script), for full-size random-weight models on CUDA.

Figures: bf16 matmul peak (8192^3 GEMMs); STG at full DCFace size (UNet 128 ch, mult 1,1,2,2,4,4) in
fp16 and bf16, channels-last, batch 64, 10 DDIM steps; IResNet-50 embedding at batch 256 (ArcFace r50
topology) in fp16; IResNet-50 training (CosFace head, SGD, AMP bf16/fp16 + GradScaler) at batch 128.
Without CUDA it says so and returns 0. ``bench/gpu_suite.sh`` runs this and then every bench.
Not measured here yet: ACG SD 1.5 at 512 px (needs ComfyUI: bench_acg.py) and SAM at 1024 px.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(fn, sync, repeats: int) -> float:
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_suite: no CUDA device (torch.cuda.is_available() is False); nothing to measure here.")
        return 0
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    rows = []

    def record(name: str, value: float, unit: str, flops: float | None = None, seconds: float | None = None):
        row = {
            "name": name,
            "value": round(value, 2),
            "unit": unit,
            "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        if flops is not None and seconds:
            row["tflops"] = round(flops / seconds / 1e12, 1)
        rows.append(row)
        torch.cuda.reset_peak_memory_stats()

    # bf16 matmul peak
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    s = _timed(lambda: a @ b, sync, 20)
    peak = 2 * n**3 / s
    record("bf16 matmul 8192^3", peak / 1e12, "TFLOP/s")

    # STG at full DCFace size
    import numpy as np

    from fdta_core.stg.config import STGConfig
    from fdta_core.stg.model import STGModel
    from fdta_core.stg.sampler import GenerationRequest, STGSampler
    from fdta_core.testing.stg import randomize_

    model = randomize_(STGModel(STGConfig()), 0).eval().to(dev)
    rng = np.random.default_rng(0)
    nb = 64
    req = GenerationRequest(
        rng.integers(0, 256, (8, 112, 112, 3), dtype=np.uint8),
        np.arange(nb) % 8,
        rng.integers(0, 256, (nb, 112, 112, 3), dtype=np.uint8),
        list(range(nb)),
    )
    for prec in ("fp16", "bf16"):
        smp = STGSampler(model, dev, prec, channels_last=True)
        smp.generate(req, steps=2, batch_size=nb)
        sync()
        t = time.perf_counter()
        smp.generate(req, steps=10, batch_size=nb)
        sync()
        dt = time.perf_counter() - t
        record(f"STG full size {prec} channels-last, batch {nb}", nb * 10 / dt, "UNet evals/s")
    del model

    # IResNet-50 embedding (ArcFace r50 topology) and AMP training
    from fdta_core.iresnet import iresnet50

    net = iresnet50().to(dev).eval().to(memory_format=torch.channels_last)
    x = torch.randn(256, 3, 112, 112, device=dev).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        s = _timed(lambda: net(x), sync, 10)
    record("IResNet-50 embed fp16, batch 256", 256 / s, "images/s", flops=256 * 2 * 6.3e9, seconds=s)
    net.train()
    head = torch.nn.Linear(512, 10_000, bias=False).to(dev)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    xb = torch.randn(128, 3, 112, 112, device=dev).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 10_000, (128,), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            emb = torch.nn.functional.normalize(net(xb))
            logits = 64 * (emb @ torch.nn.functional.normalize(head.weight).t())
            loss = torch.nn.functional.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5)
        scaler.step(opt)
        scaler.update()

    s = _timed(step, sync, 10)
    record("IResNet-50 train AMP fp16, batch 128", 128 / s, "samples/s", flops=128 * 6 * 6.3e9, seconds=s)
    for r in rows:
        if "tflops" in r:
            r["fraction_of_bf16_peak"] = round(r["tflops"] * 1e12 / peak, 3)
    if args.json:
        print(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    else:
        print(f"device: {torch.cuda.get_device_name()}")
        for r in rows:
            extra = (
                f"  {r['tflops']} TFLOP/s = {r['fraction_of_bf16_peak']:.2f} of bf16 peak"
                if "tflops" in r
                else ""
            )
            print(
                f"{r['name']:45s} {r['value']:10.1f} {r['unit']:14s} peak mem {r['peak_mem_gb']:.2f} GB{extra}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
