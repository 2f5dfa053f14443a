#!/usr/bin/env bash
# Per-kernel GPU time of a few decode steps of the CUDA backend, with Nsight Compute
# (kernels serialised, clocks not locked), summed per kernel name and grid size and divided
# by the number of decoded tokens. Run on the device machine from the repository root:
#   BUILD=build-cuda bench/cuda_profile.sh 2.9b q8_0 [extra bench_cuda options]
# Needs ncu on the PATH (CUDA's Nsight Compute) and python3.
set -euo pipefail
shape=$1 type=$2
shift 2
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-/tmp/cuda-out}
mkdir -p "$OUT"
export PATH=$PATH:/usr/local/cuda/bin
tokens=4
csv="$OUT/profile-$shape-$type.csv"
# bench_cuda steps a 4-token prompt, 8 warm-up tokens, then --tg tokens: 13 steps, all but
# the first single-token decode steps (the prompt's kernels show as their own grid sizes).
ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  "$BUILD/bench/bench_cuda" --shape "$shape" --type "$type" --pp 0 --tg $tokens --reps 1 "$@" >"$csv" 2>/dev/null || true
python3 - "$csv" "$((tokens + 9))" <<'PY'
import csv, sys, collections
path, steps = sys.argv[1], int(sys.argv[2])
rows = [r for r in csv.reader(open(path)) if len(r) > 10]
head = rows[0]
ki, gi, vi, ui = head.index("Kernel Name"), head.index("Grid Size"), head.index("Metric Value"), head.index("Metric Unit")
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows[1:]:
    v = float(r[vi].replace(",", ""))
    v = v / 1000 if r[ui] == "nsecond" else v * (1000 if r[ui] == "msecond" else 1)
    name = r[ki].split("(")[0].split("<")[0].replace("void ", "").strip()
    if "<" in r[ki]:
        name += "<" + r[ki].split("<", 1)[1].split(">")[0] + ">"
    key = (name, r[gi])
    agg[key][0] += 1
    agg[key][1] += v
total = sum(t for _, t in agg.values())
print(f"{'kernel':60s} {'grid':>14s} {'calls/tok':>9s} {'us/call':>8s} {'us/tok':>8s}")
for (name, grid), (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{name[:60]:60s} {grid:>14s} {n/steps:9.1f} {t/n:8.2f} {t/steps:8.1f}")
print(f"total {total/steps:.1f} us per step (kernels serialised)")
PY
