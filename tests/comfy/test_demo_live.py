"""``fdta demo`` against the ComfyUI at COMFYUI_DIR, as a user runs it: its last stdout line is the
JSON summary, the data set it names is sound (``fdta rec info``), the report and model exist; a Ctrl-C
in the middle stops its ComfyUI server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.comfy.harness import comfy_or_skip

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.comfy]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    comfy_or_skip()
    return tmp_path_factory.mktemp("demo_workdir")


def _demo_cmd(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "fdta_core", "demo", "--workdir", str(workdir), "--no-install"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_demo_runs_the_pipeline_and_ends_with_the_json_line(workdir: Path) -> None:
    t0 = time.monotonic()
    res = subprocess.run(
        _demo_cmd(workdir), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1500
    )
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    lines = res.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) >= {"dataset", "identities", "images", "report", "model", "verify"}
    assert "PLUMBING DEMO" in res.stdout  # no real weights here: said plainly
    # 4 identities x 4 STG styles x (original + 1 aged)
    assert summary["identities"] == 4 and summary["images"] == 32
    assert Path(summary["report"]).is_file() and Path(summary["report"]).with_suffix(".json").is_file()
    assert Path(summary["model"]).is_file()
    v = summary["verify"]
    assert v["pairs"] == 60 and 0.0 <= v["accuracy_mean"] <= 1.0 and Path(v["bin"]).is_file()
    info = subprocess.run([sys.executable, "-m", "fdta_core", "rec", "info", summary["dataset"], "--json"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert info.returncode == 0, info.stderr
    rec = json.loads(info.stdout)
    assert rec["ok"] and rec["classes"] == 4 and rec["images"] == 32 and rec["layout"] == "insightface"
    # the server is gone: its port no longer answers
    port = int(next(ln for ln in lines if "ComfyUI is up at" in ln).rsplit(":", 1)[1].split(";")[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    print(f"fdta demo took {time.monotonic() - t0:.0f} s")


def test_ctrl_c_stops_the_server(workdir: Path) -> None:
    proc = subprocess.Popen(_demo_cmd(workdir), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    port = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "ComfyUI is up at" in line:
                port = int(line.rsplit(":", 1)[1].split(";")[0])
                break
        assert port is not None, "the demo never started its server"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=120) == 130
        assert "ComfyUI stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
