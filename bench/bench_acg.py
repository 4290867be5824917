"""ACG sampling: many identities per sampler call vs one identity at a time, in the same run.

Runs the node's own sampling path (``nodes.nodes_acg.ComfyBatchSampler`` -> ``comfy.sample.sample_custom``
with a ControlNet, then ``fdta_core.acg.run_acg``) in-process on ComfyUI's CPU build, on random-weight
shallow SD 1.5 + ControlNet files written to a temporary folder, at a tiny resolution. Both modes sample
exactly the same candidates (same seeds, prompts, control images); only the grouping into sampler calls
differs. Prints images/s for each mode and the ratio; repeats are interleaved so machine load hits both.

Run it with ComfyUI's interpreter::

    COMFYUI_DIR=/path/to/ComfyUI $COMFYUI_DIR/.venv/bin/python bench/bench_acg.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _import_pack(tmp: Path):
    """Import this checkout as a package (the nodes use relative imports, as inside custom_nodes/)."""
    link = tmp / "pkgroot" / "ComfyUI_FDTA_bench"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(link.parent))
    import importlib

    return importlib.import_module("ComfyUI_FDTA_bench")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identities", type=int, default=6)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--batch", type=int, default=12, help="candidates per sampler call in batched mode")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 identities, 32x32, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.identities, args.size, args.repeats = 4, 32, 1
        args.batch = min(args.batch, args.identities * args.candidates)

    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir or not Path(comfy_dir, "main.py").is_file():
        print("set COMFYUI_DIR to a ComfyUI checkout and run with its interpreter", file=sys.stderr)
        return 2
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import logging

    logging.basicConfig(level=logging.WARNING)
    import comfy.controlnet
    import comfy.sd
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="fdta_bench_acg_") as tmp_s:
        tmp = Path(tmp_s)
        import importlib

        name = _import_pack(tmp).__name__
        sd = importlib.import_module(f"{name}.fdta_core.testing.sd")
        acg = importlib.import_module(f"{name}.fdta_core.acg")
        nodes_acg = importlib.import_module(f"{name}.nodes.nodes_acg")
        plan_mod = importlib.import_module(f"{name}.fdta_core.plan")
        edges_mod = importlib.import_module(f"{name}.fdta_core.acg.edges")
        faceset_mod = importlib.import_module(f"{name}.fdta_core.faceset")

        t0 = time.perf_counter()
        files = sd.write_random_sd_models(tmp / "models", seed=0)
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(files.checkpoint), output_vae=True, output_clip=True
        )
        cnet = comfy.controlnet.load_controlnet(str(files.controlnet))
        setup = time.perf_counter() - t0

        ids = tuple(
            plan_mod.IdentitySpec(
                index=i,
                attributes={"gender": "female" if i % 2 else "male"},
                prompt=f"a frontal portrait photo of a {'female' if i % 2 else 'male'} person, identity {i}",
                negative_prompt="blurry, lowres",
                gender="female" if i % 2 else "male",
                age=30,
            )
            for i in range(args.identities)
        )
        plan = plan_mod.IdentityPlan(run_seed=1, start=0, identities=ids)
        rng = np.random.default_rng(0)
        edges = (rng.random((4, args.size, args.size, 3)) > 0.9).astype(np.uint8) * 255
        # as the node does: maps at the sampling size (core), then ComfyUI's float IMAGE for the sampler
        maps = edges_mod.control_images(edges, args.size, args.size, acg.EdgeSettings("none"))
        controls = faceset_mod.uint8_to_image(maps)

        sampler = nodes_acg.ComfyBatchSampler(
            model=model, clip=clip, vae=vae, control_net=cnet, controls=controls, strength=1.0,
            start_percent=0.0, end_percent=1.0, steps=args.steps, cfg=5.0, sampler_name="euler",
            scheduler="normal", width=args.size, height=args.size,
        )  # fmt: skip
        n_images = args.identities * args.candidates
        modes = {
            f"batched ({args.batch} candidates/call)": args.batch,
            f"one identity per call ({args.candidates} candidates/call)": args.candidates,
        }

        def once(batch: int):
            settings = acg.ACGSettings(candidates=args.candidates, retries=0, batch_size=batch)
            t = time.perf_counter()
            res = acg.run_acg(plan, sampler, controls.shape[0], settings=settings)
            return time.perf_counter() - t, res.images()

        once(args.batch)  # warm-up: loads the models, encodes the prompts once (cached afterwards)
        times: dict[str, list[float]] = {m: [] for m in modes}
        outputs = {}
        for _ in range(args.repeats):
            for name, batch in modes.items():
                dt, imgs = once(batch)
                times[name].append(dt)
                outputs[name] = imgs
        a, b = outputs.values()
        diff = int(np.abs(a.astype(int) - b.astype(int)).max())

        print(f"ACG sampling bench: {args.identities} identities x {args.candidates} candidates = {n_images} images, "
              f"{args.size}x{args.size}, {args.steps} steps, euler, ControlNet on, CPU, {args.repeats} repeats "
              f"(setup {setup:.1f} s)")  # fmt: skip
        rates = {}
        for name, ts in times.items():
            med = statistics.median(ts)
            rates[name] = n_images / med
            print(
                f"  {name:<45s} median {med:6.2f} s  {rates[name]:6.2f} images/s  (runs: {', '.join(f'{t:.2f}' for t in ts)})"
            )
        r_batched, r_single = rates.values()
        print(f"  ratio batched / one-identity-at-a-time: {r_batched / r_single:.2f}x")
        print(f"  max pixel difference between the two modes: {diff} (same seeds; batched float math)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
