"""``fdta rec info|merge|shuffle|write`` and ``fdta rec2image``: RecordIO dataset tools."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _bar(desc: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (or nothing without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None, lambda: None
    bar = tqdm(desc=desc, unit="img", file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close


def _print(obj: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(obj, indent=1, sort_keys=True))
    else:
        print("\n".join(lines))


def _info(args: argparse.Namespace) -> int:
    from ..dataset import inspect

    progress, close = _bar("checking")
    try:
        report = inspect(args.path, decode=not args.no_decode, progress=progress)
    finally:
        close()
    lines = [
        f"path:     {report.path}",
        f"layout:   {report.layout}",
        f"images:   {report.images}",
        f"classes:  {report.classes}",
        f"records:  {report.records}",
        f"property: {report.property}",
        f"decoded:  {report.decoded}",
    ]
    if report.chunks is not None:
        lines.append(f"chunks:   {len(report.chunks)}")
    lines += [f"warning:  {w}" for w in report.warnings]
    lines += [f"ERROR:    {e}" for e in report.errors]
    lines.append("status:   OK" if report.ok else f"status:   BROKEN ({len(report.errors)} error(s))")
    _print(report.to_dict(), args.json, lines)
    return 0 if report.ok else 1


def _merge(args: argparse.Namespace) -> int:
    from ..dataset import merge
    from ..errors import InputError

    if args.audit and not args.pack:
        raise InputError(
            "--audit embeds every identity and needs --pack", where="rec merge", fix="add --pack buffalo_l."
        )
    if args.audit:
        from ..faces.identity import check_threshold

        check_threshold(args.threshold, "--threshold")

    progress, close = _bar("merging")
    try:
        summary = merge(args.out, args.paths, renumber=args.renumber, progress=progress)
    finally:
        close()
    lines = [
        f"merged {len(summary['sources'])} source(s) into {summary['path']}: {summary['images']} images, {summary['classes']} identities"
    ]
    flagged = False
    if args.audit:
        # the shards' identities meet here for the first time: check them across shards on the way
        from ..faces.audit import audit_identities, dataset_identities
        from .report import load_pack

        data = dataset_identities(args.out, load_pack(args))
        result = audit_identities(data, (), args.threshold)
        summary["audit"] = result.to_dict()
        flagged = bool(result.flagged)
        lines.append(
            f"audit: {len(result.duplicate_pairs)} duplicate pair(s) at cosine >= {result.threshold}; "
            f"flagged {result.flagged[:20]}"
            + (" (fdta audit OUT --write-filtered CLEAN drops them)" if flagged else "")
        )
    _print(summary, args.json, lines)
    return 1 if flagged else 0


def _shuffle(args: argparse.Namespace) -> int:
    from ..dataset import shuffle

    progress, close = _bar("shuffling")
    try:
        summary = shuffle(args.path, args.out, seed=args.seed, progress=progress)
    finally:
        close()
    _print(
        summary,
        args.json,
        [
            f"wrote {summary['images']} shuffled records (DALI layout, seed {summary['seed']}) to {summary['path']}"
        ],
    )
    return 0


def _rec2image(args: argparse.Namespace) -> int:
    from ..dataset import rec2image

    progress, close = _bar("extracting")
    try:
        summary = rec2image(args.path, args.out, progress=progress)
    finally:
        close()
    _print(
        summary,
        args.json,
        [f"wrote {summary['images']} images of {summary['classes']} identities to {summary['path']}"],
    )
    return 0


def _write(args: argparse.Namespace) -> int:
    """Write a saved faceset (``.npz`` from ``FaceSet.save_npz``) as a chunk of a dataset folder."""
    from ..dataset import write_faceset
    from ..faceset import FaceSet

    fs = FaceSet.load_npz(args.faceset)
    progress, close = _bar("writing")
    try:
        info = write_faceset(
            fs,
            args.dataset,
            start=args.start,
            count=args.count,
            workers=args.workers,
            progress=progress,
        )
    finally:
        close()
    d = info.to_dict()
    d["path"] = info.path
    _print(
        d,
        args.json,
        [f"committed chunk {info.name}: {info.images} images, {info.classes} identities at {info.path}"],
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("rec", help="RecordIO dataset tools (info, merge, shuffle, write)")
    rsub = rec.add_subparsers(dest="rec_command", metavar="ACTION")
    rec.set_defaults(func=lambda a: (rec.print_help(), 2)[1])

    p = rsub.add_parser("info", help="counts, layout and an integrity check of every record")
    p.add_argument("path", help="folder with train.rec/train.idx, a .rec file, or a dataset folder of chunks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--no-decode", action="store_true", help="check JPEG markers only (faster), no full decode"
    )
    p.set_defaults(func=_info)

    p = rsub.add_parser("merge", help="join chunks/datasets into one train.rec with contiguous identities")
    p.add_argument("out", help="output folder (replaced atomically if it holds an earlier merge)")
    p.add_argument("paths", nargs="+", help="chunk folders, dataset folders (chunks/) or merged outputs")
    p.add_argument(
        "--renumber",
        action="store_true",
        help="the paths are independent data sets whose identity ids may overlap (e.g. Syn-MS1M and "
        "Syn-MPIE): labels run over them in the order given, each set's identities kept apart",
    )
    p.add_argument(
        "--audit",
        action="store_true",
        help="after merging, find duplicate identities across the inputs (needs --pack); exit 1 if any",
    )
    p.add_argument("--pack", default=None, help="insightface pack for --audit, e.g. buffalo_l")
    p.add_argument("--insightface-dir", action="append", default=[], help="folder holding models/<pack>/")
    p.add_argument("--provider", default="auto", help="ONNX provider for --audit (default auto)")
    p.add_argument("--threshold", type=float, default=0.3, help="same-identity cosine for --audit (0.3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_merge)

    p = rsub.add_parser("shuffle", help="write the DALI layout (no header/identity records, shuffled)")
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (numpy RandomState)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_shuffle)

    p = rsub.add_parser("write", help="write a faceset .npz (FaceSet.save_npz) as a chunk of a dataset")
    p.add_argument("faceset", help=".npz written by FaceSet.save_npz")
    p.add_argument("dataset", help="dataset folder (chunks are created under DATASET/chunks/)")
    p.add_argument(
        "--start", type=int, default=None, help="first identity of the chunk (default: smallest label)"
    )
    p.add_argument(
        "--count", type=int, default=None, help="identities in the chunk (default: up to the largest label)"
    )
    p.add_argument("--workers", type=int, default=None, help="encoding threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_write)

    p = sub.add_parser("rec2image", help="extract a .rec into a folder per identity (JPEG bytes as stored)")
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_rec2image)
