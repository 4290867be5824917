#!/usr/bin/env bash
# Run every bench on CUDA (GPU figures first, then each ratio bench at default sizes) in one go.
# On a machine without CUDA it says so and exits 0.
#   PYTHON=/path/to/python bench/gpu_suite.sh [--quick]
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-python}"
cd "$REPO" || exit 1
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_suite: no CUDA device here (torch.cuda.is_available() is False, or no torch); nothing to run."
  exit 0
fi
SIZE="--full"
[ "${1:-}" = "--quick" ] && SIZE=""
echo "== GPU figures (bench/gpu_suite.py)"
timeout 240 "$PY" "$HERE/gpu_suite.py" || echo "gpu_suite.py failed or timed out (rc $?)"
echo "== ratio benches (bench/run_all.py $SIZE)"
timeout 300 "$PY" "$HERE/run_all.py" $SIZE --timeout 120 || echo "run_all.py failed or timed out (rc $?)"
