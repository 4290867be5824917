"""``fdta train``: train an IResNet on a RecordIO set (presets + a flag for every recipe key), and
``fdta export-onnx``: export a trained backbone with insightface's ONNX convention."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing

from ..errors import ConfigError

log = logging.getLogger(__name__)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(subparsers) -> None:
    from ..train.recipes import PRESETS, TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train a face-recognition model (IResNet + CosFace/ArcFace) on a .rec set",
        description="Train (or resume) an IResNet on a RecordIO face set. Start from a preset and override any "
        "recipe key with its flag. Running again with the same --output resumes from the last checkpoint. "
        "Multi-GPU / multi-node: --nproc-per-node, --nnodes, --node-rank, --master-addr (torchrun).",
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="recipe preset (arcface_r50_ms1mv3, synthetic, tiny)"
    )
    p.add_argument("--config", help="a recipe JSON to start from (e.g. a run's recipe.json)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        kw: dict = {"dest": f.name, "default": None}
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "layers":
            kw["type"] = _int_list
            kw["metavar"] = "N,N,N,N"
        elif f.name == "val_bins":
            kw["nargs"] = "*"
            kw["metavar"] = "BIN"
        elif hint in (int, float, str):
            kw["type"] = hint
        elif f.name == "margin":
            kw["type"] = float
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kw["help"] = f"recipe key '{f.name}' (default {default!r})"
        p.add_argument(_flag(f.name), **kw)
    g = p.add_argument_group("processes")
    g.add_argument(
        "--nproc-per-node", type=int, default=1, help="processes (GPUs) per node; >1 uses torchrun"
    )
    g.add_argument("--nnodes", type=int, default=1, help="number of machines")
    g.add_argument("--node-rank", type=int, default=0, help="this machine's rank (0..nnodes-1)")
    g.add_argument("--master-addr", default="", help="address of node 0 (multi-node)")
    g.add_argument("--master-port", type=int, default=29500, help="port on node 0 (multi-node)")
    g.add_argument("--detach", action="store_true", help="start in the background and print the run state")
    g.add_argument("--status", action="store_true", help="print the state of the run in --output and exit")
    g.add_argument("--stop", action="store_true", help="ask the run in --output to checkpoint and stop")
    g.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "export-onnx",
        help="export a trained backbone to ONNX (insightface convention)",
        description="Input N x 3 x 112 x 112 RGB normalised (x-127.5)/127.5, output N x 512; checked against torch.",
    )
    e.add_argument(
        "checkpoint", help="model.pt of a run, a training checkpoint, or an arcface_torch backbone.pth"
    )
    e.add_argument("output", help="the .onnx file to write")
    e.add_argument("--opset", type=int, default=17)
    e.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    from ..train import launch
    from ..train.recipes import TrainConfig, make_config

    if args.status or args.stop:
        if not args.output:
            raise ConfigError("--status/--stop need --output RUN_DIR")
        state = launch.request_stop(args.output) if args.stop else launch.run_state(args.output)
        print(json.dumps(state, indent=1, default=str))
        return 0
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if args.config:
        base = TrainConfig.load(args.config).to_dict()
        if args.preset:
            raise ConfigError("give --preset or --config, not both")
        base.update({k: v for k, v in overrides.items() if v is not None})
        config = TrainConfig.from_dict(base)
    else:
        config = make_config(args.preset, **overrides)
    config.validate()
    if args.print_recipe:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    topo = launch.Topology(
        args.nproc_per_node, args.nnodes, args.node_rank, args.master_addr, args.master_port
    )
    run_dir, resuming = launch.prepare_run(config)
    print(f"{'resuming' if resuming else 'starting'} run in {run_dir}", file=sys.stderr)
    if args.detach:
        state = launch.start_detached(run_dir, topo)
        print(json.dumps(state, indent=1, default=str))
        return 0
    return launch.run_foreground(run_dir, topo)


def run_export(args: argparse.Namespace) -> int:
    from ..train.export import export_onnx

    out = export_onnx(args.checkpoint, args.output, opset=args.opset)
    print(out)
    return 0
