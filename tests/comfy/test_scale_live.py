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


def _run_args(t: TinyRun, run_dir: Path, out: Path, name: str) -> list[str]:
    return ["run", str(t.workflow), "--run-dir", str(run_dir), "--identities", str(IDENTITIES), "--chunk-size", "1",
            "--seed", "1", "--timeout", "900", "--retries", "2", *t.set_args(name), "--output-dir", str(out)]  # fmt: skip


def _alive(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/queue", timeout=5):
            return True
    except OSError:
        return False


def test_ray_actor_killed_mid_chunk(tiny_ms1m: TinyRun, tmp_path: Path) -> None:  # noqa: F811
    """Must-show of issue 15: Syn-MS1M over a local Ray cluster (2 CPUs) with two actors that own their
    ComfyUI servers; one actor is SIGKILLed mid-chunk; the merged set has every identity exactly once."""
    t = tiny_ms1m
    run_dir, out, merged = tmp_path / "run", tmp_path / "out", tmp_path / "merged"
    argv = _fdta(*_run_args(t, run_dir, out, "fdta/ray"), *t.location_args(), "--ray", "local",
                 "--cpus-per-actor", "1", "--merge-to", str(merged))  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        rec = _wait_running(run_dir, 1, proc)
        time.sleep(3)  # well inside the chunk (the tiny graph takes longer than this on this machine)
        rec = _manifest(run_dir)["1"]
        assert rec["state"] == "running" and rec["worker"].startswith("ray actor"), rec
        pid = int(rec["worker"].split(" pid ")[1].split()[0])
        os.kill(pid, signal.SIGKILL)
        # the actor's server dies with it: nothing keeps running the chunk behind the runner's back
        deadline = time.monotonic() + 30
        while _alive(rec["server"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(rec["server"]), "the killed actor's ComfyUI server outlived it"
        out_s, err_s = proc.communicate(timeout=2400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{out_s[-3000:]}\n{err_s[-8000:]}"
    summary = json.loads(out_s.strip().splitlines()[-1])
    assert summary["done"] == IDENTITIES and summary["merged"] == str(merged)
    final = _manifest(run_dir)
    assert final["1"]["attempts"] == 2 and final["1"]["worker"] != rec["worker"]  # run again elsewhere
    assert all(final[str(i)]["attempts"] == 1 for i in (0, 2, 3))
    assert [c.name for c in list_chunks(out / "fdta" / "ray")] == [
        f"{i:09d}-{i + 1:09d}" for i in range(IDENTITIES)
    ]
    _check_merged(merged)


def test_launch_server_killed_mid_chunk_runs_it_on_the_other_server(
    tiny_ms1m: TinyRun,  # noqa: F811
    tmp_path: Path,
) -> None:
    t = tiny_ms1m
    run_dir, out, merged = tmp_path / "run", tmp_path / "out", tmp_path / "merged"
    argv = _fdta(*_run_args(t, run_dir, out, "fdta/launch"), *t.location_args(), "--launch", "2",
                 "--merge-to", str(merged))  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        rec = _wait_running(run_dir, 1, proc)
        time.sleep(3)
        rec = _manifest(run_dir)["1"]
        assert rec["state"] == "running", rec
        os.kill(_pid_of_server(rec["server"]), signal.SIGKILL)
        out_s, err_s = proc.communicate(timeout=2400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{out_s[-3000:]}\n{err_s[-8000:]}"
    assert "restarting it" in err_s  # the supervisor brought the dead server back
    final = _manifest(run_dir)
    assert (
        final["1"]["attempts"] == 2
        and final["1"]["server"] != rec["server"]
        and final["1"]["state"] == "done"
    )
    assert json.loads(out_s.strip().splitlines()[-1])["merged"] == str(merged)
    _check_merged(merged)


def test_runner_sigkilled_mid_chunk_resumes_without_redoing(tiny_ms1m: TinyRun, tmp_path: Path) -> None:  # noqa: F811
    """The runner dies (SIGKILL) while its server runs chunk 1; the resumed runner follows that prompt
    instead of queueing the chunk again, and leaves chunk 0 alone: the server ran every chunk once."""
    from fdta_core.comfy_server import ComfyServer
    from fdta_core.runner.launch import LaunchSpec

    t = tiny_ms1m
    run_dir, out, merged = tmp_path / "run", tmp_path / "out", tmp_path / "merged"
    spec = LaunchSpec(t.comfyui_dir, t.python, tmp_path / "srv", out, t.input_dir, models_dir=t.models_dir)
    server = ComfyServer(t.comfyui_dir, t.python, tmp_path / "srv" / "server", output=out, input=t.input_dir,
                         extra_args=["--extra-model-paths-config", str(spec.models_yaml())])  # fmt: skip
    server.start()
    try:
        argv = _fdta(*_run_args(t, run_dir, out, "fdta/resume"), "--server", server.url)
        proc = subprocess.Popen(
            argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            rec = _wait_running(run_dir, 1, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        first = _manifest(run_dir)
        assert first["0"]["state"] == "done" and first["1"]["state"] == "running"
        chunk0 = out / "fdta" / "resume" / "chunks" / "000000000-000000001" / "chunk.json"
        made = json.loads(chunk0.read_text())["created"]
        res = subprocess.run(_fdta(*argv[3:], "--merge-to", str(merged)), cwd=REPO, env=_env(), capture_output=True,
                             text=True, timeout=2400)  # fmt: skip
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-8000:]}"
        final = _manifest(run_dir)
        assert all(final[str(i)]["attempts"] == 1 for i in range(IDENTITIES)), final
        assert final["1"]["prompt_id"] == rec["prompt_id"]  # the prompt that ran when the runner died
        assert json.loads(chunk0.read_text())["created"] == made  # chunk 0 not written again
        history = server.get("/history")
        starts = sorted(
            next(
                n["inputs"]["identity_start"]
                for n in h["prompt"][2].values()
                if n["class_type"] == "FDTAAttributeSpec"
            )
            for h in history.values()
        )
        assert starts == list(range(IDENTITIES))  # every chunk queued exactly once
    finally:
        server.stop()
    _check_merged(merged)
