"""``fdta audit DATASET``: duplicate identities and real people in a finished data set (exit 0/1/2)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from .report import add_pack_location_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="find duplicate identities and identities matching real people; optionally write the set without them",
        description="Embeds every identity of DATASET (mean of its L2-normalised ArcFace image embeddings), "
        "lists identity pairs with cosine >= T inside it and identities with cosine >= T to any identity of "
        "each REAL set (a data-set folder or an .npy of [N, D] embeddings). Exit status: 0 nothing flagged, "
        "1 something flagged, 2 bad input. Up to 50000 identities the search is exact; above, clustered "
        "(near-linear, may miss a few pairs; --exact forces the exact search).",
    )
    p.add_argument("dataset", type=Path, help="data-set folder holding train.rec, train.idx, property")
    p.add_argument(
        "--real",
        action="append",
        default=[],
        metavar="REAL",
        help="real set: data-set folder, .npy of [N, D] embeddings, or a folder of photos (one subfolder per "
        "person, or one photo per person) (repeatable)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the embeddings of photo folders are cached (default $FDTA_CACHE_DIR, else "
        "~/.cache/fdta/real_sets; never inside the photo folder)",
    )
    p.add_argument("--pack", required=True, help="insightface pack for embeddings, e.g. buffalo_l")
    add_pack_location_args(p)
    p.add_argument("--threshold", type=float, default=0.3, help="same-identity cosine threshold (0.3)")
    p.add_argument("--exact", action="store_true", help="exact search at any size (quadratic)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per ArcFace batch")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--write-filtered",
        type=Path,
        default=None,
        metavar="OUT",
        help="write DATASET without the flagged identities",
    )
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from ..dataset.merge import filter_dataset
    from ..faces.audit import audit_identities, dataset_identities, real_identities
    from ..faces.identity import check_threshold
    from ..faces.realset import default_cache_dir
    from .rec import _bar
    from .report import load_pack

    check_threshold(args.threshold, "--threshold")
    # paths first: a mistyped one is reported before the face models load (seconds on a real pack)
    for where, path in [("DATASET", args.dataset), *(("--real", r) for r in args.real)]:
        if not Path(path).exists():
            raise InputError(
                f"{path} does not exist", where=where, fix="give the path of a data set, folder or .npy."
            )
    models = load_pack(args)
    progress, close = _bar("embedding")
    try:
        data = dataset_identities(args.dataset, models, batch_size=args.batch_size, progress=progress)
    finally:
        close()
    cache = args.cache_dir or default_cache_dir()
    real = [real_identities(r, models, batch_size=args.batch_size, cache_dir=cache) for r in args.real]
    result = audit_identities(data, real, args.threshold, exact=args.exact)
    written = None
    if args.write_filtered is not None:
        written = filter_dataset(
            args.dataset,
            args.write_filtered,
            result.flagged,
            reason=f"fdta audit --threshold {args.threshold}",
        )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{result.identities} identities, threshold {result.threshold}")
        for a, b, c in result.duplicate_pairs:
            print(f"duplicate: {a} and {b} (cos {c:.3f})")
        for lab, k, rl, c in result.real_matches:
            print(f"real person: {lab} matches {args.real[k]} {real[k].label_text(rl)} (cos {c:.3f})")
        print(f"flagged: {len(result.flagged)} identit{'y' if len(result.flagged) == 1 else 'ies'}")
        if written:
            print(f"wrote {written['path']}: {written['images']} images, {written['classes']} identities")
    if written and args.json:
        print(f"wrote {written['path']}", file=sys.stderr)
    return 1 if result.flagged else 0
