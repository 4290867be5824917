"""Run every bench (small sizes) and print one table of every ratio with its target.

Each bench runs as its own process (``--quick`` unless ``--full``; a bench without ``--quick`` gets its
small sizes from :data:`QUICK_ARGS`), with a time limit; its ratio lines are read from its output. A bench
that fails, times out, is not runnable here (the ACG and runner benches need a ComfyUI checkout:
``COMFYUI_DIR``) or is not in this checkout is listed with the reason instead of a figure.

    python bench/run_all.py [--full] [--only writer,stg_steps] [--timeout 900] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench._steady import load_average  # noqa: E402

NUM = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass
class Metric:
    """One ratio a bench prints: ``pattern`` captures it; ``target`` is ``(op, value)`` or None."""

    bench: str
    name: str
    pattern: str
    target: tuple[str, float] | None
    note: str = ""


@dataclass
class Row:
    bench: str
    name: str
    value: float | None
    target: str
    met: bool | None
    detail: str


METRICS = [
    Metric(
        "stg_steps", "best setting: evals ratio vs DDIM-50", r"stg steps: .* evals_ratio=" + NUM, ("<=", 0.34)
    ),
    Metric(
        "stg_steps",
        "best setting: deviation vs DDIM-50 eta 0",
        r"stg steps: .* deviation_ratio=" + NUM,
        ("<=", 1.0),
    ),
    Metric("writer", "fraction of JPEG-encode limit", r"fraction of JPEG-encode limit: " + NUM, (">=", 0.70)),
    Metric(
        "writer",
        "writer / insightface-style path",
        r"FDTA ChunkWriter \(simplejpeg.*-> " + NUM + "x",
        (">=", 2.0),
    ),
    Metric("writer", "memory 10x data / 1x (RSS)", r"memory ratio .*: RSS " + NUM + "x", ("<=", 1.2)),
    Metric("csim", "fraction of bare onnxruntime", r"fraction of bare onnxruntime: " + NUM, (">=", 0.90)),
    Metric("csim", "batched / one-at-a-time", r"ratio batched / one-at-a-time: " + NUM + "x", (">=", 3.0)),
    Metric("stg", "batched / one image at a time", r'"ratio_batched_over_single": ' + NUM, (">=", 1.0)),
    Metric("age", "batched / one at a time", r"ratio batched/single: " + NUM + "x", (">=", 1.0)),
    Metric(
        "loader",
        "GPU training path / baseline",
        r"ratio fdta \(GPU training path, best\) / baseline: " + NUM,
        (">=", 2.0),
    ),
    Metric("prompts", "cold / warm chunk", r"ratio " + NUM + r"x", None),
    Metric(
        "runner",
        "fdta run / prompts queued by hand",
        r"fraction of hand-queued throughput: " + NUM,
        (">=", 0.95),
    ),
    Metric(
        "acg", "batched / one identity at a time", r"ratio batched / one-identity-at-a-time: " + NUM, None
    ),
    Metric("audit", "audit time growth 10x data", r"audit growth [^:]*: " + NUM + "x", ("<=", 15.0)),
    Metric("chunk_memory", "chunk RSS 100/10 identities", r"chunk RSS [^:]*: " + NUM + "x", ("<", 2.0)),
    Metric("bank", "reference bank RSS 1M/10K", r"bank RSS [^:]*: " + NUM + "x", ("<=", 1.2)),
]

BENCHES = {
    "stg_steps": ["bench_stg_steps.py"],
    "writer": ["bench_writer.py"],
    "csim": ["bench_csim.py"],
    "stg": ["bench_stg.py"],
    "age": ["bench_age.py"],
    "loader": ["bench_loader.py"],
    "prompts": ["bench_prompts.py"],
    "runner": ["bench_runner.py"],
    "acg": ["bench_acg.py"],
    "audit": ["bench_audit.py"],
    "chunk_memory": ["bench_chunk_memory.py"],  # added by issue 15 (memory)
    "bank": ["bench_bank.py"],  # added by issue 15 (memory)
}
#: benches that import ComfyUI in-process and so run on ComfyUI's interpreter (its venv has comfy's deps)
NEEDS_COMFYUI_PYTHON = {"acg"}


def comfyui_python() -> str | None:
    """``COMFYUI_PYTHON``, else ``$COMFYUI_DIR/.venv/bin/python``, when it exists."""
    py = os.environ.get("COMFYUI_PYTHON")
    if not py and os.environ.get("COMFYUI_DIR"):
        py = str(Path(os.environ["COMFYUI_DIR"]) / ".venv" / "bin" / "python")
    return py if py and Path(py).is_file() else None


#: small sizes for benches that take no ``--quick``
QUICK_ARGS = {
    "chunk_memory": ["--small", "4", "--large", "20", "--steps", "1"],
    "bank": ["--large", "100000", "--identities", "20"],
}


def _met(value: float, target: tuple[str, float] | None) -> bool | None:
    if target is None:
        return None
    op, ref = target
    return {"<=": value <= ref, "<": value < ref, ">=": value >= ref, ">": value > ref}[op]


def run_bench(name: str, full: bool, timeout: float, python: str) -> tuple[str, str]:
    """``(output, problem)``: the bench's stdout+stderr, and why it gave no figures (or "")."""
    script = HERE / BENCHES[name][0]
    if not script.is_file():
        return "", f"absent: {script.name} is not in this checkout"
    if full:
        extra: list[str] = []
    elif '"--quick"' in script.read_text(encoding="utf-8"):
        extra = ["--quick"]
    else:
        extra = QUICK_ARGS.get(name, [])
    if name in NEEDS_COMFYUI_PYTHON:
        python = comfyui_python() or ""
        if not python:
            return "", "needs ComfyUI: set COMFYUI_DIR (and COMFYUI_PYTHON if its venv is elsewhere)"
    cmd = [python, str(script), *extra]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out, f"timed out after {timeout:.0f} s"
    out = r.stdout + r.stderr
    if r.returncode != 0:
        last = (out.strip().splitlines() or ["?"])[-1]
        return out, f"exit {r.returncode}: {last[:120]}"
    return out + f"\n[{time.perf_counter() - t0:.0f} s]", ""


