#!/usr/bin/env bash
# The whole prepared GPU check in ONE command, sized for one short lease on a machine with a CUDA
# torch, Triton and nvcc but no network: it must end inside one device command (10 minutes), so
# every stage gets what is left of DEADLINE_S (default 560 s) and a stage that does not fit is
# skipped and logged. Most valuable first:
#   1. environment; diffusers from the wheels carried in .gpu_wheels/ when the machine lacks it
#      (make them with benchmarks/gpu/make_wheels.sh and carry .gpu_wheels),
#   2. the extension build (CPU + CUDA kernels, sm_90) in a scratch copy, in the background,
#   3. meanwhile the batch-cost curves (e2e_check.py --sections rcurve: transformer calls only,
#      no kernel extension needed),
#   4. end to end: pipe(...) with and without sdsv.enable(pipe), then the VAE decodes
#      (e2e_check.py --sections e2e,decode; uses the CUDA kernels built in 2),
#   5. the fused ops against the copy bandwidth, with a profile (op_bandwidth.py, ncu if present),
#   6. torch.compile with the self-draft's hooks (e2e_check.py --sections compile),
#   7. the kernel benchmark suite (bench_kernels_gpu.py),
#   8. the kernel tests on the GPU, with whatever time is left,
#   9. summary.md (summarize.py) and at most 8 files in $OUT: device.log, build.log, e2e_check.json,
#      op_bandwidth.json, op_profile.txt, gpu-<device>-<date>.json, summary.md, extras.tgz (the rest).
# A failed or killed stage does not stop the next; every JSON is written as its results come.
#   OUT=/some/dir bash benchmarks/gpu/run_device.sh
# Two more stages run only when named in STAGES (issue "On a GPU"):
#   peers       the peers at Flux/Wan size: each method's overhead per step at matched deep work
#               (peers_overhead.py, eager and regional compile) -> peers_overhead.json
#   train_flux  the tiny Flux trained on the GPU (python -m sdsv.tiny.flux.train --device cuda,
#               every stage but the report) -> tiny_flux/ inside extras.tgz
#   e.g. STAGES=train_flux,peers,ops OUT=$OUT bash benchmarks/gpu/run_device.sh
# Knobs: DEADLINE_S, STAGES (default rcurve,e2e,ops,compile,bench,tests: a rerun names fewer),
# E2E_SECTIONS (default e2e,decode), E2E_ARGS, SCALE=1 (also the older scale check).
# DRY=1: a CPU rehearsal of this script (tiny configs, no build, no GPU): checks the plumbing only.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOG="$OUT/device.log"
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-560}
stamp() { echo "== $(date -u +%H:%M:%S) [${SECONDS}s] $*" | tee -a "$LOG"; }
left() { echo $(( DEADLINE_S - SECONDS )); }
STAGES=",${STAGES:-rcurve,e2e,ops,compile,bench,tests},"
want() { [[ $STAGES == *",$1,"* ]]; }
# run_stage NAME MIN_S CAP_S cmd...: runs cmd under `timeout min(CAP_S, left - 5)`, or skips it when
# fewer than MIN_S seconds are left
run_stage() {
  local name=$1 min=$2 cap=$3; shift 3
  local budget=$(( $(left) - 5 ))
  (( budget > cap )) && budget=$cap
  if (( budget < min )); then stamp "$name: skipped, ${budget}s left (needs ${min}s)"; return 0; fi
  stamp "$name (up to ${budget}s)"
  timeout --kill-after=10 "$budget" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  (( rc != 0 )) && stamp "$name: exit code $rc$( (( rc == 124 || rc == 137 )) && echo ' (time limit)')"
  return 0
}

DRY=${DRY:-0}
TINY=""; SMOKE=""
(( DRY )) && { TINY="--tiny"; SMOKE="--smoke"; }
stamp "environment"
if (( DRY )); then
  stamp "DRY=1: CPU rehearsal with tiny configs; nothing here measures anything"
