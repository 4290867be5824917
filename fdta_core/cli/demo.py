"""``fdta demo``: the whole pipeline on a real ComfyUI server, in one command (see ``fdta_core.demo``)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline once (ComfyUI, Syn-MS1M, merge, report, training, verification)",
        description="Uses the ComfyUI at --comfyui / $COMFYUI_DIR (Python: $COMFYUI_PYTHON or its .venv), or "
        "installs one under WORKDIR; installs the pack's requirements into ComfyUI's Python when missing; "
        "uses the real model files found in the models folder (--models, default ComfyUI's) and tiny "
        "random-weight models for what is missing (all tiny: a plumbing demo, not faces); runs Syn-MS1M "
        "for a few identities through 'fdta run', merges, writes the report, trains a tiny IResNet and "
        "verifies it. The last line on stdout is one JSON object (dataset, identities, images, report, "
        "model, verify).",
    )
    p.add_argument(
        "--workdir", type=Path, default=Path(".fdta"), help="where everything goes (default .fdta)"
    )
    p.add_argument("--comfyui", type=Path, default=None, help="ComfyUI folder (default $COMFYUI_DIR)")
    p.add_argument(
        "--comfyui-python", type=Path, default=None, help="ComfyUI's Python (default $COMFYUI_PYTHON)"
    )
    p.add_argument(
        "--models", type=Path, default=None, help="models folder with real weights (default ComfyUI's)"
    )
    p.add_argument("--identities", type=int, default=4, help="identities to make (default 4)")
    p.add_argument("--chunk-size", type=int, default=2, help="identities per queued prompt (default 2)")
    p.add_argument("--images-per-identity", type=int, default=4, help="STG styles per identity (default 4)")
    p.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    p.add_argument("--train-steps", type=int, default=40, help="training iterations (default 40)")
    p.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    p.add_argument(
        "--no-install", action="store_true", help="never install ComfyUI; fail without COMFYUI_DIR"
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import INTERRUPTED, DemoConfig, run_demo

    cfg = DemoConfig(
        workdir=args.workdir,
        comfyui_dir=args.comfyui,
        comfyui_python=args.comfyui_python,
        models_dir=args.models,
        identities=args.identities,
        chunk_size=args.chunk_size,
        images_per_identity=args.images_per_identity,
        seed=args.seed,
        train_steps=args.train_steps,
        install_comfyui=not args.no_install,
        cpu=not args.gpu,
    )

    def say(msg: str) -> None:
        print(f"[fdta demo] {msg}", flush=True)

    def on_signal(signum, frame):  # Ctrl-C or a kill: the server is stopped on the way out
        INTERRUPTED.set()  # remembered: the exception below can be lost (see fdta_core.demo.INTERRUPTED)
        raise KeyboardInterrupt

    INTERRUPTED.clear()
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_demo(cfg, say)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)
    return 0