def rows_for(name: str, output: str, problem: str) -> list[Row]:
    rows = []
    spread = re.findall(r"spread ([0-9.]+%[^;\n]*)", output)
    for m in (m for m in METRICS if m.bench == name):
        hit = re.findall(m.pattern, output)
        target = f"{m.target[0]} {m.target[1]:g}" if m.target else "-"
        if not hit:
            rows.append(Row(name, m.name, None, target, None, problem or "not printed"))
            continue
        v = float(hit[-1])
        rows.append(Row(name, m.name, v, target, _met(v, m.target), spread[-1] if spread else ""))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="default sizes instead of --quick")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per bench")
    ap.add_argument("--skip", default="", help="comma-separated benches to leave out")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    skip = {n for n in args.skip.split(",") if n}
    names = [n for n in (args.only.split(",") if args.only else list(BENCHES)) if n not in skip]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown bench {unknown}; choose from {list(BENCHES)}")
    rows: list[Row] = []
    start_load = load_average()
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        out, problem = run_bench(name, args.full, args.timeout, args.python)
        rows.extend(rows_for(name, out, problem))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"cores {cores}; load average {start_load:.1f} at start, {load_average():.1f} at end; "
        f"{'full' if args.full else 'quick'} sizes"
    )
    print(f"{'bench':12s} {'ratio':42s} {'value':>8s} {'target':>8s} {'met':>4s}  detail (spread)")
    for r in rows:
        val = f"{r.value:8.3f}" if r.value is not None else f"{'-':>8s}"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        print(f"{r.bench:12s} {r.name:42s} {val} {r.target:>8s} {met:>4s}  {r.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
