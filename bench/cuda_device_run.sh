#!/usr/bin/env bash
# Runs the CUDA suite and benchmarks on the device machine (through the device `run` tool,
# from the repository root). The binaries are built on the development machine
# (build-cuda, -DCMAKE_CUDA_ARCHITECTURES=90 -DRWKV_NATIVE=OFF) and carried along: the device
# has CUDA and cmake but not every build dependency.
#   bench/cuda_device_run.sh [tests] [bench "2.9b q8_0 --batch 1,64" "0.1b q8_0 --no-pdl" ...]
# Logs go to $OUT (or /tmp/cuda-out).
set -uo pipefail
OUT=${OUT:-/tmp/cuda-out}
mkdir -p "$OUT"
BUILD=${BUILD:-build-cuda}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
# The tests find models/ through the source path they were compiled with (/work/main).
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
status=0
run_tests() {
  for t in test_cuda_ops test_cuda_model test_cuda_wkv; do
    echo "=== $t"
    "$BUILD/tests/$t" --gtest_brief=1 2>&1 | tee "$OUT/$t.log" | tail -40
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  done
}
trap 'rm -f /dev/shm/rwkv-bench-*.gguf' EXIT
run_bench() {  # $1 = "shape type [bench_cuda options]"
  read -r shape type rest <<<"$1"
  echo "=== bench $shape $type $rest"
  # shellcheck disable=SC2086
  "$BUILD/bench/bench_cuda" --shape "$shape" --type "$type" $rest 2>&1 | tee -a "$OUT/bench.log"
}
mode=""
for arg in "$@"; do
  case "$arg" in
    tests) run_tests ;;
    bench) mode=bench ;;
    *) [ "$mode" = bench ] && run_bench "$arg" ;;
  esac
done
exit $status
