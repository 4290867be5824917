"""``fdta report DATASET``: quality metrics of a written data set as an HTML page and a JSON summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="data-set quality report (uniqueness, consistency, CSIM, attribute balance) as HTML + JSON",
        description="Reads DATASET/train.rec (+ manifest.sqlite when present) and writes report.html and "
        "report.json. Uniqueness, intra-class consistency and achieved gender/age need an insightface pack "
        "(--pack, looked up in --insightface-dir/models/<pack>/).",
    )
    p.add_argument("dataset", type=Path, help="dataset folder holding train.rec, train.idx, property")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: DATASET/report)")
    p.add_argument(
        "--pack", default=None, help="insightface pack for embeddings, e.g. buffalo_l (default: none)"
    )
    add_pack_location_args(p)
    p.add_argument(
        "--threshold", type=float, default=0.3, help="cosine threshold of the DCFace metrics (0.3)"
    )
    p.add_argument(
        "--max-images", type=int, default=0, help="read only the first N images (whole identities)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="faces per ArcFace batch")
    p.add_argument(
        "--plan",
        type=Path,
        default=None,
        help="the run's plan (fdta plan --json): adds planned vs written identities per quota field",
    )
    p.add_argument(
        "--identity-index",
        type=Path,
        default=None,
        help="the run's identity index (folder of chunk-*.faiss, or one .faiss file): adds the diversity of "
        "the ACG's source faces (pairwise cosine distribution, p99, Vendi score)",
    )
    p.add_argument(
        "--style-model",
        type=Path,
        default=None,
        help="Inception-v3 ONNX (ImageNet weights, 2048-d pool features): with --references, DCFace's "
        "intra-class diversity",
    )
    p.add_argument(
        "--references",
        type=Path,
        default=None,
        help="the reference bank's folder or .rec (what FDTAReferenceBank read): the real images each "
        "identity was styled after, for the diversity metric",
    )
    p.add_argument("--diversity-k", type=int, default=3, help="k of the diversity metric's k-NN radius (3)")
    p.add_argument("--json", action="store_true", help="print the JSON summary on stdout")
    p.set_defaults(func=_report)


def add_pack_location_args(p: argparse.ArgumentParser) -> None:
    """``--insightface-dir`` and ``--provider``: where :func:`load_pack` looks and what it runs on."""
    p.add_argument(
        "--insightface-dir",
        action="append",
        default=[],
        help="folder holding models/<pack>/ (repeatable; default: $FDTA_INSIGHTFACE_DIR, ~/.insightface)",
    )
    p.add_argument("--provider", default="auto", help="ONNX provider: auto, CPU, CUDA, ... (default auto)")


def load_pack(args: argparse.Namespace):
    """The insightface pack ``args.pack`` from ``--insightface-dir`` (or $FDTA_INSIGHTFACE_DIR,
    ~/.insightface), recogniser required."""
    from ..faces import load_face_pack

    dirs = list(args.insightface_dir)
    if not dirs:
        env = os.environ.get("FDTA_INSIGHTFACE_DIR")
        dirs = [d for d in (env, os.path.expanduser("~/.insightface")) if d]
    return load_face_pack(dirs, args.pack, providers=args.provider, require=("recognizer",))


def _read_plan(path: Path) -> list[dict]:
    from ..errors import InputError

    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read plan {path}: {exc}", where="--plan", fix="pass fdta plan --json output."
        ) from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "index" in r for r in rows):
        raise InputError(f"{path} is not a plan", where="--plan", fix="pass the output of fdta plan --json.")
    return rows


def _read_identity_index(path: Path):
    """Unit source-face embeddings [N, D] from a run's identity-index folder or one index file."""
    from ..errors import InputError
    from ..faces.identity import IdentityIndex, RunIndex

    if path.is_file():
        return IdentityIndex.load(path).vectors()
    if path.is_dir():
        index = RunIndex(path).all()
        if len(index):
            return index.vectors()
    raise InputError(
        f"{path} holds no identity index",
        where="--identity-index",
        fix="pass the run's identity_index folder (chunk-*.faiss files written by the ACG sampler).",
    )


