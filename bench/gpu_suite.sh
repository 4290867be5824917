#!/usr/bin/env bash
# Run every bench on CUDA (GPU figures first, then each ratio bench at default sizes) in one go, in
# under 8 minutes (180 s GPU figures + 60 s ArcFace r50 through the CSIM filter on CUDA + 60 s ACG through
# ComfyUI + 160 s ratio benches, each capped).
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
QUICK=""
[ -z "$SIZE" ] && QUICK="--quick"
echo "== GPU figures (bench/gpu_suite.py: bf16 peak, SD 1.5 512 px, STG full size, SAM 1024 px, IResNet-50)"
timeout 180 "$PY" "$HERE/gpu_suite.py" $QUICK || echo "gpu_suite.py failed or timed out (rc $?)"
echo "== CSIM filter vs bare onnxruntime, ArcFace r50 topology on CUDA (IOBinding; add --fp16 for the fp16 copy)"
timeout 60 "$PY" "$HERE/bench_csim.py" --model r50 --provider CUDA --n 1024 --batch 256 --repeats 2 --cap 15 \
  || echo "bench_csim.py (CUDA) failed or timed out (rc $?)"
if [ -n "${COMFYUI_DIR:-}" ]; then
  # the ACG through ComfyUI's own sampler at 512 px (tiny-width SD unless real weights are configured)
  echo "== ACG through ComfyUI at 512 px (bench/bench_acg.py)"
  CPY="${COMFYUI_PYTHON:-$COMFYUI_DIR/.venv/bin/python}"
  timeout 60 "$CPY" "$HERE/bench_acg.py" --size 512 --repeats 1 || echo "bench_acg.py failed or timed out (rc $?)"
else
  echo "== ACG through ComfyUI: skipped (set COMFYUI_DIR to a ComfyUI checkout)"
fi
echo "== ratio benches (bench/run_all.py $SIZE)"
timeout 160 "$PY" "$HERE/run_all.py" $SIZE --timeout 40 --skip runner,acg || echo "run_all.py failed or timed out (rc $?)"