else
  $PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1 | tee -a "$LOG" || exit 2
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory,driver_version --format=csv 2>&1 | tee -a "$LOG"
fi
if ! $PY -c "import diffusers, cache_dit" 2>/dev/null && [ -d .gpu_wheels ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_wheels/*.whl >>"$LOG" 2>&1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
HAVE_DIFFUSERS=1
$PY -c "import diffusers, triton; print('diffusers', diffusers.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$LOG" \
  || { HAVE_DIFFUSERS=0; stamp "no diffusers (carry .gpu_wheels: benchmarks/gpu/make_wheels.sh): the model stages are skipped"; }
export SDSV_COMMIT=${SDSV_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

stamp "build (background, scratch copy)"
if (( DRY )); then
  ( echo "DRY=1: no build" >"$OUT/build.log" ) &
else
  rm -rf /tmp/sdsv_build && mkdir -p /tmp/sdsv_build && cp -r CMakeLists.txt setup.py README.md csrc sdsv_kernels python /tmp/sdsv_build/
  ( cd /tmp/sdsv_build && SDSV_BUILD_EXT=1 SDSV_CUDA_ARCHS=${SDSV_CUDA_ARCHS:-90} SDSV_BUILD_JOBS=8 \
      timeout 300 nice -n 10 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; echo "build exit $?" >>"$OUT/build.log" ) &
fi
BUILD_PID=$!

export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
E2E="$PY benchmarks/gpu/e2e_check.py --out $OUT $TINY ${E2E_ARGS:-}"
if (( HAVE_DIFFUSERS )) && want rcurve; then
  # the curves only call the transformer, so they run while the extension builds
  run_stage "batch-cost curves (while the build runs)" 30 130 $E2E --sections rcurve --budget-s 25
fi

stamp "waiting for the build"
wait $BUILD_PID
tail -4 "$OUT/build.log" | tee -a "$LOG"
(( DRY )) || cp /tmp/sdsv_build/sdsv_kernels/_C*.so sdsv_kernels/ 2>>"$LOG" || echo "no extension built" | tee -a "$LOG"
$PY -c 'import sdsv_kernels; print("backends", sdsv_kernels.backends())' 2>&1 | tee -a "$LOG"

if (( HAVE_DIFFUSERS )) && want e2e; then
  # e2e sections are ordered small/common first; --total-s keeps a margin for the stages after
  # leaves ~220 s for op bandwidth + compile (+ kernel benchmark and tests when the run is quick)
  E2E_LEFT=$(( $(left) - 220 )); (( E2E_LEFT > 260 )) && E2E_LEFT=260
  run_stage "end to end" 60 $(( E2E_LEFT + 20 )) $E2E --sections ${E2E_SECTIONS:-e2e,decode} --total-s $E2E_LEFT
fi
if want train_flux; then
  for st in vae transformer guidance draft; do
    run_stage "tiny Flux: $st" 20 ${TRAIN_CAP_S:-120} $PY -m sdsv.tiny.flux.train --stage $st --device $( (( DRY )) && echo cpu || echo cuda ) \
      --out "$OUT/tiny_flux" --work /tmp/tiny_flux_work $( (( DRY )) && echo "--vae-steps 2 --transformer-steps 2 --distill-steps 1 --batch 2" )
  done
fi
if (( HAVE_DIFFUSERS )) && want peers; then
  run_stage "peers at Flux/Wan size" 60 ${PEERS_CAP_S:-240} $PY benchmarks/gpu/peers_overhead.py --out "$OUT" $TINY \
    --total-s $(( ${PEERS_CAP_S:-240} - 60 ))
fi
want ops && run_stage "op bandwidth and profile" 30 80 $PY benchmarks/gpu/op_bandwidth.py --out "$OUT" --ncu --ncu-timeout 30 $SMOKE
if (( HAVE_DIFFUSERS )); then
  want compile && run_stage "torch.compile with the hooks" 60 130 $E2E --sections compile --budget-s 110
  if [ "${SCALE:-0}" = 1 ]; then
    run_stage "scale check" 60 200 $PY benchmarks/gpu/scale_check.py --out "$OUT"
    rm -f "$OUT/scale_check.log"
  fi
fi
want bench && run_stage "kernel benchmark" 70 150 $PY benchmarks/gpu/bench_kernels_gpu.py --out "$OUT" --max-time ${BENCH_MAX_TIME:-0.3} $SMOKE
if (( DRY )); then
  stamp "kernel tests: not in a DRY run (the CPU suite runs in CI)"
elif want tests; then
  SDSV_REQUIRE_BACKENDS=triton,cuda run_stage "kernel tests on the GPU" 40 150 \
    $PY -m pytest -q -x tests/kernels -p no:cacheprovider
fi

stamp "summary"
$PY benchmarks/gpu/summarize.py "$OUT" >"$OUT/summary.md" 2>>"$LOG" || echo "summary failed" | tee -a "$LOG"
# the device returns at most 8 files: everything but the main results goes into one archive
( cd "$OUT" && rm -f ./*.tmp && extra=$(ls | grep -v -x -E 'device\.log|build\.log|e2e_check\.json|op_bandwidth\.json|op_profile\.txt|summary\.md|gpu-.*[0-9]\.json|peers_overhead\.json|extras\.tgz') \
  && [ -n "$extra" ] && tar czf extras.tgz $extra && rm -rf $extra )
stamp "done"
ls -la "$OUT" | tee -a "$LOG"
