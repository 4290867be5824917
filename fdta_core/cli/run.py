"""``fdta run``: queue a shipped (API-format) workflow over identity chunks on ComfyUI servers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import ExternalServiceError
from ..runner.client import ComfyClient
from ..runner.manifest import ChunkState, parse_shard
from ..runner.patch import parse_override, patch_workflow
from ..runner.runner import RunConfig, run

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
    p.add_argument("--shard", default="0/1", help="i/N: run shard i of N (default 0/1 = everything)")
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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = RunConfig.from_file(
        args.workflow,
        run_dir=args.run_dir,
        identities=args.identities,
        chunk_size=args.chunk_size,
        seed=args.seed,
        servers=args.server or ["http://127.0.0.1:8188"],
        first_identity=args.first_identity,
        shard=parse_shard(args.shard),
        overrides=[parse_override(s) for s in args.set],
        max_attempts=1 + max(0, args.retries),
        timeout=args.timeout,
        identity_index=args.identity_index,
        repair_rounds=args.repair_rounds,
    )
    chunks = cfg.chunks()
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

    bar = tqdm(total=len(chunks), unit="chunk", desc=f"shard {args.shard}", file=sys.stderr)

    def on_chunk(chunk, state):
        if state == ChunkState.DONE:
            bar.update(1)
        elif state == ChunkState.FAILED:
            bar.write(f"chunk {chunk.name} failed")

    def on_progress(name, msg):
        if msg.get("type") == "progress":
            d = msg.get("data", {})
            bar.set_postfix_str(f"{name} node {d.get('node')} {d.get('value')}/{d.get('max')}")

    counts = run(cfg, on_chunk=on_chunk, on_progress=on_progress)
    bar.n = counts[ChunkState.DONE.value]
    bar.close()
    print(json.dumps({"run_dir": str(cfg.run_dir), "manifest": str(cfg.manifest_path()), **counts}))
    return 0 if counts[ChunkState.DONE.value] == len(chunks) else 1
