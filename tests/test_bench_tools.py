"""The bench helpers: steady repeats, run_all's table parsing, and gpu_suite's no-CUDA path."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._steady import steady_ratio  # noqa: E402
from bench.run_all import rows_for  # noqa: E402


def test_steady_ratio_stops_when_still_and_reports_spread():
    num = itertools.cycle([10.0, 10.5, 9.8, 10.1]).__next__
    st = steady_ratio(num, lambda: 5.0, cap_s=10)
    assert st.settled and st.repeats == 3 and 1.9 < st.ratio < 2.2 and st.spread < 0.1


def test_steady_ratio_gives_up_at_the_cap_unsettled():
    num = itertools.cycle([1.0, 3.0]).__next__
    st = steady_ratio(num, lambda: 1.0, max_repeats=5, cap_s=10)
    assert not st.settled and st.repeats == 5 and st.spread > 0.5
    assert "NOT settled" in st.line()


def test_run_all_reads_ratios_and_targets():
    out = (
        "spread 4.2% over the last 3 of 3 repeats (settled); load average 3.0\n"
        "fraction of JPEG-encode limit: 0.64\n"
        "FDTA ChunkWriter (simplejpeg, 2 threads, manifest, commit):  1079 faces/s  -> 2.36x\n"
    )
    rows = {r.name: r for r in rows_for("writer", out, "")}
    frac = rows["fraction of JPEG-encode limit"]
    assert (
        frac.value == 0.64
        and frac.met is False
        and frac.target == ">= 0.7"
        and frac.detail.startswith("4.2%")
    )
    assert rows["writer / insightface-style path"].met is True
    assert rows["memory 10x data / 1x (RSS)"].value is None  # not printed -> no figure, no verdict
    steps = rows_for("stg_steps", "stg steps: dpmpp_2m 10 evals_ratio=0.20 deviation_ratio=0.081\n", "")
    assert [(r.value, r.met) for r in steps] == [(0.2, True), (0.081, True)]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the no-CUDA path is what this checks")
def test_gpu_suite_without_cuda_says_so_and_exits_0():
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_suite.sh")], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "no CUDA device" in r.stdout


def test_run_all_lists_an_absent_bench_and_reads_the_new_ratios(tmp_path, monkeypatch):
    """A bench not in this checkout (e.g. bench_bank.py before issue 15 lands) is a row with the reason,
    not a crash; the runner, chunk-memory and bank ratios are read with their targets ("<" is strict)."""
    import bench.run_all as ra

    monkeypatch.setitem(ra.BENCHES, "bank", ["bench_does_not_exist.py"])
    out, problem = ra.run_bench("bank", False, 10, sys.executable)
    assert out == "" and problem.startswith("absent")
    (row,) = ra.rows_for("bank", out, problem)
    assert row.value is None and row.detail.startswith("absent")
    (row,) = ra.rows_for("chunk_memory", "chunk RSS 100/10: 2.00x\n", "")
    assert row.value == 2.0 and row.met is False and row.target == "< 2"
    (row,) = ra.rows_for("runner", "fraction of hand-queued throughput: 0.97\n", "")
    assert row.met is True and row.target == ">= 0.95"
    (row,) = ra.rows_for("bank", "bank RSS 1M/10K: 1.10x\n", "")
    assert row.met is True
