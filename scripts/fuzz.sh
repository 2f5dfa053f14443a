#!/usr/bin/env bash
# Builds the GGUF fuzz target with clang (separate build dir, RWKV_FUZZ=ON) and runs it for
# a bounded time over a generated seed corpus.
# Usage: scripts/fuzz.sh [SECONDS=60] [extra libFuzzer flags...]
# Environment: RWKV_FUZZ_BUILD overrides the build dir (default build-fuzz).
# New inputs libFuzzer finds go to $build/fuzz/corpus; crashes to $build/fuzz/crash-*.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${RWKV_FUZZ_BUILD:-$root/build-fuzz}
seconds=${1:-60}
shift || true

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRWKV_FUZZ=ON -DRWKV_TESTS=OFF -DRWKV_BENCH=OFF -DRWKV_CUDA=OFF -DRWKV_VULKAN=OFF -DRWKV_NATIVE=OFF
ninja -C "$build" gguf_fuzz gguf_seeds

mkdir -p "$build/fuzz/seeds" "$build/fuzz/corpus"
"$build/fuzz/gguf_seeds" "$build/fuzz/seeds"
"$build/fuzz/gguf_fuzz" -max_total_time="$seconds" -dict="$root/fuzz/gguf.dict" \
  -artifact_prefix="$build/fuzz/" "$@" "$build/fuzz/corpus" "$build/fuzz/seeds"
