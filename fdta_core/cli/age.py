"""``fdta age``: SAM age-model tools.

``fdta age convert CKPT OUT.safetensors`` reads SAM's ``sam_ffhq_aging.pt`` safely (no code executed),
checks every key and shape against the architecture, and writes one ``.safetensors`` file that the
loader node reads without any pickle. ``fdta age info CKPT`` prints what a file holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("age", help="SAM age model tools (convert, info)")
    sub = p.add_subparsers(dest="age_command", metavar="ACTION")
    conv = sub.add_parser("convert", help="convert sam_ffhq_aging.pt to .safetensors (checked, no pickle)")
    conv.add_argument("checkpoint", help="SAM checkpoint (.pt) or an already converted .safetensors")
    conv.add_argument("output", help="output .safetensors path")
    conv.add_argument("--force", action="store_true", help="overwrite an existing output file")
    conv.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    conv.set_defaults(func=_convert)
    info = sub.add_parser("info", help="check a SAM checkpoint and print its configuration")
    info.add_argument("checkpoint")
    info.set_defaults(func=_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _summary(ckpt) -> dict:
    n = sum(int(v.numel()) for v in ckpt.state_dict.values())
    return {
        "path": ckpt.path,
        "tensors": len(ckpt.state_dict),
        "elements": n,
        "config": ckpt.config.to_dict(),
        "n_styles": ckpt.config.n_styles,
        "opts": ckpt.opts,
    }


def _convert(args: argparse.Namespace) -> int:
    from ..age.loading import check_layout, read_checkpoint, save_safetensors

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"output {out} must end in .safetensors", where="fdta age convert")
    if out.exists() and not args.force:
        raise InputError(
            f"{out} already exists", where="fdta age convert", fix="pass --force to overwrite it."
        )
    ckpt = read_checkpoint(args.checkpoint)
    check_layout(ckpt.state_dict, ckpt.config)
    save_safetensors(ckpt, out)
    summary = {**_summary(ckpt), "output": str(out), "bytes": out.stat().st_size}
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(
            f"wrote {out} ({summary['tensors']} tensors + latent_avg, {summary['bytes'] / 1e6:.1f} MB, "
            f"{ckpt.config.output_size} px, {ckpt.config.n_styles} styles)"
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..age.loading import check_layout, read_checkpoint

    ckpt = read_checkpoint(args.checkpoint)
    check_layout(ckpt.state_dict, ckpt.config)
    json.dump({**_summary(ckpt), "layout": "ok"}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
