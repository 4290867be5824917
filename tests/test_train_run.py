"""End-to-end CPU training on a synthetic .rec of distinguishable classes: one process, two processes
through torchrun (gloo), exact resume, and the detached launcher with stop and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fdta_core.eval.models import load_model_embedder, torch_embedder
from fdta_core.eval.verification import verify
from fdta_core.iresnet import build_backbone
from fdta_core.testing.train import write_synthetic_bin, write_synthetic_rec
from fdta_core.train import launch
from fdta_core.train.recipes import make_config
from fdta_core.train.trainer import run_training

REPO = Path(__file__).resolve().parent.parent
SIZE = 32
CLASSES = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: OpenMP threads waiting on each other cost far more than
    they bring, so in-process work runs on one thread (torchrun children get OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    data = write_synthetic_rec(root / "data", CLASSES, 24, seed=3, size=SIZE)
    # held-out images: a different random stream of the same class patterns
    val = write_synthetic_bin(root / "val.bin", CLASSES, 200, seed=3, size=SIZE)
    return data, val


def _accuracy(model_path, val) -> float:
    embed, size = load_model_embedder(model_path)
    return verify(embed, [val], size=size)[0].accuracy_mean


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_cpu_reaches_high_verification_accuracy(synth, tmp_path):
    data, val = synth
    torch.manual_seed(0)
    untrained = verify(
        torch_embedder(build_backbone("r4", width=8, num_features=64, input_size=SIZE)), [val], size=SIZE
    )
    cfg = make_config(
        "tiny",
        data=str(data),
        output=str(tmp_path / "run"),
        val_bins=[str(val)],
        max_steps=200,
        verify_every=100,
        save_every=100,
        log_every=20,
    )
    state = run_training(cfg)
    assert state["status"] == "finished" and state["step"] == 200
    acc = _accuracy(tmp_path / "run" / "model.pt", val)
    assert acc >= 0.9, acc
    assert acc >= untrained[0].accuracy_mean + 0.15
    events = _metrics(tmp_path / "run")
    train = [e for e in events if e["event"] == "train"]
    assert len(train) == 10 and train[-1]["loss"] < train[0]["loss"] / 4
    ver = [e for e in events if e["event"] == "verify"]
    assert [e["step"] for e in ver] == [100, 200]
    assert ver[-1]["results"]["val"]["accuracy_mean"] == pytest.approx(acc)
    assert "loss" in (tmp_path / "run" / "train.log").read_text()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["num_classes"] == CLASSES and run["num_images"] == CLASSES * 24


def test_train_torchrun_two_processes(synth, tmp_path):
    data, val = synth
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "fdta_core",
        "train",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--output",
        str(run),
        "--max-steps",
        "120",
        "--batch-size",
        "16",
        "--val-bins",
        str(val),
        "--verify-every",
        "120",
        "--save-every",
        "60",
        "--log-every",
        "20",
        "--nproc-per-node",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["global_batch"] == 32
    ckpt = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert ckpt["step"] == 120 and ckpt["world_size"] == 2
    assert sorted(p.name for p in (run / "checkpoints" / ckpt["dir"]).iterdir()) == ["rank_0.pt", "rank_1.pt"]
    # each rank holds half of the class centres
    shard = torch.load(run / "checkpoints" / ckpt["dir"] / "rank_1.pt", weights_only=True)["pfc"]["weight"]
    assert shard.shape[0] == CLASSES // 2
    acc = _accuracy(run / "model.pt", val)
    assert acc >= 0.85, acc


def test_resume_is_exact(synth, tmp_path):
    data, _ = synth
    common = dict(data=str(data), max_steps=40, save_every=1000, log_every=10, batch_size=16, dropout=0.1)
    straight = run_training(make_config("tiny", output=str(tmp_path / "a"), **common))
    assert straight["status"] == "finished"

    def stop_at_20(done, total):
        if done == 20:
            (tmp_path / "b" / "STOP").write_text("")

    first = run_training(make_config("tiny", output=str(tmp_path / "b"), **common), progress=stop_at_20)
    assert first["status"] == "stopped" and first["step"] == 20
    assert (tmp_path / "b" / "STOP").exists()  # left for a person to see; the next start removes it
    second = run_training(make_config("tiny", output=str(tmp_path / "b"), **common))
    assert second["status"] == "finished" and second["step"] == 40
    assert not (tmp_path / "b" / "STOP").exists()
    assert any(e["event"] == "resume" and e["step"] == 20 for e in _metrics(tmp_path / "b"))
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["backbone"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["backbone"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _wait(pred, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.3)
    return False


def test_detached_launcher_stop_and_resume(synth, tmp_path):
    data, _ = synth
    run = tmp_path / "det"
    cfg = make_config(
        "tiny", data=str(data), output=str(run), max_steps=100000, save_every=100000, log_every=10
    )
    run_dir, resuming = launch.prepare_run(cfg)
    assert not resuming
    state = launch.start_detached(run_dir, launch.Topology())
    pid = state["launcher_pid"]
    assert state["alive"]
    # a second launch while it runs starts nothing
    assert launch.start_detached(run_dir, launch.Topology())["launcher_pid"] == pid
    assert _wait(lambda: launch.run_state(run_dir).get("step", 0) >= 10), (
        run_dir / "stdout.log"
    ).read_text()[-2000:]
    assert launch.run_state(run_dir)["status"] == "running"
    launch.request_stop(run_dir)
    launch.CHILDREN[pid].wait(timeout=120)
    state = launch.run_state(run_dir)
    assert state["status"] == "stopped" and not state["alive"], state
    stopped_at = state["latest_checkpoint_step"]
    assert stopped_at and stopped_at % 10 == 0
    assert "status: stopped" in launch.format_state(state)
    # an essential change is refused; a new step budget is fine and the run resumes
    with pytest.raises(Exception, match="different"):
        launch.prepare_run(make_config("tiny", data=str(data), output=str(run), network="r18"))
    cfg2 = make_config(
        "tiny", data=str(data), output=str(run), max_steps=stopped_at + 10, save_every=100000, log_every=10
    )
    _, resuming = launch.prepare_run(cfg2)
    assert resuming
    pid2 = launch.start_detached(run_dir, launch.Topology())["launcher_pid"]
    launch.CHILDREN[pid2].wait(timeout=120)
    state = launch.run_state(run_dir)
    assert state["status"] == "finished" and state["step"] == stopped_at + 10, state
    assert any(e["event"] == "resume" and e["step"] == stopped_at for e in _metrics(run))


def test_killed_run_is_reported_dead_and_resumes(synth, tmp_path):
    import signal

    data, _ = synth
    run = tmp_path / "killed"
    cfg = make_config("tiny", data=str(data), output=str(run), max_steps=100000, save_every=10, log_every=10)
    run_dir, _ = launch.prepare_run(cfg)
    pid = launch.start_detached(run_dir, launch.Topology())["launcher_pid"]
    assert _wait(lambda: (launch.run_state(run_dir)["latest_checkpoint_step"] or 0) >= 10)
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # our own child's session: no chance to clean up
    launch.CHILDREN[pid].wait(timeout=60)
    state = launch.run_state(run_dir)
    assert state["status"] == "dead" and "resume" in launch.format_state(state)
    saved = state["latest_checkpoint_step"]
    cfg2 = make_config(
        "tiny", data=str(data), output=str(run), max_steps=saved + 5, save_every=10, log_every=10
    )
    _, resuming = launch.prepare_run(cfg2)
    assert resuming
    pid2 = launch.start_detached(run_dir, launch.Topology())["launcher_pid"]
    launch.CHILDREN[pid2].wait(timeout=120)
    state = launch.run_state(run_dir)
    assert state["status"] == "finished" and state["step"] == saved + 5, state
    assert any(e["event"] == "resume" and e["step"] == saved for e in _metrics(run))
