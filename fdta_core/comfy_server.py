"""Start and drive a real ComfyUI server isolated in its own base directory (``fdta demo``, ``tests/comfy``).

The server runs ``main.py --cpu`` (or on a GPU when asked) from a ComfyUI checkout with
``--base-directory`` pointing at a private folder whose ``custom_nodes/`` links this pack, so the
checkout is never modified and models, inputs, outputs and the user folder stay private. Only the
standard library is used (no ComfyUI import: this runs in the caller's interpreter and spawns ComfyUI's).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import FDTAError

log = logging.getLogger(__name__)

#: Folder name of the pack inside ``custom_nodes/``.
PACK_NAME = "ComfyUI-FDTA"


class ComfyServerError(FDTAError, RuntimeError):
    """A ComfyUI server could not be found, started, or died."""


class PromptFailed(FDTAError, AssertionError):
    """A queued prompt was rejected or its execution failed; carries ComfyUI's error payload."""

    def __init__(self, message: str, payload: Any) -> None:
        self.payload = payload
        super().__init__(f"{message}: {json.dumps(payload, indent=1)[:4000]}")


def pack_root() -> Path:
    """The pack checkout this ``fdta_core`` lives in (the folder linked into ``custom_nodes``).

    A ``pip install`` of the library alone has no ``nodes/``: ComfyUI could not load it as a pack.
    """
    root = Path(__file__).resolve().parents[1]
    if not ((root / "nodes").is_dir() and (root / "__init__.py").is_file()):
        raise ComfyServerError(
            f"{root} is not a ComfyUI-FDTA checkout (no nodes/ or __init__.py beside fdta_core)",
            fix="run from a git clone of ComfyUI-FDTA installed with 'pip install -e .'.",
        )
    return root


def comfy_python(comfyui_dir: Path, python: str | os.PathLike | None = None) -> Path:
    """ComfyUI's interpreter: ``python`` if given, else ``$COMFYUI_PYTHON``, else ``COMFYUI_DIR/.venv``."""
    raw = python or os.environ.get("COMFYUI_PYTHON")
    if raw:
        return Path(raw).expanduser()
    for cand in (comfyui_dir / ".venv" / "bin" / "python", comfyui_dir / ".venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return cand
    return comfyui_dir / ".venv" / "bin" / "python"


def comfy_checkout() -> tuple[Path | None, Path | None, str]:
    """``(comfyui_dir, python, reason)`` from ``COMFYUI_DIR`` / ``COMFYUI_PYTHON``; the paths are None
    (and ``reason`` says why) when unusable."""
    raw = os.environ.get("COMFYUI_DIR")
    if not raw:
        return (
            None,
            None,
            "COMFYUI_DIR is not set (point it at a ComfyUI 0.3.64+ checkout to run tests/comfy)",
        )
    root = Path(raw).expanduser().resolve()
    if not (root / "main.py").is_file():
        return None, None, f"COMFYUI_DIR={root} has no main.py"
    python = comfy_python(root)
    if not python.exists():
        return (
            None,
            None,
            f"no interpreter for ComfyUI at {python} (create ComfyUI's venv, e.g. with "
            "../shared/tools/comfyui_get.sh, or set COMFYUI_PYTHON)",
        )
    return root, python, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ComfyServer:
    """One ComfyUI process on 127.0.0.1 with every folder under ``base``."""

    comfyui_dir: Path
    python: Path
    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)
    #: extra environment variables of the server process (e.g. an API key a test must not see leak)
    env: dict[str, str] = field(default_factory=dict)
    #: the pack linked into ``custom_nodes`` (default: this checkout)
    pack: Path | None = None
    #: run on the CPU (``--cpu``); False lets ComfyUI pick its device
    cpu: bool = True
    #: output / input folders shared with other servers (``fdta run --launch``); default under ``base``
    output: Path | None = None
    input: Path | None = None
    #: Linux: the server gets SIGKILL when the thread that started it dies (a killed runner or Ray
    #: actor leaves no orphan server still running its chunk); start it from a long-lived thread
    die_with_parent: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    # -------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "comfyui.log"

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def input_dir(self) -> Path:
        return self.input if self.input is not None else self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else self.base / "output"

    @property
    def temp_dir(self) -> Path:
        """Where ComfyUI writes temp files: it appends ``temp`` to ``--temp-directory``."""
        return self.base / "temp" / "temp"

    @property
    def user_dir(self) -> Path:
        return self.base / "user"

    def prepare(self) -> None:
        for sub in ("custom_nodes", "models", "temp", "user"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_NAME
        pack = (self.pack or pack_root()).resolve()
        if link.is_symlink() and Path(os.readlink(link)).resolve() != pack:
            link.unlink()  # a base dir reused from another checkout
        if not link.exists():
            link.symlink_to(pack, target_is_directory=True)

    def command(self) -> list[str]:
        return [
            str(self.python), "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1",
            "--port", str(self.port), "--base-directory", str(self.base),
            "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.base / "temp"), "--user-directory", str(self.user_dir),
            "--database-url", "sqlite:///:memory:", "--disable-auto-launch", *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 240.0) -> None:
        """Start the server and wait until it answers; raise :class:`ComfyServerError` with its log tail."""
        self.prepare()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the pack must import the way ComfyUI imports it, nothing else
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        log.info("starting ComfyUI at %s (log %s)", self.url, self.log_path)
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.comfyui_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # its own session: a Ctrl-C in the terminal reaches the caller, which stops the server cleanly
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent and _can_die_with_parent() else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise ComfyServerError(
                    f"ComfyUI exited with {code} while starting:\n{self.log_tail()}",
                    where=str(self.log_path),
                    fix="read the log above; a missing package means the pack's requirements are not installed "
                    "into ComfyUI's Python (pip install -r requirements.txt).",
                )
            try:
                self.get("/object_info/KSampler", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ComfyServerError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # -------------------------------------------------------------- HTTP
    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, path: str, payload: Any, timeout: float = 30) -> Any:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                data = json.loads(body)
            except ValueError:
                data = body.decode(errors="replace")
            raise PromptFailed(f"POST {path} answered {e.code}", data) from None
        return json.loads(body) if body else None

    def object_info(self) -> dict[str, Any]:
        return self.get("/object_info", timeout=60)

    def free(self) -> None:
        """Unload models and drop the execution cache, so the next identical prompt runs again."""
        self.post("/free", {"unload_models": True, "free_memory": True})

    def queue(self, prompt: dict[str, Any]) -> str:
        res = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        if res.get("node_errors"):
            raise PromptFailed("prompt has node errors", res["node_errors"])
        return res["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait until the prompt finished; return its history entry, or raise with ComfyUI's error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if hist and prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    if status.get("status_str") != "success":
                        msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                        raise PromptFailed("execution failed", msgs or status)
                    return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyServerError(f"ComfyUI died while running the prompt:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        return self.wait(self.queue(prompt), timeout=timeout)

    def run_error(self, prompt: dict[str, Any], timeout: float = 300) -> str:
        """Run a prompt that must fail; return ComfyUI's error text (validation or execution)."""
        try:
            self.run(prompt, timeout=timeout)
        except PromptFailed as e:
            return json.dumps(e.payload)
        raise AssertionError("the prompt was expected to fail but succeeded")


def _can_die_with_parent() -> bool:
    import sys

    return sys.platform.startswith("linux")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def node_outputs(history_entry: dict[str, Any], node: str) -> dict[str, Any]:
    """The UI outputs that node ``node`` reported in a history entry."""
    return history_entry.get("outputs", {}).get(node, {})


def copy_into(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)
    return dst
