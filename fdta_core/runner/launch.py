"""``fdta run --launch N``: start N local ComfyUI servers (one per GPU), keep them alive, stop them.

Each server is a :class:`~fdta_core.comfy_server.ComfyServer` with a private base folder under
``RUN_DIR/servers/`` (this pack linked into its ``custom_nodes``, its own log, temp and user folders), on a
free port, with ``--cuda-device i`` when GPUs are visible (else ``--cpu``). All of them share one output
folder (so every chunk lands in one data set) and one input folder, and see the ComfyUI checkout's
models (plus ``extra_model_paths.yaml`` files) through a generated ``extra_model_paths.yaml``.

A supervisor thread restarts a server that died, on the same port, so the runner's worker for that URL
just waits for it to answer again; the chunk it was running is retried on another server first
(:mod:`.dispatch`). Servers die with the runner (``PR_SET_PDEATHSIG`` on Linux): a killed runner leaves
no server running a chunk that the next run would queue again.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..comfy_server import ComfyServer, ComfyServerError, free_port
from ..errors import ConfigError

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """CUDA devices this process may use: ``CUDA_VISIBLE_DEVICES`` (Slurm sets it), else the ones
    ``nvidia-smi -L`` lists; empty on a machine without NVIDIA GPUs."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        return [d.strip() for d in raw.split(",") if d.strip() and d.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def parse_launch(text: str) -> int:
    """``--launch N`` or ``auto`` (one server per visible GPU, one CPU server without GPUs)."""
    if text == "auto":
        return max(1, len(visible_gpus()))
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--launch needs a count >= 1 or 'auto', got {text!r}", where="run --launch")
    return n


@dataclass
class LaunchSpec:
    """Where the servers come from and what they share."""

    comfyui_dir: Path
    python: Path
    base: Path  # private folders of the servers: base/server-<i>
    output_dir: Path
    input_dir: Path
    models_dir: Path | None = None  # default: COMFYUI_DIR/models
    extra_model_paths: list[Path] = field(default_factory=list)
    gpus: list[str] | None = None  # None: visible_gpus()
    extra_args: list[str] = field(default_factory=list)
    start_timeout: float = 600.0

    def models_yaml(self, folder: Path | None = None) -> Path:
        """An ``extra_model_paths.yaml`` (in ``folder``, default ``base``) naming the checkout's model
        folders and the extra ones; written whole under a temporary name, then renamed."""
        from ..demo import write_extra_model_paths
        from ..models_catalog import ModelFolders

        folder = folder or self.base
        folder.mkdir(parents=True, exist_ok=True)
        folders = ModelFolders.discover(
            self.models_dir or self.comfyui_dir / "models", self.extra_model_paths
        )
        path = folder / "extra_model_paths.yaml"
        tmp = write_extra_model_paths(folder / f".extra_model_paths.yaml.{os.getpid()}", folders)
        os.replace(tmp, path)
        return path


class ServerPool:
    """N supervised ComfyUI servers; use as a context manager (``with ServerPool(spec, n) as pool``)."""

    def __init__(self, spec: LaunchSpec, count: int, *, max_restarts: int = 5, poll: float = 2.0) -> None:
        self.spec, self.count = spec, count
        self.max_restarts, self.poll = max_restarts, poll
        self.servers: list[ComfyServer] = []
        self.restarts: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def _make(self, i: int, yaml: Path, gpus: list[str]) -> ComfyServer:
        args = ["--extra-model-paths-config", str(yaml), *self.spec.extra_args]
        if gpus:
            args += ["--cuda-device", gpus[i % len(gpus)]]
        return ComfyServer(
            self.spec.comfyui_dir,
            self.spec.python,
            self.spec.base / f"server-{i}",
            port=free_port(),
            extra_args=args,
            cpu=not gpus,
            output=self.spec.output_dir,
            input=self.spec.input_dir,
            die_with_parent=True,
        )

    def start(self) -> list[str]:
        """Start every server (from this thread: servers die with it) and the supervisor."""
        gpus = self.spec.gpus if self.spec.gpus is not None else visible_gpus()
        if gpus and self.count > len(gpus):
            log.warning("%d servers on %d GPU(s): some GPUs run several servers", self.count, len(gpus))
        yaml = self.spec.models_yaml()
        self.servers = [self._make(i, yaml, gpus) for i in range(self.count)]
        self.restarts = [0] * self.count
        try:
            for s in self.servers:
                s.start(timeout=self.spec.start_timeout)
                log.info("ComfyUI %s up (log %s)", s.url, s.log_path)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="fdta-launch-supervisor")
        self._thread.start()
        return self.urls

    def _supervise(self) -> None:
        # restarts happen on this thread, which lives as long as the pool: servers die with it
        while not self._stop.wait(self.poll):
            for i, s in enumerate(self.servers):
                if self._stop.is_set():
                    return
                if s.proc is None or s.proc.poll() is None:
                    continue
                code = s.proc.returncode
                if self.restarts[i] >= self.max_restarts:
                    log.error(
                        "ComfyUI %s died (exit %s) %d times; not restarted again",
                        s.url,
                        code,
                        self.restarts[i],
                    )
                    s.proc = None
                    continue
                self.restarts[i] += 1
                log.warning("ComfyUI %s died (exit %s): restarting it (%d)", s.url, code, self.restarts[i])
                s.stop()
                try:
                    s.start(timeout=self.spec.start_timeout)
                except ComfyServerError as exc:
                    log.error("could not restart ComfyUI %s: %s", s.url, exc)
                    time.sleep(self.poll)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        for s in self.servers:
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 - stopping the others matters more
                log.warning("stopping ComfyUI %s: %s", s.url, exc)

    def __enter__(self) -> ServerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
