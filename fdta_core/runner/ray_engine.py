"""``fdta run --ray``: the same run on a Ray cluster, one actor per GPU owning its ComfyUI server.

Ray does what Ray is for: placing actors on GPUs (``num_gpus=1``; on a CPU-only cluster one actor per
``cpus_per_actor`` cores), restarting an actor that died (``max_restarts``), and reporting its death to
the driver. The driver (this process) keeps the run manifest on shared storage as the single record of
what is done, with the same bookkeeping as the local runner (:mod:`.dispatch`): a chunk is marked
running with its prompt id before it is handed to an actor, done only when the actor returns the
prompt's history (the writer committed the chunk), and handed out again only when its prompt is known
not to run. An actor that dies takes its ComfyUI server with it (``PR_SET_PDEATHSIG``); an actor that
attached to a server it does not own (``--server``) has its prompt cancelled on that server by the
driver first.

Every actor's server writes into one output folder (``--output-dir``, default ``COMFYUI_DIR/output``),
which must be the same path on every node (shared storage), like the run folder. ``--ray local`` starts a
cluster here whose workers import this checkout; on a real cluster every node needs ``fdta`` installed
(and ComfyUI at the same path, or ``--server`` URLs to attach to).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, FDTAError
from .client import ComfyClient, ServerLost, new_prompt_id
from .dispatch import execute, follow, next_prompt, prompt_finished, settle_failure
from .launch import LaunchSpec
from .manifest import Chunk, ChunkState
from .runner import RunConfig, start_ledger

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs the Ray package",
            where="run --ray",
            fix="pip install 'fdta[ray]' (or pip install ray).",
        ) from None
    return ray


@dataclass
class RayOptions:
    address: str = "auto"  # "auto" (a running cluster), "local" (start one here), or an address
    cpus_per_actor: int = 4
    actors: int | None = None
    attach: list[str] = field(default_factory=list)  # existing servers the actors use instead of their own
    launch: LaunchSpec | None = None
    local_cpus: int | None = None  # --ray local: cores of the local cluster (default: all)
    max_restarts: int = 3  # per actor
    probe_timeout: float = 900.0  # how long a restarted actor may take to come back


class ChunkActor:
    """One Ray actor: a ComfyUI server (its own, or an existing one) and the chunks it is handed."""

    def __init__(self, index: int, attach: str | None, launch: LaunchSpec | None) -> None:
        self.index = index
        self.server = None
        self.current: str | None = None
        self.last: dict[str, Any] | None = None
        if attach:
            self.url = attach
        else:
            if launch is None:
                raise ConfigError(
                    "a Ray actor needs a server to attach to or a ComfyUI to start", where="run --ray"
                )
            self.server = self._start(launch)
            self.url = self.server.url
        self.client = ComfyClient(self.url)

    def _start(self, launch: LaunchSpec):
        from ..comfy_server import ComfyServer, free_port

        gpu = bool(os.environ.get("CUDA_VISIBLE_DEVICES", "").strip())
        host = socket.gethostname().split(".")[0]
        base = launch.base / f"ray-{host}-{self.index}"
        server = ComfyServer(
            launch.comfyui_dir,
            launch.python,
            base,
            port=free_port(),
            extra_args=["--extra-model-paths-config", str(launch.models_yaml(base)), *launch.extra_args],
            cpu=not gpu,  # with num_gpus=1 Ray sets CUDA_VISIBLE_DEVICES: the server sees its one GPU
            output=launch.output_dir,
            input=launch.input_dir,
            die_with_parent=True,
        )
        server.start(timeout=launch.start_timeout)
        log.info("actor %d: ComfyUI %s up on %s", self.index, server.url, host)
        return server

    def where(self) -> dict[str, Any]:
        return {"index": self.index, "url": self.url, "host": socket.gethostname(), "pid": os.getpid()}

    def progress(self) -> dict[str, Any] | None:
        """The chunk this actor runs now and ComfyUI's last progress message about it (None when idle)."""
        return None if self.current is None else {"chunk": self.current, "message": self.last}

    def run_chunk(self, name: str, prompt: dict[str, Any], prompt_id: str, timeout: float | None) -> dict:
        if self.server is not None and (self.server.proc is None or self.server.proc.poll() is not None):
            log.warning("actor %d: its ComfyUI died; restarting it", self.index)
            self.server.stop()
            self.server.start()
        self.current, self.last = name, None
        try:
            return execute(self.client, prompt, prompt_id, timeout=timeout, on_progress=self._heard)
        finally:
            self.current = None

    def _heard(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "progress":
            self.last = msg

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop()


def _init_ray(opts: RayOptions):
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    # workers import fdta_core from the same checkout as the driver (a local cluster has no package upload)
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    if opts.address == "local":
        ray.init(num_cpus=opts.local_cpus, runtime_env={"env_vars": env}, **kw)
    else:
        ray.init(address=opts.address, **kw)
    return ray, True


def plan_actors(resources: dict[str, float], opts: RayOptions) -> tuple[int, dict[str, Any]]:
    """How many actors and their resource request: one per GPU, else one per ``cpus_per_actor`` cores."""
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        return (opts.actors or gpus), {"num_gpus": 1, "num_cpus": 1}
    cpus = int(resources.get("CPU", 1))
    per = max(1, int(opts.cpus_per_actor))
    n = opts.actors or max(1, cpus // per)
    if opts.actors is None and cpus < per:
        per = cpus
    return n, {"num_cpus": per}


def _poll_progress(ray, actors, inflight, polls, on_progress, next_poll: float) -> float:
    """Hand the answers of earlier progress requests on; ask the busy actors again every 2 s."""
    if polls:
        ready, _ = ray.wait(list(polls), num_returns=len(polls), timeout=0)
        for ref in ready:
            polls.pop(ref)
            try:
                got = ray.get(ref)
            except Exception:  # noqa: BLE001 - a dying actor: its death is handled with its chunk
                continue
            if got and got.get("message"):
                on_progress(got["chunk"], got["message"])
    now = time.monotonic()
    if now < next_poll:
        return next_poll
    asked = set(polls.values())
    for k, _chunk, _pid, _req in inflight.values():
        if k not in asked:
            polls[actors[k].progress.remote()] = k
    return now + 2.0


def run_ray(
    cfg: RunConfig,
    opts: RayOptions,
    *,
    on_chunk: Callable[[Chunk, ChunkState], None] | None = None,
    on_progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, int]:
    """Run every chunk of the shard on Ray actors; return the final state counts. ``on_progress``
    hears ComfyUI's progress messages of the running chunks (polled from the actors every 2 s)."""
    if not opts.attach and opts.launch is None:
        raise ConfigError(
            "--ray needs servers: pass --server URL (actors attach to them) or a ComfyUI to start "
            "(--comfyui-dir / COMFYUI_DIR)",
            where="run --ray",
        )
    ray, owned = _init_ray(opts)
    try:
        return _drive(ray, cfg, opts, on_chunk, on_progress)
    finally:
        if owned:
            ray.shutdown()


def _drive(ray, cfg: RunConfig, opts: RayOptions, on_chunk, on_progress) -> dict[str, int]:
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

    if opts.attach and cfg.overrides:
        cfg.check_overrides(ComfyClient(opts.attach[0]).object_info())
    ledger, followed, todo = start_ledger(cfg, ComfyClient, on_chunk=on_chunk)
    for chunk, url, pid in followed:  # prompts an earlier driver queued on servers that still run them

        def _follow(chunk=chunk, url=url, pid=pid):
            if follow(ledger, ComfyClient(url), chunk, pid, timeout=cfg.timeout):
                todo.put(chunk)

        threading.Thread(target=_follow, daemon=True, name=f"fdta-follow-{chunk.name}").start()
    if ledger.outstanding == 0:
        return ledger.manifest.counts()

    n, resources = plan_actors(ray.cluster_resources(), opts)
    remote = ray.remote(ChunkActor).options(
        max_restarts=opts.max_restarts, max_task_retries=0, max_concurrency=2, **resources
    )
    actors = [
        remote.remote(k, opts.attach[k % len(opts.attach)] if opts.attach else None, opts.launch)
        for k in range(n)
    ]
    log.info(
        "run %s on Ray: %d actor(s) %s, %d chunk(s) to do", cfg.run_dir, n, resources, ledger.outstanding
    )
    urls: dict[int, str] = {}
    where: dict[int, dict[str, Any]] = {}
    probing = {actors[k].where.remote(): (k, time.monotonic()) for k in range(n)}
    idle: list[int] = []
    inflight: dict[Any, tuple[int, Chunk, str, Any]] = {}
    started: set[int] = set()  # chunks whose current pickup already counted an attempt
    polls: dict[Any, int] = {}  # progress requests in flight -> actor
    next_poll = 0.0
    lost: set[int] = set()
    try:
        while True:
            with ledger.lock:
                if ledger.outstanding <= 0:
                    break
            if len(lost) == n:
                log.error("every Ray actor is gone; %d chunk(s) left for the next run", ledger.outstanding)
                break
            while idle and not todo.empty():
                chunk = todo.get()
                try:
                    step = next_prompt(cfg, ledger, chunk)  # its first pass, or its next repair round
                except FDTAError as exc:
                    started.discard(chunk.index)
                    ledger.failed(chunk, exc, may_retry=False)
                    continue
                if step is None:  # done
                    started.discard(chunk.index)
                    continue
                prompt, request = step
                k = idle.pop(0)
                pid = new_prompt_id()
                w = where[k]
                ledger.begin(
                    chunk,
                    w["url"],
                    pid,
                    worker=f"ray actor {k} pid {w['pid']} on {w['host']}",
                    round=request.round if request else 0,
                    new_attempt=chunk.index not in started,
                )
                started.add(chunk.index)
                ref = actors[k].run_chunk.remote(chunk.name, prompt, pid, cfg.timeout)
                inflight[ref] = (k, chunk, pid, request)
            if on_progress is not None:
                next_poll = _poll_progress(ray, actors, inflight, polls, on_progress, next_poll)
            refs = list(inflight) + list(probing)
            if not refs:
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in probing:
                    k, _t = probing.pop(ref)
                    try:
                        where[k] = ray.get(ref)
                        urls[k] = where[k]["url"]
                        idle.append(k)
                    except ActorUnavailableError:  # restarting: ask again in a moment
                        time.sleep(0.5)
                        probing[actors[k].where.remote()] = (k, _t)
                    except (RayActorError, RayTaskError) as exc:
                        log.error("Ray actor %d could not start: %s", k, exc)
                        lost.add(k)
                    continue
                k, chunk, pid, request = inflight.pop(ref)
                try:
                    outputs = ray.get(ref)
                except RayTaskError as exc:  # the chunk failed inside a live actor
                    started.discard(chunk.index)
                    cause = getattr(exc, "cause", None)
                    err = cause if isinstance(cause, FDTAError) else FDTAError(str(exc))
                    if settle_failure(ledger, chunk, err):
                        todo.put(chunk)
                    idle.append(k)
                    continue
                except RayActorError as exc:  # the actor died mid-chunk (Ray restarts it)
                    started.discard(chunk.index)
                    if opts.attach:  # a server it did not own still runs the prompt: stop it first
                        try:
                            ComfyClient(urls[k]).cancel(pid)
                        except ServerLost:
                            pass
                        except FDTAError as cexc:
                            ledger.failed(
                                chunk,
                                f"Ray actor {k} died; its prompt may still run: {cexc}",
                                may_retry=False,
                            )
                            probing[actors[k].where.remote()] = (k, time.monotonic())
                            continue
                    if ledger.failed(
                        chunk, f"Ray actor {k} died while running the chunk ({type(exc).__name__})"
                    ):
                        todo.put(chunk)
                    probing[actors[k].where.remote()] = (k, time.monotonic())
                    continue
                prompt_finished(ledger, chunk, request, pid, outputs)
                todo.put(chunk)  # next: a repair round, or nothing left (then it is marked done)
                idle.append(k)
            for ref, (k, t0) in list(probing.items()):
                if time.monotonic() - t0 > opts.probe_timeout:
                    probing.pop(ref)
                    log.error("Ray actor %d did not come back within %.0f s", k, opts.probe_timeout)
                    lost.add(k)
    except KeyboardInterrupt:
        for _ref, (k, chunk, pid, _req) in inflight.items():
            try:
                ComfyClient(urls[k]).interrupt(pid)
            except FDTAError:
                pass
            ledger.pending(chunk)
        raise
    finally:
        for a in actors:
            try:
                ray.get(a.shutdown.remote(), timeout=60)
            except (RayActorError, RayTaskError, GetTimeoutError):
                pass
            ray.kill(a)
    return ledger.manifest.counts()
