#!/usr/bin/env bash
# Per-kernel GPU time of the CUDA backend with Nsight Compute (kernels serialised, clocks not
# locked), summed per kernel name and grid size and divided by the number of steps: a few
# decode steps, or with PREFILL=N two N-token prefill steps. Run on the device machine from
# the repository root:
#   BUILD=build-cuda bench/cuda_profile.sh 2.9b q8_0 [extra bench_cuda options]
#   PREFILL=512 BUILD=build-cuda bench/cuda_profile.sh 2.9b f16
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
if [ -n "${PREFILL:-}" ]; then
  # A warm-up prefill (it also builds the f16 weight copies) and one timed: 2 steps.
  args=(--pp "$PREFILL" --tg 0 --reps 1)
  steps=2
else
  # A 4-token prompt, 8 warm-up tokens, then --tg tokens: 13 steps, all but the first
  # single-token decode steps (the prompt's kernels show as their own grid sizes).
  args=(--pp 0 --tg $tokens --reps 1)
  steps=$((tokens + 9))
fi
ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  "$BUILD/bench/bench_cuda" --shape "$shape" --type "$type" "${args[@]}" "$@" >"$csv" 2>/dev/null || true
python3 - "$csv" "$steps" <<'PY'
import csv, sys, collections
path, steps = sys.argv[1], int(sys.argv[2])
rows = [r for r in csv.reader(open(path)) if len(r) > 10]
head = rows[0]
ki, gi, vi, ui = head.index("Kernel Name"), head.index("Grid Size"), head.index("Metric Value"), head.index("Metric Unit")
agg = collections.defaultdict(lambda: [0, 0.0])
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
for r in rows[1:]:
    v = float(r[vi].replace(",", "")) * scale.get(r[ui], 1.0)  # microseconds
    name = r[ki].replace("void ", "")
    for noise in ("rwkv::cuda::", "(anonymous namespace)::", "<unnamed>::", "unnamed>::", "matvec_detail::"):
        name = name.replace(noise, "")
    name = name.split("(")[0].strip()
    key = (name, r[gi])
    agg[key][0] += 1
    agg[key][1] += v
total = sum(t for _, t in agg.values())
print(f"{'kernel':60s} {'grid':>14s} {'calls/step':>10s} {'us/call':>8s} {'us/step':>8s}")
for (name, grid), (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{name[:60]:60s} {grid:>14s} {n/steps:10.1f} {t/n:8.2f} {t/steps:8.1f}")
print(f"total {total/steps:.1f} us per step (kernels serialised)")
PY
