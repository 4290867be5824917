#!/usr/bin/env bash
# The README's first command: set up .venv (CPU torch first, then the project) and run `fdta demo`, which
# runs the whole pipeline once on a real ComfyUI ($COMFYUI_DIR, or one it installs under .fdta/).
# Arguments are passed to `fdta demo` (see `fdta demo --help`). Setup output goes to stderr, so the
# last line on stdout is the demo's JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
stamp="$(cat pyproject.toml .ci/constraints.txt | sha256sum | cut -c1-16)"
marker=".venv/.fdta_demo_${stamp}"
if [ ! -f "$marker" ]; then
  {
    echo "[demo.sh] setting up .venv (torch 2.13 CPU build first, then the project; a few minutes once)"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade "pip>=23"
    # The CPU build first and pinned: a plain `torch` would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install --quiet torch==2.13.0
    .venv/bin/python -m pip install --quiet -c .ci/constraints.txt -e ".[faces,train,hub]"
  } >&2
  rm -f .venv/.fdta_demo_*
  touch "$marker"
fi
exec .venv/bin/python -m fdta_core demo "$@"
