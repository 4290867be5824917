"""``fdta models [WORKFLOW]``: the model files a workflow needs, where they go, whether they are there,
where to get them and their licence; ``--download`` fetches what the Hugging Face Hub hosts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list (and --download) the model files a workflow needs",
        description="Reads the loader nodes of WORKFLOW (API or UI format; default: the shipped Syn-MS1M "
        "workflow) and lists every model file it needs: the ComfyUI folder and extra_model_paths.yaml key, "
        "present or missing, size and SHA-256, where to get it and its licence. --download fetches the "
        "missing files that the Hugging Face Hub hosts (resumable, checksummed) into the models folder; "
        "HF_ENDPOINT selects a mirror.",
    )
    p.add_argument(
        "workflow", nargs="?", type=Path, help="workflow JSON (default workflows/api/syn_ms1m.json)"
    )
    p.add_argument(
        "--models", type=Path, default=None, help="ComfyUI models folder (default $COMFYUI_DIR/models)"
    )
    p.add_argument("--comfyui", type=Path, default=None, help="ComfyUI folder (default $COMFYUI_DIR)")
    p.add_argument(
        "--extra-model-paths",
        action="append",
        default=[],
        type=Path,
        metavar="YAML",
        help="extra_model_paths.yaml to honour (repeatable; default COMFYUI/extra_model_paths.yaml when present)",
    )
    p.add_argument(
        "--download", action="store_true", help="fetch missing files hosted on the Hugging Face Hub"
    )
    p.add_argument(
        "--no-hash", action="store_true", help="skip SHA-256 of present files (large files take time)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_models)


def default_workflow() -> Path:
    return Path(__file__).resolve().parents[2] / "workflows" / "api" / "syn_ms1m.json"


def resolve_folders(args: argparse.Namespace):
    from ..models_catalog import ModelFolders

    comfy = args.comfyui or (Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else None)
    models = args.models or (comfy / "models" if comfy else None)
    if models is None:
        raise InputError(
            "no models folder given",
            where="fdta models",
            fix="pass --models DIR (ComfyUI's models folder) or --comfyui DIR, or set COMFYUI_DIR.",
        )
    yamls = list(args.extra_model_paths)
    if not yamls and comfy is not None and (comfy / "extra_model_paths.yaml").is_file():
        yamls.append(comfy / "extra_model_paths.yaml")
    return ModelFolders.discover(models, yamls)


def _models(args: argparse.Namespace) -> int:
    from ..models_catalog import download_missing, format_table, load_workflow, model_status, workflow_models

    wf_path = args.workflow or default_workflow()
    if args.workflow is None and not wf_path.is_file():
        raise InputError("no workflow given and the shipped one is not here", fix="pass a workflow JSON.")
    refs = workflow_models(load_workflow(wf_path))
    folders = resolve_folders(args)
    rows = model_status(refs, folders, hash_files=not args.no_hash)
    downloaded: list[Path] = []
    if args.download:
        downloaded = download_missing(
            rows, folders, on_file=lambda r, p: print(f"downloaded {p}", file=sys.stderr)
        )
    if args.json:
        print(
            json.dumps(
                {
                    "workflow": str(wf_path),
                    "models_dir": str(folders.models_dir),
                    "files": [r.to_dict() for r in rows],
                    "missing": sum(not r.present for r in rows),
                    "downloaded": [str(p) for p in downloaded],
                },
                indent=1,
            )
        )
    else:
        print(f"{wf_path} needs (models folder {folders.models_dir}):")
        print(format_table(rows))
        if args.download and not downloaded:
            print("nothing to download: every missing file must be fetched by hand from its source above")
    return 0
