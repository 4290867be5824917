"""Drive one shard of a run: every pending chunk through one of the servers, state in the manifest."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FDTAError
from ..faces.identity import prepare_run_index
from ..plan import RepairRequest
from ..seeds import check_seed
from .client import ComfyClient
from .manifest import Chunk, ChunkState, RunManifest, plan_chunks, select_shard
from .overrides import check_overrides, upgrade_workflow
from .patch import load_api_workflow, patch_workflow, workflow_hash
from .repair import missing_of, run_repair_rounds

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    workflow: dict[str, Any]
    run_dir: Path
    identities: int
    chunk_size: int
    seed: int
    servers: list[str]
    first_identity: int = 0
    shard: tuple[int, int] = (0, 1)
    overrides: list[tuple[str, str, Any]] = field(default_factory=list)
    max_attempts: int = 3
    timeout: float | None = None
    identity_index: str | None = None  # None: RUN_DIR/identities (prepared here); "" disables
    #: repair rounds per chunk for identities a committed chunk is missing (fdta_core.runner.repair)
    repair_rounds: int = 2

    def __post_init__(self) -> None:
        # checked here, before any chunk is queued: a seed beyond SEED_MAX would fail every chunk at the
        # first FDTA node that range-checks it
        self.seed = check_seed(self.seed, where="run --seed")
        if int(self.repair_rounds) < 0:
            raise ConfigError(
                f"repair rounds must be >= 0, got {self.repair_rounds}", where="run --repair-rounds"
            )

    @classmethod
    def from_file(cls, workflow_path: str | Path, **kw: Any) -> RunConfig:
        path = Path(workflow_path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"workflow {path} not found", where="run.workflow") from None
        except ValueError as e:
            raise ConfigError(f"workflow {path} is not JSON ({e})", where="run.workflow") from None
        if isinstance(data, dict) and "nodes" in data and "links" in data:
            # an editor (UI-format) file: convert with the schemas of the server that will run it
            from ..workflow import ui_to_api

            servers = kw.get("servers") or []
            if not servers:
                raise ConfigError(
                    "a UI-format workflow needs a server to read node schemas from", where="run.servers"
                )
            data = ui_to_api(data, ComfyClient(servers[0]).object_info())
        return cls(workflow=upgrade_workflow(load_api_workflow(data, where=str(path)), where=str(path)), **kw)

    def run_key(self) -> dict[str, Any]:
        return {
            "workflow": workflow_hash(self.workflow),
            "seed": int(self.seed),
            "identities": int(self.identities),
            "chunk_size": int(self.chunk_size),
            "first_identity": int(self.first_identity),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "overrides": [list(o) for o in self.overrides],
        }

    def check_overrides(self, object_info: dict[str, Any] | None) -> None:
        """Refuse unknown nodes/inputs in ``--set`` and coerce the values to their input types
        (against the server's ``/object_info``; None checks against the workflow's own values)."""
        self.overrides = check_overrides(self.workflow, self.overrides, object_info)

    def chunks(self) -> list[Chunk]:
        return select_shard(plan_chunks(self.identities, self.chunk_size, self.first_identity), *self.shard)

    def index_location(self) -> str:
        """The identity-index folder every chunk's ACG consults and extends."""
        if self.identity_index is not None:
            return self.identity_index
        return str((self.run_dir / "identities").resolve())

    def manifest_path(self) -> Path:
        i, n = self.shard
        return self.run_dir / f"run-shard{i:04d}-of-{n:04d}.json"


