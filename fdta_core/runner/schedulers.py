"""Batch schedulers: ``--shard auto`` from the environment, and ``fdta run --sbatch`` (a Slurm array job).

A scheduler only has to start the same command N times with a task index: each task runs shard ``i`` of
``N`` (a deterministic, disjoint set of chunks) in the same run folder on shared storage, so a task that
is requeued resumes from its shard's manifest.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..fsutil import atomic_write_text
from .manifest import parse_shard


def resolve_shard(text: str, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``i/N``, or ``auto``: ``FDTA_SHARD=i/N`` when set, else a Slurm array task
    (``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN``, of ``SLURM_ARRAY_TASK_COUNT``)."""
    if text != "auto":
        return parse_shard(text)
    env = os.environ if env is None else env
    if env.get("FDTA_SHARD"):
        return parse_shard(env["FDTA_SHARD"])
    task = env.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        raise ConfigError(
            "--shard auto found neither FDTA_SHARD nor SLURM_ARRAY_TASK_ID in the environment",
            where="run --shard",
            fix="run it as a Slurm array task, set FDTA_SHARD=i/N, or pass --shard i/N.",
        )
    try:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        if env.get("SLURM_ARRAY_TASK_COUNT"):
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        else:
            count = int(env["SLURM_ARRAY_TASK_MAX"]) - first + 1
        index = int(task) - first
    except (KeyError, ValueError):
        raise ConfigError(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX) is missing or not a number",
            where="run --shard",
            fix="set FDTA_SHARD=i/N, or pass --shard i/N.",
        ) from None
    return parse_shard(f"{index}/{count}")


@dataclass
class SbatchJob:
    """What the array-job script runs: ``fdta run`` with ``run_args`` (everything but the shard, the
    servers and the script itself), one array task per GPU node."""

    run_args: list[str]
    tasks: int
    run_dir: Path
    job_name: str = "fdta"
    gpus_per_node: int = 1
    cpus_per_task: int | None = None
    sbatch_args: list[str] = field(default_factory=list)
    comfyui_dir: Path | None = None
    comfyui_python: Path | None = None
    python: str = sys.executable
    workdir: Path = field(default_factory=Path.cwd)

    def script(self) -> str:
        if self.tasks < 1:
            raise ConfigError(f"--array needs at least 1 task, got {self.tasks}", where="run --array")
        logs = self.run_dir / "slurm"
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name={self.job_name}",
            f"#SBATCH --array=0-{self.tasks - 1}",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks=1",
        ]
        if self.gpus_per_node > 0:
            lines.append(f"#SBATCH --gpus-per-node={self.gpus_per_node}")
        if self.cpus_per_task:
            lines.append(f"#SBATCH --cpus-per-task={self.cpus_per_task}")
        lines += [
            # a preempted or failed node puts the task back in the queue; the same run folder resumes it
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            f"#SBATCH --output={logs}/%A_%a.out",
            *(f"#SBATCH {a}" for a in self.sbatch_args),
            "",
            "# Written by `fdta run --sbatch`. Every array task runs shard SLURM_ARRAY_TASK_ID of",
            "# SLURM_ARRAY_TASK_COUNT (--shard auto) in the same run folder, with one ComfyUI server per GPU of",
            "# its node (--launch auto: CUDA_VISIBLE_DEVICES, set by Slurm). A requeued task resumes where it",
            "# stopped; nothing here needs srun, so the script also runs by hand with FDTA_SHARD=i/N set.",
            "set -euo pipefail",
            f"mkdir -p {shlex.quote(str(logs))}",
            f"cd {shlex.quote(str(self.workdir))}",
        ]
        if self.comfyui_dir is not None:
            lines.append(f"export COMFYUI_DIR={shlex.quote(str(self.comfyui_dir))}")
        if self.comfyui_python is not None:
            lines.append(f"export COMFYUI_PYTHON={shlex.quote(str(self.comfyui_python))}")
        cmd = [self.python, "-m", "fdta_core", "run", *self.run_args, "--shard", "auto", "--launch", "auto"]
        lines += [
            'echo "fdta: array task ${SLURM_ARRAY_TASK_ID:-?} of ${SLURM_ARRAY_TASK_COUNT:-?}'
            ' (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname)"',
            "exec " + " ".join(shlex.quote(c) for c in cmd),
            "",
        ]
        return "\n".join(lines)

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.script())
        path.chmod(0o755)
        return path
