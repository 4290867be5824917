"""``python -m fdta_core.train --config RUN_DIR/recipe.json``: one training process (torchrun starts N)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import FDTAError
from .recipes import TrainConfig
from .trainer import run_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fdta_core.train", description=__doc__)
    parser.add_argument(
        "--config", required=True, help="recipe JSON (written by fdta train / the launcher node)"
    )
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        state = run_training(TrainConfig.load(args.config))
    except FDTAError as exc:
        print(f"fdta train: error: {exc}", file=sys.stderr)
        return 2
    return 0 if state.get("status") in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
