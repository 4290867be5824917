"""A real ComfyUI server for acceptance tests, isolated in a temporary base directory.

The server runs ``main.py --cpu`` from ``COMFYUI_DIR`` with ``--base-directory`` pointing at a fresh
folder whose ``custom_nodes/`` links this pack, so the ComfyUI checkout is never modified and models,
inputs, outputs and the user folder are private to the test session. Only the standard library is used,
so the harness runs under any interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "ComfyUI-FDTA"


def comfy_checkout() -> tuple[Path | None, Path | None, str]:
    """``(comfyui_dir, python, reason)``; the paths are None (and reason says why) when unusable."""
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
    py = os.environ.get("COMFYUI_PYTHON")
    python = Path(py) if py else root / ".venv" / "bin" / "python"
    if not python.exists():
        return (
            None,
            None,
            (
                f"no interpreter for ComfyUI at {python} (create its venv with ../shared/tools/comfyui_up.sh "
                "or set COMFYUI_PYTHON)"
            ),
        )
    return root, python, ""


def comfy_or_skip() -> tuple[Path, Path]:
    """``(comfyui_dir, python)`` for a test, else skip saying why, or fail under ``FDTA_REQUIRE_COMFYUI=1``
    (``.ci/run`` sets it: in CI a live test that skips proves nothing)."""
    import pytest

    root, python, reason = comfy_checkout()
    if root is None or python is None:
        if os.environ.get("FDTA_REQUIRE_COMFYUI") == "1":
            pytest.fail(f"FDTA_REQUIRE_COMFYUI=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return root, python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PromptFailed(AssertionError):
    """A queued prompt was rejected or its execution failed; carries ComfyUI's error payload."""

    def __init__(self, message: str, payload: Any) -> None:
        super().__init__(f"{message}: {json.dumps(payload, indent=1)[:4000]}")
        self.payload = payload


@dataclass
class ComfyServer:
    comfyui_dir: Path
    python: Path
    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)
    #: extra environment variables of the server process (e.g. an API key a test must not see leak)
    env: dict[str, str] = field(default_factory=dict)

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
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def temp_dir(self) -> Path:
        """Where ComfyUI writes temp files: it appends ``temp`` to ``--temp-directory``."""
        return self.base / "temp" / "temp"

    @property
    def user_dir(self) -> Path:
        return self.base / "user"

    def prepare(self) -> None:
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)

    def start(self, timeout: float = 240.0) -> None:
        self.prepare()
        cmd = [
            str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base),
            "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.base / "temp"), "--user-directory", str(self.base / "user"),
            "--database-url", "sqlite:///:memory:", "--disable-auto-launch", *self.extra_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the pack must import the way ComfyUI imports it, nothing else
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.comfyui_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/object_info/KSampler", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

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
                raise RuntimeError(f"ComfyUI died while running the prompt:\n{self.log_tail()}")
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


if __name__ == "__main__":  # manual use: python tests/comfy/harness.py BASE_DIR -> serve until Ctrl-C
    root, python, reason = comfy_checkout()
    if root is None:
        sys.exit(reason)
    srv = ComfyServer(
        root, python, Path(sys.argv[1]).resolve(), port=int(os.environ.get("COMFY_PORT", "8188"))
    )
    srv.start()
    print(f"ComfyUI at {srv.url} (log {srv.log_path}); Ctrl-C stops it")
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        srv.stop()
