"""Start, inspect and stop training runs as detached processes (used by ``fdta train`` and the
``FDTATrainerLauncher`` node).

A run is a directory. Launching into a directory that already holds a checkpoint resumes it (the
recipe's essentials must match); launching while its process is alive does nothing but report. The
command is an argument list (never a shell string) running ``python -m torch.distributed.run ... -m
fdta_core.train`` with ``PYTHONPATH`` set to the folder that holds ``fdta_core``, because a fresh Python
started from ComfyUI does not have the node pack on its path.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExternalServiceError
from ..fsutil import atomic_write_text
from .recipes import TrainConfig
from .trainer import latest_checkpoint

log = logging.getLogger(__name__)

#: Recipe keys that may not change when a run is resumed (they change the model or the data).
ESSENTIAL_KEYS = (
    "data",
    "network",
    "layers",
    "width",
    "embedding_size",
    "image_size",
    "loss",
    "num_classes",
    "seed",
)

PACK_ROOT = Path(__file__).resolve().parents[2]

#: Processes started by this Python process, polled by :func:`run_state` so that finished children are
#: reaped (no zombies in a long-lived ComfyUI server) and tests can wait on them.
CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass
class Topology:
    """Processes per node and the multi-node rendezvous (``nnodes`` > 1 needs ``master_addr``)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = ""
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1


def prepare_run(config: TrainConfig) -> tuple[Path, bool]:
    """Create the run directory and write ``recipe.json``; returns ``(run_dir, resuming)``.

    When the directory already has a checkpoint the new recipe must agree with the old one on
    :data:`ESSENTIAL_KEYS`; other keys (epochs, intervals, workers, val_bins...) may change.
    """
    config.validate()
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = run_dir / "recipe.json"
    resuming = latest_checkpoint(run_dir) is not None
    if resuming and recipe.is_file():
        old = json.loads(recipe.read_text())
        diff = [k for k in ESSENTIAL_KEYS if old.get(k) != config.to_dict().get(k)]
        if diff:
            raise ConfigError(
                f"{run_dir} holds a run with a different {', '.join(diff)} "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)})",
                where="output",
                fix="use a new output folder, or the same recipe to resume that run.",
            )
    atomic_write_text(recipe, json.dumps(config.to_dict(), indent=1))
    return run_dir, resuming


