"""``fdta controls``: the per-identity ControlNet maps of a plan range, drawn from the attributes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "controls",
        help="draw the per-identity control maps (edges or OpenPose face) of identities [start, start+count)",
        description="Draw one ControlNet map per identity of the plan that `fdta plan` prints for the same "
        "--start/--count/--seed/--spec: the face outline, jaw, eyes, brows, nose and lips follow the "
        "identity's attributes, with a per-identity jitter of proportions, rotation, scale and position. "
        "Writes OUT/<index:09d>.png (white on black) and OUT/controls.json (attributes and drawing "
        "parameters per identity). The same identity always gets the same bytes.",
    )
    p.add_argument("--spec", help="attribute spec JSON file (default: the shipped default spec)")
    p.add_argument("--start", type=int, default=0, help="first identity index (default 0)")
    p.add_argument("--count", type=int, required=True, help="number of identities")
    p.add_argument("--seed", type=int, required=True, help="run seed (as for fdta plan)")
    p.add_argument(
        "--format",
        choices=("edges", "openpose"),
        default="edges",
        help="edges: Canny-like lines (canny ControlNet); openpose: 68 face landmarks + pupils as dots",
    )
    p.add_argument("--size", type=int, default=512, help="side of each map in pixels (default 512)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--grid", type=Path, default=None, help="also write a preview grid PNG here")
    p.add_argument("--columns", type=int, default=8, help="maps per row of the preview grid (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..acg.controls import DRAWING_VERSION, plan_maps, preview_grid
    from ..fsutil import atomic_write_bytes, atomic_write_text
    from ..imagecodec import encode_png
    from ..prompts.planner import build_plan
    from ..prompts.spec import load_spec

    spec = load_spec(args.spec)
    plan = build_plan(spec, args.start, args.count, args.seed)
    bar = tqdm(total=len(plan), desc="drawing", unit="map", file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        maps = plan_maps(plan, fmt=args.format, size=args.size, progress=progress)
    finally:
        bar.close()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec_i, img, params in zip(plan.identities, maps.images, maps.params, strict=True):
        name = f"{int(spec_i.index):09d}.png"
        atomic_write_bytes(args.out / name, encode_png(img))
        rows.append(
            {
                "index": int(spec_i.index),
                "file": name,
                "attributes": dict(spec_i.attributes),
                "parameters": params.to_dict(),
            }
        )
    doc = {
        "kind": "fdta control maps",
        "format": args.format,
        "size": args.size,
        "run_seed": args.seed,
        "start": args.start,
        "count": args.count,
        "spec_hash": plan.spec_hash,
        "drawing_version": DRAWING_VERSION,
        "identities": rows,
    }
    atomic_write_text(args.out / "controls.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    if args.grid is not None:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.grid, encode_png(preview_grid(maps, columns=max(1, args.columns))))
    print(f"wrote {len(rows)} {args.format} maps and controls.json to {args.out}")
    return 0
