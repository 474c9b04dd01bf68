#!/usr/bin/env bash
# Wheels for the device machine, which has no network and no diffusers (its image has torch,
# triton, transformers, accelerate, safetensors, huggingface_hub, zipp, ...): run this on a machine
# with network access, in the repository root, then carry `.gpu_wheels` (git-ignored) with the
# device command; run_device.sh installs them into /tmp/site when `import diffusers` fails there.
#   bash benchmarks/gpu/make_wheels.sh            # -> .gpu_wheels/diffusers-0.42.1-py3-none-any.whl, cache_dit-1.5.3-py3-none-any.whl
# (cache-dit, pure Python, for the peers stage; its requirements packaging and pyyaml come with transformers)
# diffusers alone: on Python >= 3.8 it (and transformers) import the standard library's
# importlib.metadata, and every other requirement of diffusers 0.42.1 (huggingface-hub >= 1.32,
# safetensors >= 0.8, filelock, numpy, regex, requests, Pillow) is in the device's image. A carried
# importlib_metadata wheel would shadow the image's and needs lazy-importer, which the image lacks.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p .gpu_wheels
$PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu_wheels \
  "diffusers==${DIFFUSERS_VERSION:-0.42.1}" "cache-dit==${CACHE_DIT_VERSION:-1.5.3}"
ls -la .gpu_wheels