def build_command(run_dir: str | Path, topo: Topology, python: str | None = None) -> list[str]:
    """The argument list that trains ``run_dir/recipe.json`` (torchrun when distributed)."""
    python = python or sys.executable
    recipe = str(Path(run_dir).resolve() / "recipe.json")
    if not topo.distributed:
        return [python, "-m", "fdta_core.train", "--config", recipe]
    cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={int(topo.nproc_per_node)}"]
    if topo.nnodes > 1:
        if not topo.master_addr:
            raise ConfigError(
                "multi-node training needs master_addr (the address of node 0)", where="master_addr"
            )
        cmd += [
            f"--nnodes={int(topo.nnodes)}",
            f"--node_rank={int(topo.node_rank)}",
            f"--master_addr={topo.master_addr}",
            f"--master_port={int(topo.master_port)}",
        ]
    else:
        cmd += ["--standalone", "--nnodes=1"]
    return cmd + ["-m", "fdta_core.train", "--config", recipe]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the training process: ``PYTHONPATH`` starts with the pack root."""
    env = dict(os.environ)
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PACK_ROOT) + (os.pathsep + old if old else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited child not yet reaped) counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_state(run_dir: str | Path) -> dict[str, Any]:
    """What a person wants to know about a run: status, step/total, loss, last verification, pid.

    ``status`` is the trainer's own (running/finished/stopped/failed) corrected by whether the launched
    process still lives: a run that says "running" without a process is reported as ``dead``.
    """
    run_dir = Path(run_dir)
    state = _read_json(run_dir / "state.json")
    launcher = _read_json(run_dir / "launcher.json")
    pid = int(launcher.get("pid", 0))
    if pid in CHILDREN and CHILDREN[pid].poll() is not None:
        CHILDREN.pop(pid)
    alive = _alive(pid)
    status = state.get("status", "not started")
    if alive and float(state.get("updated", 0)) < float(launcher.get("started", 0)):
        status = "starting"  # the new process has not written its state yet
    if not alive and status in ("running", "starting"):
        status = "dead"  # killed without a chance to record it; launching again resumes
    latest = latest_checkpoint(run_dir)
    return {
        **state,
        "status": status,
        "run_dir": str(run_dir),
        "launcher_pid": pid,
        "alive": alive,
        "latest_checkpoint_step": latest["step"] if latest else None,
        "stop_requested": (run_dir / "STOP").exists(),
    }


def start_detached(run_dir: str | Path, topo: Topology, *, python: str | None = None) -> dict[str, Any]:
    """Start training of ``run_dir/recipe.json`` in a new session; returns at once.

    Output goes to ``run_dir/stdout.log``; ``launcher.json`` records the pid and command. If the run's
    process is already alive, nothing is started and its state is returned.
    """
    run_dir = Path(run_dir).resolve()
    current = run_state(run_dir)
    if current["alive"]:
        log.info("run %s is already running (pid %d)", run_dir, current["launcher_pid"])
        return current
    stop = run_dir / "STOP"
    if stop.exists():
        stop.unlink()
    cmd = build_command(run_dir, topo, python)
    out = open(run_dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
    kwargs: dict[str, Any] = {}
    if os.name == "nt":  # pragma: no cover
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
    else:
        kwargs["start_new_session"] = True
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=str(run_dir),
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            **kwargs,
        )
    except OSError as exc:
        raise ExternalServiceError(f"could not start training ({exc})", where=str(run_dir)) from None
    finally:
        out.close()
    started = time.time()
    atomic_write_text(
        run_dir / "launcher.json",
        json.dumps({"pid": proc.pid, "cmd": cmd, "started": started, "topology": topo.__dict__}, indent=1),
    )
    log.info("started training in %s (pid %d): %s", run_dir, proc.pid, " ".join(cmd))
    CHILDREN[proc.pid] = proc
    return {**run_state(run_dir), "status": "starting", "launcher_pid": proc.pid, "alive": True}


def request_stop(run_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Ask the run to checkpoint and exit (``STOP`` file, honoured within 10 steps); with ``force``
    also send SIGTERM to its process group (the trainer still checkpoints on SIGTERM)."""
    run_dir = Path(run_dir)
    (run_dir / "STOP").write_text(f"stop requested at {time.time()}\n")
    state = run_state(run_dir)
    if force and state["alive"] and os.name != "nt":
        try:
            os.killpg(os.getpgid(state["launcher_pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return run_state(run_dir)


def run_foreground(run_dir: str | Path, topo: Topology, *, python: str | None = None) -> int:
    """Run the training command and wait (``fdta train`` without ``--detach``); a dead torchrun is an error."""
    cmd = build_command(run_dir, topo, python)
    log.info("running %s", " ".join(cmd))
    rc = subprocess.call(cmd, env=child_env())
    if rc not in (0,):
        cause, fix = _failure_advice(run_dir)
        raise ExternalServiceError(f"training exited with status {rc}{cause}", where=str(run_dir), fix=fix)
    return rc


#: What to do about a failure that resuming cannot cure, by the kind of error the trainer recorded.
_KIND_FIX = {
    "DatasetError": "check the data set with `fdta rec info DATA`, then rewrite or leave out the broken chunk "
    "(or merge the good ones with `fdta rec merge`) and start again.",
    "ConfigError": "correct the recipe or options it names and start again.",
    "InputError": "correct the input it names and start again.",
    "ModelNotFoundError": "put the model where the message says and start again.",
    "ModelFormatError": "use a model file of the expected layout and start again.",
}


def _failure_advice(run_dir: str | Path) -> tuple[str, str]:
    """The cause and advice after a failed run: resume only where resuming can help (see ``failure_record``)."""
    state = _read_json(Path(run_dir) / "state.json")
    if state.get("status") == "failed" and state.get("error_resumable") is False:
        error = str(state.get("error") or "")
        kind = error.split(":", 1)[0]
        fix = state.get("error_fix") or _KIND_FIX.get(kind, "correct the input it names and start again.")
        return f" ({error})", f"running the same command again fails the same way: {fix}"
    return "", (
        f"read {Path(run_dir) / 'train.log'} and state.json; run the same command again to resume "
        "from the last checkpoint."
    )


def format_state(state: dict[str, Any]) -> str:
    """A few lines for a person (the node's text output and ``fdta train --status``)."""
    lines = [f"run: {state.get('run_dir', '?')}", f"status: {state.get('status', '?')}"]
    if state.get("total_steps"):
        step, total = int(state.get("step", 0)), int(state["total_steps"])
        lines.append(
            f"step: {step}/{total} ({100 * step / max(total, 1):.1f}%), epoch {state.get('epoch', '?')}"
        )
    if state.get("loss") is not None:
        lines.append(f"loss: {float(state['loss']):.4f}")
    if state.get("samples_per_sec"):
        eta = float(state.get("eta_s") or 0)
        lines.append(f"speed: {float(state['samples_per_sec']):.0f} samples/s, ETA {eta / 3600:.2f} h")
    if state.get("latest_checkpoint_step") is not None:
        lines.append(f"last checkpoint: step {state['latest_checkpoint_step']}")
    ver = state.get("last_verification")
    if ver:
        parts = [f"{k} {100 * v['accuracy_mean']:.2f}" for k, v in ver.get("results", {}).items()]
        lines.append(f"verification @ step {ver.get('step')}: " + ", ".join(parts))
    if state.get("error"):
        lines.append(f"error: {state['error']}")
    if state.get("stop_requested") and state.get("alive"):
        lines.append("stop requested: the run checkpoints and exits within 10 steps")
    if state.get("status") == "failed" and state.get("error_resumable") is False:
        lines.append("running again fails the same way: fix the cause above first")
    if state.get("status") == "dead":
        lines.append("the process is gone without recording why (see stdout.log); start again to resume")
    if state.get("launcher_pid"):
        lines.append(f"pid: {state['launcher_pid']} ({'alive' if state.get('alive') else 'exited'})")
    return "\n".join(lines)
