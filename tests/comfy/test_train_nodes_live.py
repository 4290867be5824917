"""Training nodes in a real ComfyUI: FDTATrainerLauncher starts a detached run (tiny preset, synthetic
.rec) under the output folder and returns at once; status follows it; stop checkpoints and ends it;
launching again resumes (the run folder keeps its history); '..' run names are refused; FDTAVerify
scores the trained model on a synthetic .bin."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

from tests.comfy.harness import ComfyServer, node_outputs

RUN = "live_train/run1"
DATA = "live_train/data"


def _launcher(action: str, run_name: str = RUN, **overrides) -> dict:
    recipe = {"save_every": 5, "log_every": 1, "verify_every": 100000, "max_steps": 100000, **overrides}
    return {
        "T": {
            "class_type": "FDTATrainerLauncher",
            "inputs": {"action": action, "run_name": run_name, "preset": "tiny", "dataset_dir": DATA,
                       "network": "preset", "loss": "preset", "epochs": 0, "batch_size": 8, "gpus": 1,
                       "device": "cpu", "val_bins": "", "overrides": json.dumps(recipe)},
        }
    }  # fmt: skip


def _state(comfy: ComfyServer, action: str = "status", **kw) -> tuple[str, str]:
    entry = comfy.run(_launcher(action, **kw), timeout=120)
    text = node_outputs(entry, "T")["text"][0]
    return text, re.search(r"^status: (\S+)", text, re.M).group(1)


def _wait(comfy: ComfyServer, pred, what: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text, status = _state(comfy)
        if pred(text, status):
            return text
        if status in ("failed", "dead"):
            break
        time.sleep(1.0)
    raise AssertionError(f"run never {what}:\n{text}")


def _step(text: str) -> int:
    m = re.search(r"^step: (\d+)/", text, re.M)
    return int(m.group(1)) if m else 0


def _checkpoint(text: str) -> int | None:
    m = re.search(r"^last checkpoint: step (\d+)", text, re.M)
    return int(m.group(1)) if m else None


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_launch_status_stop_resume_verify(comfy: ComfyServer) -> None:
    from fdta_core.testing.train import write_synthetic_bin, write_synthetic_rec

    write_synthetic_rec(comfy.output_dir / DATA, num_classes=4, per_class=8, seed=0)
    run_dir = (comfy.output_dir / RUN).resolve()
    try:
        entry = comfy.run(_launcher("start_or_resume"), timeout=120)
        text = node_outputs(entry, "T")["text"][0]
        # returned at once: the prompt is done while the detached trainer has not finished
        assert re.search(r"^status: (starting|running)$", text, re.M), text
        assert "(alive)" in text
        assert f"run: {run_dir}" in text
        launcher = json.loads((run_dir / "launcher.json").read_text())
        assert Path(launcher["cmd"][0]).resolve() == comfy.python.resolve()  # ComfyUI's own interpreter
        assert (run_dir / "recipe.json").is_file()

        text = _wait(comfy, lambda t, s: s == "running" and (_checkpoint(t) or 0) >= 5, "checkpointed")
        # stop: the trainer checkpoints and exits within 10 steps
        text, _ = _state(comfy, "stop")
        assert "stop requested" in text or "status: stopped" in text, text
        text = _wait(comfy, lambda t, s: s == "stopped" and "(exited)" in t, "stopped")
        stopped_at = _step(text)
        assert _checkpoint(text) == stopped_at, text  # stopping saved a checkpoint at the last step

        # launching again resumes from that checkpoint (and now ends soon)
        text, status = _state(comfy, "start_or_resume", max_steps=stopped_at + 6)
        assert status in ("starting", "running"), text
        text = _wait(comfy, lambda t, s: s == "finished" and "(exited)" in t, "finished")
        assert _step(text) == stopped_at + 6
        events = _events(run_dir)
        starts = [e for e in events if e["event"] == "start"]
        resumes = [e for e in events if e["event"] == "resume"]
        assert len(starts) == 2 and starts[0]["step"] == 0 and starts[1]["step"] == stopped_at, starts
        assert len(resumes) == 1 and resumes[0]["step"] == stopped_at, resumes
        assert (run_dir / "model.pt").is_file()
    finally:
        _ensure_stopped(run_dir)

    # '..' in a run name is refused with a message that names the input and the fix
    msgs = json.loads(comfy.run_error(_launcher("start_or_resume", run_name="../escape")))
    msg = msgs[0][1]["exception_message"]
    assert msg.startswith("FDTATrainerLauncher.run_name: '../escape' contains '..'"), msg
    assert "Fix:" in msg
    assert not (comfy.base / "escape").exists()

    # verification of the trained model on a synthetic benchmark
    write_synthetic_bin(comfy.input_dir / "live_val.bin", num_classes=4, pairs=40, seed=0)
    graph = {
        "V": {"class_type": "FDTAVerify",
              "inputs": {"model": str(run_dir / "model.pt"), "bins": "live_val.bin", "batch_size": 16}},
        "J": {"class_type": "PreviewAny", "inputs": {"source": ["V", 1]}},
    }  # fmt: skip
    entry = comfy.run(graph, timeout=180)
    table = node_outputs(entry, "V")["text"][0]
    assert "live_val" in table, table
    data = json.loads(node_outputs(entry, "J")["text"][0])
    res = data["live_val"]
    assert res["pairs"] == 40 and 0.0 <= res["accuracy_mean"] <= 1.0 and res["accuracy_std"] >= 0.0
    assert f"{100 * res['accuracy_mean']:.2f}" in table


def _ensure_stopped(run_dir: Path, timeout: float = 30) -> None:
    """Never leave a trainer behind when the test fails: STOP file, then SIGTERM to its own group."""
    try:
        pid = int(json.loads((run_dir / "launcher.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    (run_dir / "STOP").write_text("test teardown\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGTERM)  # the launcher starts the trainer in its own session (pgid = pid)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_two_process_run_through_torchrun(comfy: ComfyServer) -> None:
    """gpus=2 on the CPU: the launcher runs ``python -m torch.distributed.run`` with ComfyUI's
    interpreter (gloo); the run finishes with world size 2."""
    from fdta_core.testing.train import write_synthetic_rec

    data = comfy.output_dir / "live_train" / "data_ddp"
    write_synthetic_rec(data, num_classes=4, per_class=8, seed=1)
    graph = _launcher("start_or_resume", run_name="live_train/ddp", max_steps=4, save_every=2)
    graph["T"]["inputs"].update(gpus=2, dataset_dir="live_train/data_ddp", batch_size=4)
    run_dir = (comfy.output_dir / "live_train" / "ddp").resolve()
    try:
        entry = comfy.run(graph, timeout=120)
        text = node_outputs(entry, "T")["text"][0]
        assert "(alive)" in text, text
        cmd = json.loads((run_dir / "launcher.json").read_text())["cmd"]
        assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd
        assert Path(cmd[0]).resolve() == comfy.python.resolve()
        status_graph = {"T": {**graph["T"], "inputs": {**graph["T"]["inputs"], "action": "status"}}}
        deadline, status = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            text = node_outputs(comfy.run(status_graph, timeout=120), "T")["text"][0]
            status = re.search(r"^status: (\S+)", text, re.M).group(1)
            if (status == "finished" and "(exited)" in text) or status in ("failed", "dead"):
                break
            time.sleep(1.0)
        assert status == "finished", f"{text}\n{(run_dir / 'stdout.log').read_text()[-3000:]}"
        assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
        assert _step(text) == 4 and (run_dir / "model.pt").is_file()
    finally:
        _ensure_stopped(run_dir)
