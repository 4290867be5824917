"""GPU suite: absolute figures, GPU memory peaks and the achieved fraction of the device's bf16 matmul
peak (measured here, by the same script), for full-size random-weight models on CUDA.

Figures: bf16 matmul peak (8192^3 GEMMs); the ACG's SD 1.5 UNet + ControlNet at 512 px (64x64 latents,
SD 1.5's configuration through diffusers, random weights) in fp16, batch 8 with classifier-free guidance
(16 UNet + ControlNet evaluations per step); STG at full DCFace size (UNet 128 ch, mult 1,1,2,2,4,4) in
fp16 and bf16, channels-last, batch 64, 10 DDIM steps; the age shifter's SAM at full size (1024 px
StyleGAN2 decoder, pSp encoder) through the whole per-face path (``age_faces``) in fp16, batch 16;
IResNet-50 embedding at batch 256 (ArcFace r50 topology) in fp16; IResNet-50 training (CosFace head, SGD,
AMP fp16 + GradScaler) at batch 128. Each row has its GPU memory peak; rows with a FLOP count give the
fraction of the bf16 peak measured first. Without CUDA it says so and returns 0. ``bench/gpu_suite.sh``
runs this, ``bench_acg.py`` at 512 px through ComfyUI when ``COMFYUI_DIR`` is set, and every ratio bench.
``--quick`` shrinks repeats (not sizes).
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
    ap.add_argument("--quick", action="store_true", help="fewer repeats (the sizes stay full)")
    args = ap.parse_args()
    reps = 3 if args.quick else 10
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
    s = _timed(lambda: a @ b, sync, 2 * reps)
    peak = 2 * n**3 / s
    record("bf16 matmul 8192^3", peak / 1e12, "TFLOP/s")
    a = b = None  # free the GEMM operands

    # ACG: SD 1.5 UNet + ControlNet at 512 px (random weights, SD 1.5's shapes), fp16, CFG batch
    try:
        from diffusers import ControlNetModel, UNet2DConditionModel
    except ImportError:
        print("gpu_suite: diffusers missing (pip install diffusers): the SD 1.5 row is skipped")
    else:
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768).to(dev, torch.float16).eval()
        cnet = ControlNetModel.from_unet(unet).to(dev, torch.float16).eval()
        bs = 16  # 8 images x (cond, uncond)
        lat = torch.randn(bs, 4, 64, 64, device=dev, dtype=torch.float16)
        ctx = torch.randn(bs, 77, 768, device=dev, dtype=torch.float16)
        hint = torch.rand(bs, 3, 512, 512, device=dev, dtype=torch.float16)
        t = torch.tensor(500, device=dev)

        def sd_step():
            down, mid = cnet(lat, t, ctx, controlnet_cond=hint, return_dict=False)
            unet(lat, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)

        with torch.no_grad():
            s = _timed(sd_step, sync, reps)
        record("ACG SD1.5 UNet+ControlNet 512px fp16, batch 16", bs / s, "evals/s")
        rows[-1]["note"] = f"{8 / (30 * s):.2f} images/s at 30 steps with CFG"
        del unet, cnet, lat, ctx, hint
        torch.cuda.empty_cache()

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
    torch.cuda.empty_cache()

    # age shifter: SAM at full size (1024 px decoder), the whole per-face path, fp16
    from fdta_core.age import FULL_CONFIG
    from fdta_core.age.shift import age_faces
    from fdta_core.testing.age import tiny_sam

    sam = tiny_sam(0, FULL_CONFIG).to(dev).eval()
    faces = rng.integers(0, 256, (32, 112, 112, 3), dtype=np.uint8)
    ages = [20 + (i * 7) % 60 for i in range(len(faces))]
    run_age = lambda: age_faces(sam, faces, ages, batch_size=16, device=dev, dtype=torch.float16)  # noqa: E731
    s = _timed(run_age, sync, max(1, reps // 3))
    record("SAM 1024px age shift fp16, batch 16", len(faces) / s, "faces/s")
    sam = None
    torch.cuda.empty_cache()

    # IResNet-50 embedding (ArcFace r50 topology) and AMP training
    from fdta_core.iresnet import iresnet50

    net = iresnet50().to(dev).eval().to(memory_format=torch.channels_last)
    x = torch.randn(256, 3, 112, 112, device=dev).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        s = _timed(lambda: net(x), sync, reps)
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

    s = _timed(step, sync, reps)
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
            if r.get("note"):
                extra += f"  ({r['note']})"
            print(
                f"{r['name']:48s} {r['value']:10.1f} {r['unit']:14s} peak mem {r['peak_mem_gb']:.2f} GB{extra}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
