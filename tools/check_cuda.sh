#!/usr/bin/env bash
# Compile-only check of the CUDA code, for CI machines without a GPU (and without a CUDA torch):
#  1. nvcc -c every csrc/**/*.cu (plain CUDA C++, no torch headers) for sm_80 and sm_90;
#  2. g++ -fsyntax-only of the torch glue (csrc/cuda/ops_cuda.cpp, csrc/bindings.cpp with
#     SDSV_WITH_CUDA) against the installed torch's headers and the CUDA toolkit's headers.
#     A CPU-only torch wheel lacks one generated header (c10/cuda/impl/cuda_cmake_macros.h);
#     a one-line stand-in is supplied in a temp dir in that case.
# Skips (exit 0, with a message) when nvcc is absent. Usage: tools/check_cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || true)}
if [[ -z "$NVCC" ]]; then
  echo "check_cuda: nvcc not found, skipping the CUDA compile check"; exit 0
fi
CUDA_INC=$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include
[[ -f "$CUDA_INC/cuda_runtime.h" ]] || CUDA_INC=${CUDA_HOME:-/usr/local/cuda}/include
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for cu in $(find csrc -name '*.cu' | sort); do
  for arch in 80 90; do
    echo "nvcc -c $cu (sm_$arch)"
    "$NVCC" -c -std=c++17 -O3 -Xcompiler -Wall -gencode "arch=compute_$arch,code=sm_$arch" -Icsrc "$cu" -o "$tmp/$(basename "$cu").$arch.o"
  done
done
TORCH_INC=$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
shim=()
if [[ ! -f "$TORCH_INC/c10/cuda/impl/cuda_cmake_macros.h" ]]; then
  mkdir -p "$tmp/shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$tmp/shim/c10/cuda/impl/cuda_cmake_macros.h"
  shim=(-I"$tmp/shim")
fi
for src in csrc/cuda/ops_cuda.cpp csrc/bindings.cpp; do
  echo "g++ -fsyntax-only -DSDSV_WITH_CUDA $src"
  ${CXX:-g++} -std=c++20 -fsyntax-only -Wall -Werror=return-type -DSDSV_WITH_CUDA "${shim[@]}" -Icsrc -I"$TORCH_INC" \
    -I"$TORCH_INC/torch/csrc/api/include" -I"$CUDA_INC" -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" "$src"
done
echo "check_cuda: OK"
