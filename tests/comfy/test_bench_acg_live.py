"""bench/bench_acg.py imports the node's sampling path inside ComfyUI: it must keep running as the node
set changes (it silently broke once when a helper moved into the core)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.comfy.harness import REPO, comfy_or_skip


def test_bench_acg_runs_on_comfyui_and_prints_its_ratio() -> None:
    root, python = comfy_or_skip()
    env = os.environ | {"COMFYUI_DIR": str(root), "COMFYUI_PYTHON": str(python)}
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_all.py"), "--only", "acg", "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(x for x in __import__("json").loads(r.stdout) if x["bench"] == "acg")
    assert row["value"] is not None and row["value"] > 0, row
    # the two modes sample the same candidates: their images agree up to float noise
    out = subprocess.run(
        [str(python), str(REPO / "bench" / "bench_acg.py"), "--quick"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    diff = int(re.search(r"max pixel difference between the two modes: (\d+)", out.stdout).group(1))
    assert diff <= 8, out.stdout
