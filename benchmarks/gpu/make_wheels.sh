#!/usr/bin/env bash
# Wheels for the device machine, which has no network and no diffusers (its image has torch,
# triton, transformers, accelerate, safetensors, huggingface_hub, zipp, ...): run this on a machine
# with network access, in the repository root, then carry `.gpu_wheels` (git-ignored) with the
# device command; run_device.sh installs them into /tmp/site when `import diffusers` fails there.
#   bash benchmarks/gpu/make_wheels.sh            # -> .gpu_wheels/diffusers-0.42.1-*.whl, importlib_metadata-*.whl
# Python 3.12 wheels: the device's python3 is 3.12. Both are pure-Python wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p .gpu_wheels
$PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu_wheels \
  "diffusers==${DIFFUSERS_VERSION:-0.42.1}" importlib_metadata
ls -la .gpu_wheels
