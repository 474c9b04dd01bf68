#!/usr/bin/env bash
# Prepared GPU run (a few minutes on a fresh machine with a CUDA torch): builds the extension
# with its CUDA kernels, runs the kernel tests on the GPU (Triton + CUDA vs the reference), then
# the benchmark. Results land in $OUT (default benchmarks/results/): JSON + CSV + logs.
#   bash benchmarks/gpu/run_gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
python -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$OUT/gpu-env.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv | tee -a "$OUT/gpu-env.txt" || true
python -m pip install -q "triton" pybind11 pytest 2>&1 | tail -2 || true
# an in-place build (no pip -e: leaves the machine's environment alone); sm_90 only to keep it short
SDSV_BUILD_EXT=1 SDSV_CUDA_ARCHS=${SDSV_CUDA_ARCHS:-90} python setup.py build_ext --inplace 2>&1 | tail -5 | tee "$OUT/gpu-build.log"
export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c 'import sdsv_kernels; print(sdsv_kernels.backends())' | tee -a "$OUT/gpu-env.txt"
SDSV_REQUIRE_BACKENDS=triton,cuda timeout 300 python -m pytest -q tests/kernels -x -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/gpu-tests.log" || true
timeout 420 python benchmarks/gpu/bench_kernels_gpu.py --out "$OUT" 2>&1 | tee "$OUT/gpu-bench.log"
