"""``fdta`` command line: one sub-command module per area, each exposing ``register(subparsers)``.

The CLIs are the stable, scriptable face of the library (the nodes call the same functions). Output
meant for programs is JSON on stdout (``--json``); logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import FDTAError

#: Sub-command modules under ``fdta_core.cli``; each defines ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "plan",
    "controls",
    "rec",
    "report",
    "audit",
    "age",
    "run",
    "train",
    "verify",
    "stg",
    "models",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdta",
        description="FDTA: synthetic face datasets (RecordIO tools, prompt plans, training, evaluation).",
    )
    parser.add_argument("--version", action="version", version=f"fdta {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except FDTAError as exc:
        print(f"fdta: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fdta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