def run(
    cfg: RunConfig,
    *,
    on_chunk: Callable[[Chunk, ChunkState], None] | None = None,
    on_progress: Callable[[str, dict[str, Any]], None] | None = None,
    client_factory: Callable[[str], ComfyClient] = ComfyClient,
) -> dict[str, int]:
    """Run every chunk of the shard that is not done yet; return the final state counts.

    One worker thread per server takes chunks from a shared queue, so a slow or failing server never
    blocks the others. A chunk that fails is retried (on any server) until ``max_attempts``.
    """
    if not cfg.servers:
        raise ConfigError(
            "no ComfyUI server given", where="run.servers", fix="pass --server http://127.0.0.1:8188"
        )
    if cfg.overrides:  # before anything is queued: a misspelt --set must not "succeed" doing nothing
        cfg.check_overrides(client_factory(cfg.servers[0]).object_info())
    manifest = RunManifest(cfg.manifest_path(), cfg.run_key(), cfg.chunks())
    if cfg.identity_index is None:
        prepare_run_index(cfg.index_location(), {"run": cfg.run_key()})
    todo: queue.Queue[Chunk] = queue.Queue()
    for c in manifest.todo(cfg.max_attempts):
        todo.put(c)
    lock = threading.Lock()
    stop = threading.Event()
    log.info("run %s: %d chunk(s) to do, %s", cfg.run_dir, todo.qsize(), manifest.counts())

    def worker(url: str) -> None:
        client = client_factory(url)
        while not stop.is_set():
            try:
                chunk = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                rec = manifest.records[chunk.index]
                manifest.mark(
                    chunk,
                    ChunkState.RUNNING,
                    attempts=rec.attempts + 1,
                    server=url,
                    error=None,
                    started=time.time(),
                    finished=None,
                )
            if on_chunk:
                on_chunk(chunk, ChunkState.RUNNING)
            cb = (lambda msg, _c=chunk: on_progress(_c.name, msg)) if on_progress else None

            def submit(repair: RepairRequest | None, _chunk: Chunk = chunk, _cb=cb) -> tuple[str, dict]:
                prompt = patch_workflow(
                    cfg.workflow,
                    _chunk,
                    cfg.seed,
                    cfg.overrides,
                    identity_index=cfg.index_location(),
                    repair=repair,
                )
                pid = client.queue(prompt)
                with lock:
                    manifest.mark(_chunk, ChunkState.RUNNING, prompt_id=pid)
                entry = client.wait(pid, timeout=cfg.timeout, on_progress=_cb)
                return pid, {k: v for k, v in entry.get("outputs", {}).items() if "text" in v or "dataset" in v}

            def record(missing: list[int], repairs: list[dict], _chunk: Chunk = chunk) -> None:
                with lock:
                    manifest.mark(_chunk, ChunkState.RUNNING, missing=missing, repairs=repairs)

            try:
                rec = manifest.records[chunk.index]
                if rec.missing is None:  # the chunk's first pass (a resumed chunk may have committed it)
                    _pid, outputs = submit(None)
                    with lock:
                        manifest.mark(
                            chunk, ChunkState.RUNNING, outputs=outputs, missing=missing_of(outputs) or []
                        )
                run_repair_rounds(rec.missing, rec.repairs, cfg.repair_rounds, submit, record)
                with lock:
                    manifest.mark(chunk, ChunkState.DONE, finished=time.time())
                state = ChunkState.DONE
            except FDTAError as e:
                with lock:
                    rec = manifest.records[chunk.index]
                    manifest.mark(chunk, ChunkState.FAILED, error=str(e), finished=time.time())
                    if rec.attempts < cfg.max_attempts:
                        todo.put(chunk)
                log.warning(
                    "chunk %s failed (attempt %d/%d): %s", chunk.name, rec.attempts, cfg.max_attempts, e
                )
                state = ChunkState.FAILED
            if on_chunk:
                on_chunk(chunk, state)

    threads = [
        threading.Thread(target=worker, args=(u,), daemon=True, name=f"fdta-run-{u}") for u in cfg.servers
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        for u in cfg.servers:
            try:
                client_factory(u).interrupt()
            except FDTAError:
                pass
        with lock:
            for i, rec in manifest.records.items():
                if rec.state == ChunkState.RUNNING:
                    manifest.mark(manifest.chunks[i], ChunkState.PENDING)
        raise
    return manifest.counts()
