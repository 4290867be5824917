"""``fdta stg``: DCFace mixer checkpoints (convert to safetensors, inspect)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("stg", help="STG (DCFace mixer) checkpoints")
    sub = p.add_subparsers(dest="stg_command", metavar="SUBCOMMAND")

    c = sub.add_parser(
        "convert",
        help="released DCFace checkpoint -> safetensors with only the sampling-path weights",
        description="Read a DCFace Lightning checkpoint without executing pickled code, keep the EMA UNet, "
        "ID encoder, style backbone and style head, and write them with a small settings JSON (grid size, "
        "widths) to a safetensors file that FDTASTGLoader reads.",
    )
    c.add_argument("ckpt", type=Path, help="dcface_5x5.ckpt / dcface_3x3.ckpt (or a safetensors file)")
    c.add_argument("out", type=Path, help="output .safetensors")
    c.add_argument(
        "--style-backbone",
        type=Path,
        help="AdaFace IR-50 checkpoint (adaface_ir50_casia.ckpt) "
        "when the mixer checkpoint lacks recognition_model.backbone.*",
    )
    c.add_argument(
        "--dtype", choices=sorted(_DTYPES), default="fp32", help="storage precision (default fp32)"
    )
    c.add_argument(
        "--num-head-channels",
        type=int,
        default=None,
        help="attention head width (DCFace: 64, the default; tiny test models differ)",
    )
    c.add_argument(
        "--no-ema", action="store_true", help="use the training UNet model.* instead of the EMA copy"
    )
    c.add_argument("--json", action="store_true", help="print the load report as JSON")
    c.set_defaults(func=_convert)

    i = sub.add_parser(
        "inspect", help="print the settings and key report of a checkpoint (nothing is executed)"
    )
    i.add_argument("ckpt", type=Path)
    i.add_argument("--num-head-channels", type=int, default=None)
    i.set_defaults(func=_inspect)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _report(weights) -> dict:
    d = weights.report.to_dict()
    d["grid"] = weights.config.grid
    d["config"] = weights.config.to_dict()
    return d


def _convert(args: argparse.Namespace) -> int:
    from ..stg.checkpoint import convert

    if args.out.suffix != ".safetensors":
        from ..errors import InputError

        raise InputError(f"{args.out} must end in .safetensors", where="fdta stg convert OUT")
    weights = convert(
        args.ckpt,
        args.out,
        style_backbone=args.style_backbone,
        dtype=_DTYPES[args.dtype],
        num_head_channels=args.num_head_channels,
        use_ema=not args.no_ema,
    )
    if args.json:
        print(json.dumps(_report(weights), indent=1, sort_keys=True))
    else:
        print(weights.report.summary())
        print(f"wrote {args.out} (grid {weights.config.grid}x{weights.config.grid})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ..stg.checkpoint import check_against_model, load_stg_weights
    from ..stg.model import STGModel

    weights = load_stg_weights(args.ckpt, num_head_channels=args.num_head_channels)
    with torch.device("meta"):
        model = STGModel(weights.config)
    check_against_model(weights, model)
    print(json.dumps(_report(weights), indent=1, sort_keys=True))
    return 0
