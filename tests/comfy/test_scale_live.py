"""Issue 15 live, Syn-MS1M on tiny models through servers that ``fdta run`` starts itself:

* the ``--sbatch`` script runs as-is with the Slurm array variables set and no Slurm installed (two
  tasks, one after the other, each starting its own server), and the last task merges the set;
* ``--launch 2``: a ComfyUI server SIGKILLed mid-chunk has its chunk run again on the other server (the
  dead one is restarted), and ``--merge-to`` merges a set with every identity exactly once;
* the runner SIGKILLed mid-chunk (its server survives): the resumed run follows the prompt that was
  running instead of queueing the chunk again; no chunk is redone or duplicated;
* ``--ray`` on a local cluster (2 CPUs) with two actors that own their servers: one actor SIGKILLed
  mid-chunk; its chunk runs again on the other actor and the merged set has every identity exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fdta_core.dataset import inspect, list_chunks
from tests.comfy.harness import REPO
from tests.comfy.tiny_run import TinyRun, tiny_ms1m  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]

IDENTITIES = 4
#: per identity: 2 STG styles x (original + 1 aged image)
IMAGES = IDENTITIES * 2 * 2


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "FDTA_SHARD"}
    env.pop("PYTHONPATH", None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # this machine has no GPU: one CPU server per node
    env.update(extra)
    return env


def _fdta(*argv: str) -> list[str]:
    return [sys.executable, "-m", "fdta_core", *argv]


def _manifest(run_dir: Path, shard: str = "0000-of-0001") -> dict:
    try:
        return json.loads((run_dir / f"run-shard{shard}.json").read_text())["chunks"]
    except (FileNotFoundError, ValueError):
        return {}


def _wait_running(run_dir: Path, index: int, proc: subprocess.Popen, timeout: float = 900) -> dict:
    """Wait until chunk ``index`` runs (its prompt queued); return its manifest record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = _manifest(run_dir).get(str(index))
        if rec and rec["state"] == "running" and rec.get("prompt_id"):
            return rec
        assert proc.poll() is None, f"the run ended before chunk {index} started:\n{_out(proc)}"
        time.sleep(0.2)
    raise AssertionError(f"chunk {index} never started")


def _out(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "(still running)"
    return f"{(out or '')[-3000:]}\n{(err or '')[-6000:]}"


def _check_merged(merged: Path) -> None:
    """Every identity 0..IDENTITIES-1 exactly once, every image there (fdta rec info agrees)."""
    import sqlite3

    rep = inspect(merged)
    assert rep.ok and rep.classes == IDENTITIES and rep.images == IMAGES, rep.to_dict()
    with sqlite3.connect(merged / "manifest.sqlite") as db:
        ids = [r[0] for r in db.execute("SELECT identity FROM identities ORDER BY identity")]
    assert ids == list(range(IDENTITIES))
    res = subprocess.run(_fdta("rec", "info", str(merged), "--json"), cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0 and json.loads(res.stdout)["classes"] == IDENTITIES, res.stderr


def _pid_of_server(url: str) -> int:
    """The pid of the ComfyUI process listening on ``url``'s port (found through /proc)."""
    port = url.rsplit(":", 1)[1]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"main.py" in cmd and b"--port" in cmd and cmd[cmd.index(b"--port") + 1] == port.encode():
            return int(d.name)
    raise AssertionError(f"no ComfyUI process on port {port}")


def test_sbatch_script_runs_without_slurm(tiny_ms1m: TinyRun, tmp_path: Path) -> None:  # noqa: F811
    t = tiny_ms1m
    run_dir, out, merged, script = (
        tmp_path / "run",
        tmp_path / "out",
        tmp_path / "merged",
        tmp_path / "job.sbatch",
    )
    argv = _fdta("run", str(t.workflow), "--run-dir", str(run_dir), "--identities", str(IDENTITIES),
                 "--chunk-size", "1", "--seed", "1", "--timeout", "900", *t.set_args("fdta/sbatch"),
                 *t.location_args(), "--output-dir", str(out), "--merge-to", str(merged),
                 "--sbatch", str(script), "--array", "2", "--gpus-per-node", "0")  # fmt: skip
    res = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for task in (0, 1):  # what Slurm would start on two nodes (here one after the other)
        env = _env(SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_JOB_ID="77")
        res = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=1500)  # fmt: skip
        assert res.returncode == 0, f"task {task}:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        assert summary["done"] == 2 and summary["failed"] == 0
        assert summary["merged"] == (str(merged) if task == 1 else None)
        assert f"array task {task} of 2" in res.stdout
    shards = [_manifest(run_dir, f"000{i}-of-0002") for i in (0, 1)]
    assert sorted(int(k) for k in shards[0]) == [0, 2] and sorted(int(k) for k in shards[1]) == [1, 3]
    assert [c.name for c in list_chunks(out / "fdta" / "sbatch")] == [
        f"{i:09d}-{i + 1:09d}" for i in range(IDENTITIES)
    ]
    _check_merged(merged)
