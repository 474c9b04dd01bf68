#!/usr/bin/env bash
# The whole prepared GPU check in one command, sized for a short lease on a machine with a CUDA
# torch, Triton and nvcc but no network (~6-8 minutes on an H200):
#   1. builds the extension (CPU + CUDA kernels, sm_90) in a scratch copy, in the background,
#   2. meanwhile the scale check (benchmarks/gpu/scale_check.py: Flux.1-dev / Wan2.1-1.3B-size
#      target, trained-draft and self-draft costs, sampler overhead; needs diffusers, installed
#      from wheels carried in .gpu_wheels/ when the machine lacks it),
#   3. the kernel tests on the GPU (Triton + CUDA vs the reference),
#   4. the kernel benchmark (benchmarks/gpu/bench_kernels_gpu.py).
# Every stage has its own time limit and a failed stage does not stop the next. Results in $OUT,
# flat (at most 8 files): device.log, build.log, scale_check.{json,csv}, gpu-<device>-<date>.{json,csv} and
# the benchmark suite's own gpu-<device>-<date>-suite.json.
#   OUT=/some/dir bash benchmarks/gpu/run_device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOG="$OUT/device.log"
PY=${PYTHON:-python3}
stamp() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }

stamp "environment"
$PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1 | tee -a "$LOG" || exit 2
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory,driver_version --format=csv 2>&1 | tee -a "$LOG"
if ! $PY -c "import diffusers" 2>/dev/null && [ -d .gpu_wheels ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_wheels/*.whl >>"$LOG" 2>&1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import diffusers, triton; print('diffusers', diffusers.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$LOG"

stamp "build (background, scratch copy)"
rm -rf /tmp/sdsv_build && mkdir -p /tmp/sdsv_build && cp -r CMakeLists.txt setup.py README.md csrc sdsv_kernels python /tmp/sdsv_build/
( cd /tmp/sdsv_build && SDSV_BUILD_EXT=1 SDSV_CUDA_ARCHS=${SDSV_CUDA_ARCHS:-90} SDSV_BUILD_JOBS=8 \
    timeout 300 nice -n 10 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; echo "build exit $?" >>"$OUT/build.log" ) &
BUILD_PID=$!

export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
stamp "scale check"
timeout ${SCALE_TIMEOUT:-260} $PY benchmarks/gpu/scale_check.py --out "$OUT" ${SCALE_ARGS:-} 2>&1 | tee -a "$LOG"
rm -f "$OUT/scale_check.log"

stamp "waiting for the build"
wait $BUILD_PID
tail -4 "$OUT/build.log" | tee -a "$LOG"
cp /tmp/sdsv_build/sdsv_kernels/_C*.so sdsv_kernels/ 2>>"$LOG" || echo "no extension built" | tee -a "$LOG"
$PY -c 'import sdsv_kernels; print("backends", sdsv_kernels.backends())' 2>&1 | tee -a "$LOG"

stamp "kernel tests on the GPU"
SDSV_REQUIRE_BACKENDS=triton,cuda timeout ${TEST_TIMEOUT:-120} $PY -m pytest -q tests/kernels -p no:cacheprovider 2>&1 | tail -25 | tee -a "$LOG"

stamp "kernel benchmark"
timeout ${BENCH_TIMEOUT:-300} $PY benchmarks/gpu/bench_kernels_gpu.py --out "$OUT" --max-time ${BENCH_MAX_TIME:-0.3} 2>&1 | tee -a "$LOG"
stamp "done"
