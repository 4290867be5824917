"""Schedulers and local launching without a cluster: ``--shard auto`` from Slurm / FDTA_SHARD, the
``--sbatch`` script, ``--launch`` counts, ``--merge-to`` waiting for every shard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fdta_core.cli import main as cli_main
from fdta_core.errors import ConfigError
from fdta_core.runner import ChunkState, RunConfig, RunManifest
from fdta_core.runner.finish import merge_run, run_complete
from fdta_core.runner.launch import parse_launch, visible_gpus
from fdta_core.runner.schedulers import resolve_shard
from tests.test_runner_faults import WORKFLOW

REPO = Path(__file__).resolve().parents[1]


def test_shard_auto_reads_slurm_and_fdta_shard():
    assert resolve_shard("2/5", {}) == (2, 5)
    assert resolve_shard("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    # an array 1-4 (Slurm allows any first index): task 1 is shard 0
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    assert resolve_shard("auto", env) == (0, 4)
    # an explicit FDTA_SHARD wins (Kubernetes indexed jobs, hand-made arrays)
    assert resolve_shard(
        "auto", {"FDTA_SHARD": "1/2", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "9"}
    ) == (1, 2)
    with pytest.raises(ConfigError, match="neither FDTA_SHARD nor SLURM_ARRAY_TASK_ID"):
        resolve_shard("auto", {})
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_COUNT"):
        resolve_shard("auto", {"SLURM_ARRAY_TASK_ID": "0"})
    with pytest.raises(ConfigError, match="need 0 <= i < N"):
        resolve_shard("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"})


def test_cli_shard_auto_picks_the_tasks_chunks(tmp_path, capsys, monkeypatch):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    rc = cli_main(["run", str(wf), "--run-dir", str(tmp_path / "r"), "--identities", "7", "--chunk-size", "1",
                   "--seed", "3", "--shard", "auto", "--dry-run"])  # fmt: skip
    assert rc == 0
    starts = [
        json.loads(x)["prompt"]["1"]["inputs"]["identity_start"] for x in capsys.readouterr().out.splitlines()
    ]
    assert starts == [1, 4]


def test_launch_counts(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"] and parse_launch("auto") == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and parse_launch("auto") == 1 and parse_launch("3") == 3
    for bad in ("0", "x", "-1"):
        with pytest.raises(ConfigError, match="--launch needs a count"):
            parse_launch(bad)


def test_sbatch_script_is_an_array_job_that_resumes(tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    script = tmp_path / "job.sbatch"
    rc = cli_main(["run", str(wf), "--run-dir", str(tmp_path / "run"), "--identities", "100", "--chunk-size", "10",
                   "--seed", "3", "--set", "FDTADatasetWriter.output_name=fdta/big", "--sbatch", str(script),
                   "--array", "4", "--gpus-per-node", "8", "--slurm-arg=--partition=gpu", "--comfyui-dir", str(tmp_path / "ComfyUI"),
                   "--merge-to", str(tmp_path / "merged")])  # fmt: skip
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == 4
    text = script.read_text()
    for line in ("#SBATCH --array=0-3", "#SBATCH --gpus-per-node=8", "#SBATCH --requeue", "#SBATCH --partition=gpu",
                 f"#SBATCH --output={tmp_path / 'run' / 'slurm'}/%A_%a.out", f"export COMFYUI_DIR={tmp_path / 'ComfyUI'}"):  # fmt: skip
        assert line in text, text
    cmd = text.strip().splitlines()[-1]
    assert cmd.startswith(f"exec {sys.executable} -m fdta_core run {wf}")
    for part in ("--shard auto", "--launch auto", f"--run-dir {tmp_path / 'run'}", "--set FDTADatasetWriter.output_name=fdta/big",
                 f"--merge-to {tmp_path / 'merged'}", "--identities 100 --chunk-size 10"):  # fmt: skip
        assert part in cmd, cmd
    commands = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert not any(
        w in ln.split() for ln in commands for w in ("srun", "sbatch", "scontrol")
    )  # runs without Slurm
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert (
        cli_main(["run", str(wf), "--run-dir", "r", "--identities", "1", "--seed", "1", "--sbatch", "x"]) == 2
    )
    assert "--sbatch needs --array N" in capsys.readouterr().err


def test_merge_to_waits_for_every_shard(tmp_path):
    cfgs = [RunConfig(workflow=WORKFLOW, run_dir=tmp_path / "run", identities=4, chunk_size=1, seed=9, servers=["x"],
                      shard=(i, 2), identity_index="") for i in range(2)]  # fmt: skip
    assert run_complete(cfgs[0]) == (False, "shard 0/2 has not started (run-shard0000-of-0002.json missing)")
    mans = [RunManifest(c.manifest_path(), c.run_key(), c.chunks()) for c in cfgs]
    for c in cfgs[0].chunks():
        mans[0].mark(c, ChunkState.DONE)
    assert run_complete(cfgs[0]) == (False, "2 of 4 chunk(s) not done yet")
    assert merge_run(cfgs[0], tmp_path / "out", tmp_path / "merged") is None
    for c in cfgs[1].chunks():
        mans[1].mark(c, ChunkState.DONE)
    assert run_complete(cfgs[1]) == (True, "")
    with pytest.raises(ConfigError, match="--merge-to needs to know where the servers write"):
        merge_run(cfgs[1], None, tmp_path / "merged")
