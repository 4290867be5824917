"""``fdta run``: queue a shipped (API-format) workflow over identity chunks on ComfyUI servers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import ExternalServiceError
from ..runner.client import ComfyClient
from ..runner.manifest import ChunkState
from ..runner.patch import parse_override, patch_workflow
from ..runner.runner import RunConfig, run
from ..runner.schedulers import resolve_shard

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a workflow headless over many identity chunks (sharded, resumable)",
        description="Queue an API-format workflow once per chunk of identities on one or more ComfyUI servers. "
        "State is kept in RUN_DIR; run the same command again to resume. With --shard i/N, N machines "
        "each run their own deterministic subset of chunks; join the outputs with 'fdta rec merge'.",
    )
    p.add_argument("workflow", type=Path, help="API-format workflow JSON (workflows/api/*.json)")
    p.add_argument("--run-dir", type=Path, required=True, help="where the run manifest lives")
    p.add_argument("--identities", type=int, required=True, help="number of identities in the whole run")
    p.add_argument("--chunk-size", type=int, default=100, help="identities per queued prompt (default 100)")
    p.add_argument("--first-identity", type=int, default=0, help="index of the run's first identity")
    p.add_argument(
        "--seed", type=int, required=True, help="run seed: every seed of every chunk derives from it"
    )
    p.add_argument(
        "--server",
        action="append",
        default=[],
        help="ComfyUI URL (repeat for one server per GPU); default 127.0.0.1:8188",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        help="i/N: run shard i of N (default 0/1 = everything); 'auto': from FDTA_SHARD=i/N or a Slurm "
        "array task (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="override a node input"
    )
    p.add_argument("--retries", type=int, default=2, help="extra attempts for a failed chunk (default 2)")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds one chunk may take (default: no limit)"
    )
    p.add_argument(
        "--identity-index",
        default=None,
        metavar="FOLDER",
        help="the run's identity index that every chunk's ACG consults and extends (default RUN_DIR/identities; "
        "a server on another machine needs a name inside its output folder; '' turns it off)",
    )
    p.add_argument(
        "--repair-rounds",
        type=int,
        default=2,
        help="times a chunk's missing identities (left without images by the CSIM filter or the leak check, "
        "or without an ACG candidate) are regenerated with new seeds and added to the chunk (default 2; 0: "
        "never); what is still missing is listed with its reason in the data set",
    )
    p.add_argument("--dry-run", action="store_true", help="print the patched prompt of each chunk and exit")
    g = p.add_argument_group("servers started by fdta (--launch, --ray, --sbatch)")
    g.add_argument(
        "--launch",
        default=None,
        metavar="N|auto",
        help="start and supervise N local ComfyUI servers (auto: one per visible GPU, --cuda-device i; one "
        "--cpu server without GPUs), restart any that dies, stop them at the end",
    )
    g.add_argument("--comfyui-dir", type=Path, default=None, help="ComfyUI checkout (default $COMFYUI_DIR)")
    g.add_argument(
        "--comfyui-python",
        type=Path,
        default=None,
        help="ComfyUI's Python (default $COMFYUI_PYTHON or its .venv)",
    )
    g.add_argument("--models-dir", type=Path, default=None, help="models folder (default COMFYUI_DIR/models)")
    g.add_argument(
        "--extra-model-paths",
        type=Path,
        action="append",
        default=[],
        help="extra_model_paths.yaml (repeatable)",
    )
    g.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="ComfyUI's output folder as this machine sees it (default for started servers: COMFYUI_DIR/output); "
        "known, it lets a resumed run skip chunks whose commit landed, and --merge-to find the data set",
    )
    g.add_argument(
        "--input-dir",
        type=Path,
        default=None,
        help="input folder of started servers (default COMFYUI_DIR/input)",
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS|auto|local",
        help="run on a Ray cluster: one actor per GPU (num_gpus=1) owning its ComfyUI server, or one per "
        "--cpus-per-actor cores on a CPU-only cluster; 'local' starts a cluster on this machine (needs fdta[ray])",
    )
    g.add_argument("--cpus-per-actor", type=int, default=4, help="cores per actor on a CPU-only cluster (4)")
    g.add_argument(
        "--actors", type=int, default=None, help="number of Ray actors (default: one per GPU / core group)"
    )
    g.add_argument(
        "--merge-to",
        type=Path,
        default=None,
        metavar="OUT",
        help="when every chunk of every shard is done, merge the run's data set into OUT (fdta rec merge)",
    )
    g.add_argument("--audit-pack", default=None, help="with --merge-to: audit the merged set with this pack")
    g.add_argument("--insightface-dir", action="append", default=[], help="folder holding models/<pack>/")
    g.add_argument("--provider", default="auto", help="ONNX provider of the audit (default auto)")
    g.add_argument(
        "--sbatch",
        type=Path,
        default=None,
        metavar="SCRIPT",
        help="write a Slurm array-job script for this run (one task per GPU node, --shard auto, --launch auto, "
        "--requeue) and exit",
    )
    g.add_argument("--array", type=int, default=None, help="with --sbatch: number of array tasks (nodes)")
    g.add_argument("--gpus-per-node", type=int, default=1, help="with --sbatch: GPUs of each node (0: CPU)")
    g.add_argument("--slurm-arg", action="append", default=[], help="with --sbatch: an extra #SBATCH line")
    p.add_argument(
        "--json",
        action="store_true",
        help="only the JSON summary on stdout (it always holds the per-stage table under 'stages')",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.sbatch is not None:
        return _write_sbatch(args)
    cfg = RunConfig.from_file(
        args.workflow,
        run_dir=args.run_dir,
        identities=args.identities,
        chunk_size=args.chunk_size,
        seed=args.seed,
        servers=args.server or ["http://127.0.0.1:8188"],
        first_identity=args.first_identity,
        shard=resolve_shard(args.shard),
        overrides=[parse_override(s) for s in args.set],
        max_attempts=1 + max(0, args.retries),
        timeout=args.timeout,
        identity_index=args.identity_index,
        output_dir=args.output_dir,
        repair_rounds=args.repair_rounds,
    )
    chunks = cfg.chunks()
    shard_text = f"{cfg.shard[0]}/{cfg.shard[1]}"
    if args.dry_run:
        if cfg.overrides:
            try:
                info = ComfyClient(cfg.servers[0]).object_info()
            except ExternalServiceError as exc:
                log.warning(
                    "no server to check --set against (%s); checking against the workflow's values", exc
                )
                info = None
            cfg.check_overrides(info)
        for c in chunks:
            print(
                json.dumps(
                    {
                        "chunk": c.name,
                        "prompt": patch_workflow(
                            cfg.workflow, c, cfg.seed, cfg.overrides, identity_index=cfg.index_location()
                        ),
                    }
                )
            )
        return 0
    from tqdm import tqdm

    bar = tqdm(total=len(chunks), unit="chunk", desc=f"shard {shard_text}", file=sys.stderr)

    def on_chunk(chunk, state):
        if state == ChunkState.DONE:
            bar.update(1)
        elif state == ChunkState.FAILED:
            bar.write(f"chunk {chunk.name} failed")

    # ComfyUI's progress messages name the node by its id in the prompt: show its class instead
    node_class = {str(k): v.get("class_type", "?") for k, v in cfg.workflow.items() if isinstance(v, dict)}

    def on_progress(name, msg):
        if msg.get("type") == "progress":
            d = msg.get("data", {})
            node = str(d.get("node"))
            bar.set_postfix_str(f"{name} {node_class.get(node, node)} {d.get('value')}/{d.get('max')}")

    if args.ray is not None:
        from ..runner.ray_engine import RayOptions, run_ray

        opts = RayOptions(
            address=args.ray,
            cpus_per_actor=args.cpus_per_actor,
            actors=args.actors,
            attach=list(args.server),
            launch=_launch_spec(args, cfg) if not args.server else None,
        )
        if opts.launch is not None and cfg.output_dir is None:
            cfg.output_dir = opts.launch.output_dir
        counts = run_ray(cfg, opts, on_chunk=on_chunk, on_progress=on_progress)
    elif args.launch is not None:
        from ..runner.launch import ServerPool, parse_launch

        spec = _launch_spec(args, cfg)
        cfg.output_dir = cfg.output_dir or spec.output_dir
        with ServerPool(spec, parse_launch(args.launch)) as pool:
            cfg.servers = pool.urls
            bar.write(f"ComfyUI servers: {', '.join(pool.urls)} (logs under {spec.base})")
            counts = run(cfg, on_chunk=on_chunk, on_progress=on_progress)
    else:
        counts = run(cfg, on_chunk=on_chunk, on_progress=on_progress)
    bar.n = counts[ChunkState.DONE.value]
    bar.close()
    duplicates = _cross_chunk_check(cfg) if counts[ChunkState.DONE.value] else None
    merged = None
    if args.merge_to is not None and counts[ChunkState.DONE.value] == len(chunks):
        from ..runner.finish import merge_run

        merged = merge_run(
            cfg,
            cfg.output_dir,
            args.merge_to,
            audit_pack=args.audit_pack,
            insightface_dirs=args.insightface_dir,
            provider=args.provider,
        )
    from ..runner.stages import format_run_stages, run_stage_summary

    stages = run_stage_summary(cfg.manifest_path())
    if not args.json:
        print(format_run_stages(stages), file=sys.stderr)
    summary = {"run_dir": str(cfg.run_dir), "manifest": str(cfg.manifest_path()), **counts, "stages": stages}
    if duplicates is not None:
        summary["cross_chunk_duplicates"] = duplicates
    if args.merge_to is not None:
        summary["merged"] = None if merged is None else str(args.merge_to)
    print(json.dumps(summary))
    if counts[ChunkState.DONE.value] != len(chunks):
        return 1
    return 0 if not merged else int(merged)


def _cross_chunk_check(cfg: RunConfig) -> list[dict] | None:
    """Identities of different chunks that are the same person (chunks generated at the same time cannot
    see each other); printed, and returned for the summary. None when the run has no ACG or no index."""
    from ..runner.finish import cross_chunk_duplicates, uniqueness_threshold

    threshold = uniqueness_threshold(cfg)
    location = cfg.index_location()  # "" when the run turned the index off
    if threshold is None or not location or not Path(location).is_dir():
        return None
    folder = Path(location)
    dups = cross_chunk_duplicates(folder, threshold)
    if dups:
        print(
            f"WARNING: {len(dups)} pair(s) of identities in different chunks are the same person (cosine >= "
            f"{threshold}); chunks generated at the same time cannot see each other:",
            file=sys.stderr,
        )
        for d in dups[:20]:
            a, b = d["identities"]
            print(f"  identity {a} (chunk {d['chunks'][0]}) ~ identity {b} (chunk {d['chunks'][1]}): "
                  f"cosine {d['cosine']:.3f}", file=sys.stderr)  # fmt: skip
        print(
            "  fix: merge the set, then `fdta audit MERGED --pack P --write-filtered OUT` leaves the later "
            "identity of each pair out (or run on one server: every chunk then sees all earlier ones).",
            file=sys.stderr,
        )
    return dups


def _comfy_location(args: argparse.Namespace) -> tuple[Path, Path]:
    import os

    from ..comfy_server import comfy_python
    from ..errors import ConfigError

    raw = args.comfyui_dir or (Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else None)
    if raw is None or not (Path(raw) / "main.py").is_file():
        raise ConfigError(
            f"no ComfyUI checkout to start servers from ({raw or 'COMFYUI_DIR is not set'})",
            where="run --launch",
            fix="pass --comfyui-dir (a ComfyUI 0.3.64+ checkout) or set COMFYUI_DIR.",
        )
    root = Path(raw).expanduser().resolve()
    return root, comfy_python(root, args.comfyui_python)


def _launch_spec(args: argparse.Namespace, cfg: RunConfig):
    from ..runner.launch import LaunchSpec

    root, python = _comfy_location(args)
    return LaunchSpec(
        comfyui_dir=root,
        python=python,
        base=(cfg.run_dir / "servers").resolve(),
        output_dir=(args.output_dir or root / "output").resolve(),
        input_dir=(args.input_dir or root / "input").resolve(),
        models_dir=args.models_dir,
        extra_model_paths=list(args.extra_model_paths),
    )


def _write_sbatch(args: argparse.Namespace) -> int:
    """``--sbatch SCRIPT``: the same run as a Slurm array job (nothing is run here)."""
    import os

    from ..errors import ConfigError
    from ..runner.schedulers import SbatchJob

    if args.ray is not None or args.server:
        raise ConfigError(
            "--sbatch starts its own servers on every node; drop --ray/--server", where="run --sbatch"
        )
    tasks = args.array
    if tasks is None:
        raise ConfigError("--sbatch needs --array N (the number of nodes)", where="run --sbatch")
    root = args.comfyui_dir or (Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else None)
    py = args.comfyui_python or (
        Path(os.environ["COMFYUI_PYTHON"]) if os.environ.get("COMFYUI_PYTHON") else None
    )
    run_dir = args.run_dir.resolve()
    run_args = [str(args.workflow.resolve()), "--run-dir", str(run_dir), "--identities", str(args.identities),
                "--chunk-size", str(args.chunk_size), "--first-identity", str(args.first_identity),
                "--seed", str(args.seed), "--retries", str(args.retries),
                "--repair-rounds", str(args.repair_rounds)]  # fmt: skip
    for s in args.set:
        run_args += ["--set", s]
    if args.timeout is not None:
        run_args += ["--timeout", str(args.timeout)]
    if args.identity_index is not None:
        run_args += ["--identity-index", args.identity_index]
    for flag, value in (("--models-dir", args.models_dir), ("--output-dir", args.output_dir),
                        ("--input-dir", args.input_dir), ("--merge-to", args.merge_to)):  # fmt: skip
        if value is not None:
            run_args += [flag, str(Path(value).resolve())]
    for y in args.extra_model_paths:
        run_args += ["--extra-model-paths", str(Path(y).resolve())]
    if args.audit_pack:
        run_args += ["--audit-pack", args.audit_pack, "--provider", args.provider]
        for d in args.insightface_dir:
            run_args += ["--insightface-dir", str(Path(d).resolve())]
    job = SbatchJob(
        run_args=run_args,
        tasks=tasks,
        run_dir=run_dir,
        job_name=f"fdta-{run_dir.name}",
        gpus_per_node=args.gpus_per_node,
        sbatch_args=list(args.slurm_arg),
        comfyui_dir=Path(root).resolve() if root else None,
        comfyui_python=Path(py).expanduser().absolute()
        if py
        else None,  # a venv python: never resolve the link
    )
    path = job.write(args.sbatch)
    print(json.dumps({"sbatch": str(path), "tasks": tasks, "run_dir": str(run_dir)}))
    print(f"submit with: sbatch {path}", file=sys.stderr)
    return 0
