#!/usr/bin/env bash
# The whole test suite: install what is missing, check the C/C++/CUDA sources against
# .clang-format, build (CPU + Vulkan, CUDA compiled when nvcc exists), run every test (GPU
# tests skip without a GPU; Vulkan ones run on lavapipe), then the unit suite under
# AddressSanitizer + UndefinedBehaviorSanitizer, then the GGUF fuzzer for a bounded time.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

# Every tracked source as clang-format would write it (a checkout without git metadata, such
# as an unpacked archive, skips this).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "== format (.clang-format)"
  git ls-files -z '*.c' '*.h' '*.cpp' '*.cu' | xargs -0 clang-format --dry-run --Werror
fi

echo "== build (release)"
BUILD_DIR=build scripts/build.sh
echo "== tests (release)"
ctest --test-dir build -j "$jobs" --output-on-failure --timeout 900

# The full-text perplexity of cpu-ref (covered by the release run) takes minutes under the
# sanitizers; every other unit test runs.
echo "== tests under ASan + UBSan (CPU backends)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKV_SANITIZE=ON -DRWKV_CUDA=OFF \
  -DRWKV_VULKAN=OFF -DRWKV_BENCH=OFF >/dev/null
ninja -C build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -j "$jobs" --output-on-failure --timeout 1800 -L unit \
  -E 'DemoPerplexity.*cpu_ref'

echo "== fuzz the GGUF reader (${FUZZ_SECONDS:-60} s)"
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
