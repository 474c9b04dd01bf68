#!/usr/bin/env bash
# Device run of the scale check (see scale_check.py). Usage, from the repository root:
#   OUT=/some/dir bash benchmarks/gpu/run_scale_check.sh [extra scale_check.py args]
# Needs torch with CUDA and diffusers==0.42.1. A machine without network can install diffusers
# from wheels carried in .gpu_wheels/ (prepare them on a networked machine with
#   pip download diffusers==0.42.1 -d .gpu_wheels ).
set -euo pipefail
OUT=${OUT:-scale_check_out}
mkdir -p "$OUT"
if ! python -c "import diffusers" 2>/dev/null; then
  if [ -d .gpu_wheels ]; then
    pip install --no-index --find-links .gpu_wheels diffusers==0.42.1 >"$OUT/pip.log" 2>&1
  else
    echo "diffusers is not installed and there is no .gpu_wheels/ to install it from" >&2
    exit 3
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia_smi.csv" 2>&1 || true
export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python benchmarks/gpu/scale_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/scale_check.log"
