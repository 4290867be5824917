"""``fdta verify MODEL BIN... [--json]``: verification accuracy under the published protocol."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verification accuracy of a model on .bin benchmarks (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW)",
        description="Embeds every image and its mirror, sums and L2-normalises, and reports the mean and std of "
        "the 10-fold accuracies (thresholds 0..3.99 step 0.01 on squared distance), as published tables do. "
        "MODEL is a .pt/.pth IResNet checkpoint (loaded weights-only) or an .onnx file.",
    )
    p.add_argument("model", help="model.pt / backbone.pth / .onnx")
    p.add_argument("bins", nargs="+", metavar="BIN", help="benchmark .bin files (name = file stem)")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by benchmark name")
    p.add_argument(
        "--table",
        action="store_true",
        help="print FDTA Table 1's layout (LFW, CFP-FP, CPLFW, AgeDB, CALFW, average; a .bin goes into "
        "its column by file name: lfw, cfp_fp, cplfw, agedb_30, calfw) with the published rows beside "
        "the model's (with --json: that table as JSON)",
    )
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda (torch models); ONNX uses CUDA when available"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=0, help="input size (default: from the model, 112)")
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..eval.models import load_model_embedder
    from ..eval.verification import format_table, verify

    embed, size = load_model_embedder(args.model, args.device)
    bar = tqdm(total=0, unit="img", desc="embedding", file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    try:
        results = verify(
            embed, args.bins, batch_size=args.batch_size, size=args.size or size, progress=progress
        )
    finally:
        bar.close()
    if args.table:
        from pathlib import Path

        from ..eval.table import format_paper_table, paper_table

        table = paper_table(results, _model_label(Path(args.model)))
        print(json.dumps(table.to_dict(), indent=1) if args.json else format_paper_table(table))
    elif args.json:
        out = {
            r.name: {
                "accuracy_mean": r.accuracy_mean,
                "accuracy_std": r.accuracy_std,
                "pairs": r.pairs,
                "fold_accuracies": r.fold_accuracies,
                "best_thresholds": r.best_thresholds,
            }
            for r in results
        }
        print(json.dumps(out, indent=1))
    else:
        print(format_table(results))
    return 0


def _model_label(path) -> str:
    """A short row name: the run folder for ``<run>/model.pt``, else the file name."""
    return path.parent.name if path.name == "model.pt" and path.parent.name else path.name