def _report(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..faces.report import load_dataset, write_report

    models = load_pack(args) if args.pack else None
    bar = tqdm(total=0, desc="reading", unit="img", file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    style = None
    if (args.style_model is None) != (args.references is None):
        from ..errors import InputError

        raise InputError(
            "the diversity metric needs both --style-model and --references",
            where="--style-model" if args.style_model is None else "--references",
        )
    if args.style_model is not None:
        from ..faces.diversity import StyleModel

        style = StyleModel(args.style_model, args.provider)
    out = args.out or (args.dataset / "report")
    try:
        data = load_dataset(
            args.dataset,
            models,
            max_images=args.max_images,
            batch_size=args.batch_size,
            progress=progress,
            style=style,
            references=args.references,
            diversity_k=args.diversity_k,
            cache_dir=out / "reference_index",
        )
    finally:
        bar.close()
    if args.plan is not None:
        data.plan = _read_plan(args.plan)
    if args.identity_index is not None:
        data.source_embeddings = _read_identity_index(args.identity_index)
    html_path, json_path, summary = write_report(data, out, args.threshold)
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True, default=str))
    else:

        def f(v):
            return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

        print(f"{summary['images']} images, {summary['identities']} identities")
        print(
            f"uniqueness {f(summary['uniqueness'])}, intra-class consistency {f(summary['intra_class_consistency'])}"
        )
        div = summary.get("diversity") or {}
        if div.get("value") is not None:
            print(
                f"intra-class diversity (DCFace D_intra, k={div['k']}): {div['value']:.4f} over {div['classes']} identities"
            )
        else:
            print(f"intra-class diversity: {div.get('note', 'not measured')}")
        for m in (summary.get("missing") or [])[:20]:
            why = ", ".join(f"{k} x{v}" for k, v in sorted((m.get("reasons") or {}).items()))
            print(f"missing: identity {m['identity']} ({m.get('stage', '?')}: {why}) {m.get('detail', '')}")
        if summary["csim"]:
            print(f"CSIM mean {f(summary['csim'].get('mean'))} +- {f(summary['csim'].get('std'))}")
        for row in summary["attribute_balance"]:
            tv = row["total_variation"]
            if tv is None:
                print(
                    f"{row['attribute']}: achieved proportions not measured (needs --pack with a gender/age model)"
                )
            else:
                print(f"{row['attribute']}: total variation requested vs achieved {tv:.3f}")
        for q in (summary.get("quotas") or {}).get("fields", []):
            print(
                f"plan vs written {q['field']}: {q['planned']} -> {q['written']} (max deviation {q['max_deviation']})"
            )
        if summary.get("quotas", {}).get("missing"):
            print(f"missing planned identities: {summary['quotas']['missing'][:20]}")
        drop = summary["dropped"]
        if drop["total"]:
            counts = "; ".join(
                f"{stage}: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
                for stage, reasons in sorted(drop["by_stage"].items())
            )
            print(f"dropped on the way: {drop['total']} ({counts})")
            for d in drop["items"][:20]:
                print(f"  {d['stage']}: identity {d['identity']} [{', '.join(d['reasons'])}] {d['detail']}")
            if drop["total"] > 20:
                print(f"  ... {drop['total'] - 20} more in report.json and the manifest's 'dropped' table")
        from ..faces.report import diversity_line

        for key, name in (
            ("identity_diversity", "identity diversity"),
            ("source_face_diversity", "source-face diversity"),
        ):
            if summary.get(key):
                print(diversity_line(name, summary[key]))
        if summary.get("stages"):
            from ..timing import format_stage_table

            print(format_stage_table(summary["stages"]))
        for note in summary["notes"]:
            print(f"note: {note}")
        print(f"wrote {html_path} and {json_path}")
    return 0
