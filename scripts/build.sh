#!/usr/bin/env bash
# Configures and builds into ${BUILD_DIR:-build}. The CUDA backend is compiled when nvcc is
# found (on PATH or in /usr/local/cuda/bin); extra CMake arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  cuda=ON
  [[ -x /usr/local/cuda/bin/nvcc ]] && export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKV_VULKAN=ON -DRWKV_CUDA="$cuda" \
  -DCMAKE_CUDA_ARCHITECTURES="${RWKV_CUDA_ARCHS:-90}" "$@" >/dev/null
ninja -C "$build_dir" -j "$(nproc)"
