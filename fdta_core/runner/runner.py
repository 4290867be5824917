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
from ..seeds import check_seed
from .client import ComfyClient, new_prompt_id
from .dispatch import (
    Ledger,
    execute,
    follow,
    next_prompt,
    prompt_finished,
    recover_interrupted,
    settle_failure,
)
from .manifest import Chunk, ChunkState, RunManifest, plan_chunks, select_shard
from .overrides import check_overrides, upgrade_workflow
from .patch import load_api_workflow, workflow_hash

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
    #: the servers' output folder as this machine sees it: a chunk whose commit is already there (same
    #: run) is not written again (None: not known, only the manifest and the servers are asked)
    output_dir: Path | None = None
    #: seconds a worker waits for its server to answer again before it stops taking chunks
    server_wait: float = 600.0
    #: seconds a failed chunk waits for another server before the one it failed on may take it again
    elsewhere_first: float = 120.0

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
    blocks the others; a server that stops answering takes no chunk until it answers again (for up to
    ``cfg.server_wait`` seconds). A chunk that fails is retried (on another server first) until ``max_attempts``,
    but only once its prompt is known not to run (:mod:`.dispatch`).
    """
    if not cfg.servers:
        raise ConfigError(
            "no ComfyUI server given", where="run.servers", fix="pass --server http://127.0.0.1:8188"
        )
    if cfg.overrides:  # before anything is queued: a misspelt --set must not "succeed" doing nothing
        cfg.check_overrides(client_factory(cfg.servers[0]).object_info())
    ledger, followed, todo = start_ledger(cfg, client_factory, on_chunk=on_chunk)
    stop = threading.Event()
    log.info("run %s: %d chunk(s) to do, %s", cfg.run_dir, ledger.outstanding, ledger.manifest.counts())

    def progress_cb(chunk: Chunk):
        return (lambda msg: on_progress(chunk.name, msg)) if on_progress else None

    def follower(chunk: Chunk, url: str, pid: str) -> None:
        if follow(
            ledger, client_factory(url), chunk, pid, timeout=cfg.timeout, on_progress=progress_cb(chunk)
        ):
            todo.put(chunk)

    failed_on: dict[int, tuple[str, float]] = {}  # chunk -> (server it last failed on, until when)

    def worker(url: str) -> None:
        client = client_factory(url)
        while not stop.is_set():
            with ledger.lock:
                if ledger.outstanding <= 0:
                    return
            if not wait_for_server(client, cfg.server_wait, stop):
                log.warning(
                    "server %s gave no answer for %.0f s: it takes no more chunks", url, cfg.server_wait
                )
                return
            try:
                chunk = todo.get(timeout=0.5)
            except queue.Empty:
                continue
            left = failed_on.get(chunk.index)
            if left and left[0] == url and time.monotonic() < left[1] and len(cfg.servers) > 1:
                todo.put(chunk)  # it just failed here: another server takes it first
                time.sleep(0.5)
                continue
            if run_one(cfg, ledger, client, chunk, on_progress=progress_cb(chunk)):
                failed_on[chunk.index] = (url, time.monotonic() + cfg.elsewhere_first)
                todo.put(chunk)

    threads = [
        threading.Thread(target=follower, args=f, daemon=True, name=f"fdta-follow-{f[0].name}")
        for f in followed
    ] + [threading.Thread(target=worker, args=(u,), daemon=True, name=f"fdta-run-{u}") for u in cfg.servers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        stop_running(ledger, client_factory)
        raise
    return ledger.manifest.counts()


def open_ledger(cfg: RunConfig, *, on_chunk: Callable[[Chunk, ChunkState], None] | None = None) -> Ledger:
    """The shard's manifest (created or resumed) and the run's identity index, ready for an engine."""
    manifest = RunManifest(cfg.manifest_path(), cfg.run_key(), cfg.chunks())
    if cfg.identity_index is None:
        prepare_run_index(cfg.index_location(), {"run": cfg.run_key()})
    return Ledger(manifest, cfg.max_attempts, on_chunk=on_chunk)


def start_ledger(
    cfg: RunConfig,
    client_factory: Callable[[str], ComfyClient],
    *,
    on_chunk: Callable[[Chunk, ChunkState], None] | None = None,
) -> tuple[Ledger, list[tuple[Chunk, str, str]], queue.Queue[Chunk]]:
    """What every engine starts from: the ledger, the prompts an earlier driver left running on servers
    (``(chunk, url, prompt_id)``, to be followed, not queued again) and the queue of the other chunks to do."""
    ledger = open_ledger(cfg, on_chunk=on_chunk)
    followed = recover_interrupted(ledger, client_factory)
    todo: queue.Queue[Chunk] = queue.Queue()
    busy = {c.index for c, _, _ in followed}
    for c in ledger.manifest.todo(cfg.max_attempts):
        if c.index not in busy:
            todo.put(c)
    ledger.outstanding = todo.qsize() + len(followed)
    return ledger, followed, todo


def run_one(
    cfg: RunConfig,
    ledger: Ledger,
    client: ComfyClient,
    chunk: Chunk,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> bool:
    """Run ``chunk`` on ``client``'s server: its first pass, then its repair rounds; True when it
    failed and should be queued again."""
    first = True
    try:
        while (step := next_prompt(cfg, ledger, chunk)) is not None:
            prompt, request = step
            pid = new_prompt_id()
            ledger.begin(chunk, client.url, pid, round=request.round if request else 0, new_attempt=first)
            first = False
            outputs = execute(
                client,
                prompt,
                pid,
                timeout=cfg.timeout,
                on_progress=on_progress,
                on_queued=lambda real: ledger.renamed(chunk, real),
            )
            prompt_finished(ledger, chunk, request, pid, outputs)
    except FDTAError as e:
        return settle_failure(ledger, chunk, e)
    return False


def wait_for_server(client: ComfyClient, patience: float, stop: threading.Event | None = None) -> bool:
    """Wait until the server answers (True) or ``patience`` seconds pass (False)."""
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        if client.alive():
            return True
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            return False
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def stop_running(ledger: Ledger, client_factory: Callable[[str], ComfyClient]) -> None:
    """Ctrl-C: interrupt this run's prompts on their servers and mark their chunks pending again."""
    with ledger.lock:
        running = [
            (ledger.manifest.chunks[i], r.server, r.prompt_id)
            for i, r in ledger.manifest.records.items()
            if r.state == ChunkState.RUNNING
        ]
    for chunk, server, pid in running:
        if server and pid:
            try:
                client = client_factory(server)
                client._request("POST", "/queue", {"delete": [pid]})
                client.interrupt(pid)
            except FDTAError:
                pass
        ledger.pending(chunk)
