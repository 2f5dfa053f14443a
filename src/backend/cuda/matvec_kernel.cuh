// Device side of the decode matvec (matvec.cu): y = W x for T <= 4 activation rows,
// several matrices per launch. A group of `tpr` threads owns one output row and walks its
// work items (packed.h) with streaming 16-byte loads; the first round of weight loads is
// issued before the PDL wait, so it overlaps the previous kernel's tail. Quantised
// weights: x comes quantised (QuantX, two int8 terms per value) from its producer or is
// quantised here into shared memory; the dot products use __dp4a. Float weights: x is
// read as fp32 through L1 (staged in shared memory when it needs tanh/sigmoid first).
// The kernels are instantiated in matvec_inst_*.cu (parallel compilation).
#pragma once

#include <type_traits>

#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"
#include "backend/cuda/quantx.cuh"

namespace rwkv::cuda::matvec_detail {

constexpr int kThreads = 256;
constexpr int kMaxRowsPerLaunch = 4;  // TM of the widest instantiation
constexpr int kMaxTpr = 64;           // threads per row (quantised types); two warps meet in shared memory

struct JobDev {
  MatvecJob job;
  int tpr;          // threads per output row (power of two <= kMaxTpr)
  int block_begin;  // first block of this job in the grid
};
struct Batch {
  JobDev jobs[kMatvecMaxJobs];
  int n_jobs;
  int T;        // activation rows; grid row y takes rows [y * TM, y * TM + TM)
  int threads;  // per block: kThreads, or half of it for launches of many blocks (matvec.cu)
  // Byte offset in dynamic shared memory of [threads / 32][TM] floats for the warp sums of
  // rows wider than a warp (tpr > 32), reserved only in launches with such jobs (shared
  // memory the kernel does not need costs L1 capacity, and the products read x through L1).
  int red_smem;
};

constexpr int kStageBatch = 8;                 // float4 loads in flight per thread while staging
constexpr size_t kFloatStageBytes = 64 << 10;  // float weights with an input transform: staged x

// The row of element e of T <= kMaxRowsPerLaunch activation rows of `cols`: counted, not
// divided (a 64-bit division is ~60 instructions, and the staging runs after the PDL wait,
// on the step's critical path).
__device__ __forceinline__ int row_of(int e, int cols) {
  static_assert(kMaxRowsPerLaunch == 4, "row_of counts up to four rows");
  return int(e >= cols) + int(e >= 2 * cols) + int(e >= 3 * cols);
}

// Element e (4 floats from there, a row's columns being a multiple of 4) of the job's
// activation rows t0.. . Aligned jobs use one 16-byte load.
__device__ __forceinline__ float4 load_x4(const MatvecJob& job, int t0, int e, int cols, bool aligned) {
  const int t = row_of(e, cols), c = e - t * cols;
  const float* p = job.x + int64_t(t0 + t) * job.x_stride + c;
  if (aligned) return *reinterpret_cast<const float4*>(p);
  return make_float4(p[0], p[1], p[2], p[3]);
}

// Quantises T rows of x (cols a multiple of 32) into shared memory as two int8 terms (XQ).
// Thread i takes float4 chunks i, i + 256, ...; the 8 chunks of one block of 32 are 8
// neighbouring lanes. All loads of a batch are issued before the first is used.
// kSplit: in the split order of ops.h (quant_x_offset), for k-quant readers.
template <bool kSplit>
__device__ inline void stage_quant(const MatvecJob& job, int t0, int T, uint8_t* smem, XQ (&xq)[2]) {
  const int cols = int(job.W.cols), nb = cols / 32;
  const int n4 = T * cols / 4;
  int8_t* q0 = reinterpret_cast<int8_t*>(smem);
  int8_t* q1 = q0 + size_t(T) * cols;
  float* d0 = reinterpret_cast<float*>(q1 + size_t(T) * cols);
  float* d1 = d0 + T * nb;
  int* s0 = reinterpret_cast<int*>(d1 + T * nb);
  int* s1 = s0 + T * nb;
  const bool aligned = ((reinterpret_cast<uintptr_t>(job.x) | uintptr_t(job.x_stride * 4)) & 15) == 0;
  const int nt = int(blockDim.x);
  for (int b0 = 0; b0 < n4; b0 += nt * kStageBatch) {
    float4 v[kStageBatch];
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int idx = b0 + k * nt + int(threadIdx.x);
      v[k] = idx < n4 ? load_x4(job, t0, idx * 4, cols, aligned) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int idx = b0 + k * nt + int(threadIdx.x);
      const float4 f = make_float4(apply_in(job.in_op, v[k].x), apply_in(job.in_op, v[k].y),
                                   apply_in(job.in_op, v[k].z), apply_in(job.in_op, v[k].w));
      int64_t word = idx;
      if constexpr (kSplit) {
        const int e = idx * 4, t = row_of(e, cols);  // value e: row t, column e - t * cols
        word = (int64_t(t) * cols + quant_x_offset(e - t * cols, true, cols)) / 4;
      }
      quantize_group8(f, idx < n4, q0, q1, d0, d1, s0, s1, word, idx / 8);  // block idx / 8 = t * nb + c / 32
    }
  }
  const int pa = int(quant_x_piece_a(kSplit, cols)), pb = int(quant_x_piece_b(kSplit, cols));
  xq[0] = XQ{q0, d0, s0, cols, nb, pa, pb};
  xq[1] = XQ{q1, d1, s1, cols, nb, pa, pb};
}

// Copies T rows of x (with the input transform) to shared memory as fp32, row stride cols.
__device__ inline void stage_float(const MatvecJob& job, int t0, int T, float* xs) {
  const int cols = int(job.W.cols), n = T * cols;  // at most kFloatStageBytes / 4 values
  const int nt = int(blockDim.x);
  for (int b0 = 0; b0 < n; b0 += nt * kStageBatch) {
    float v[kStageBatch];
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int e = b0 + k * nt + int(threadIdx.x), t = row_of(e, cols);
      v[k] = e < n ? job.x[int64_t(t0 + t) * job.x_stride + (e - t * cols)] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int e = b0 + k * nt + int(threadIdx.x);
      if (e < n) xs[e] = apply_in(job.in_op, v[k]);
    }
  }
}

// Loads the U items base, base + tpr, ... of `row` (those that exist) into registers.
template <typename It, int U>
__device__ __forceinline__ void load_round(It (&w)[U], const PackedView& W, int64_t row, bool row_ok, int64_t base,
                                           int tpr) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t it = base + int64_t(tpr) * u;
    if (row_ok && it < W.items) w[u].load(W, row, it);
  }
}

// kAlignedX: float weights whose x rows the host found 16-byte aligned, cols a multiple of 8
// (no per-item alignment check; the F16-only kernel's variant).
// kFlat > 0 (one activation row; quantised or aligned float items): no branch inside a group
// of kFlat items, so that the loads of the group's x are requested before its first product
// (the index is clamped so that every load is valid; items past the row add nothing). With a
// branch on the item count between them, each item's loads wait for the item before it: in a
// product's first wave, where x is not yet in L1, one L2 round trip per item. The compiler
// then holds more values at once (8-36 bytes of spills at the one-row kernels' register caps),
// which only some kernels repay (kFlatRound). kFlat 0: a branch per item.
// kX16 (one-row float items with MatvecJob::x16): x as f16 from x16, flat in groups of up to
// five items (x in half the registers of fp32 x: the four-block kernels' five items in one
// group, the wide kernel's ten in two, without spills). matvec.cu passes x16 only to jobs whose
// rounds are full (no clamped items to compute); the clamp and the test per item stay as the
// fp32 flat form's, and the break between groups keeps the wide kernel's second group of x
// loads behind the first's products (all ten flat spilled 20 bytes).
template <typename It, int TM, int U, bool kAlignedX, int kFlat, bool kX16 = false>
__device__ __forceinline__ void compute_round(const It (&w)[U], int64_t base, int64_t items, int tpr, int T,
                                              const XQ (&xq)[2], const float* xf, int64_t xf_stride, int64_t cols,
                                              const uint16_t* x16, float (&acc)[TM]) {
  if constexpr (kX16) {
    static_assert(TM == 1 && !It::kQuant, "f16 x is for one-row float products");
    constexpr int kGroup = U <= 5 ? U : (U + 1) / 2;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t it = base + int64_t(tpr) * u, at = min(it, items - 1);
      if (u > 0 && u % kGroup == 0 && it >= items) break;
      const int4 h = *reinterpret_cast<const int4*>(x16 + 8 * at);
      const int hw[4] = {h.x, h.y, h.z, h.w};
      float xv[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&hw[k]));
        xv[2 * k] = f.x;
        xv[2 * k + 1] = f.y;
      }
      const float d = w[u].dot_x(xv);
      if (it < items) acc[0] += d;
    }
  } else if constexpr (kFlat > 0 && TM == 1 && (It::kQuant || kAlignedX)) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t it = base + int64_t(tpr) * u, at = min(it, items - 1);
      if (u > 0 && u % kFlat == 0 && it >= items) break;
      float d;
      if constexpr (It::kQuant) {
        d = w[u].dot(xq[0], 0, at) + w[u].dot(xq[1], 0, at);
      } else {
        float xv[8];
        load_x<8, true>(xf, cols, 8 * at, xv);
        d = w[u].dot_x(xv);
      }
      if (it < items) acc[0] += d;
    }
  } else {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t it = base + int64_t(tpr) * u;
      if (it >= items) break;
#pragma unroll
      for (int t = 0; t < TM; ++t) {
        if (t >= T) break;
        if constexpr (It::kQuant) {
          acc[t] += w[u].dot(xq[0], t, it) + w[u].dot(xq[1], t, it);
        } else {
          acc[t] += w[u].template dot_f<kAlignedX>(xf + t * xf_stride, cols, it);
        }
      }
    }
  }
}

// Whether the one-row kernel of type KT (the launch's instantiation: F16 for float-only
// launches) is built for four resident 256-thread blocks per SM instead of two: 64
// registers instead of 117. A block loads its one round of items, then computes with nothing
// in flight; more blocks keep the SM's loads going. Only the F16 and BF16 kernels: the
// quantised ones spill at 80 registers, and with fewer items per thread to fit three blocks
// Q8_0 lost 4.8% (NOTES.md runs 101-103).
constexpr bool many_blocks(TensorType kt) { return kt == TensorType::F16 || kt == TensorType::BF16; }
template <TensorType KT, int TM>
constexpr int kMinBlocks = TM == 1 && many_blocks(KT) ? 4 : 2;

// How a kernel's one-row jobs take compute_round's flat form (its quantised and aligned float
// jobs: in the BF16 kernel the F32/F16 rows beside BF16 too, in the quantised kernels not the
// float rows, whose x the host does not align): items in groups of kFlatRound<KT> with no
// branch inside a group (0: a branch per item). H100 decode, same call against the branch per item
// (NOTES.md runs 132-133): all items flat, 2.9B Q8_0 +2.5%, BF16 +1.5%, 0.1B Q8_0 +1.5%, but
// F16 unchanged and Q4_K_M (the Q4_K and Q6_K kernels) -0.8%; the F16 kernel in groups of
// three items (8 bytes of spills at its 64 registers, against 16 all flat) +1.4%. The legacy
// 4- and 5-bit kernels were not measured.
constexpr int kAllItems = 16;  // a group larger than any round (kUnroll <= 10): all items flat
template <TensorType KT>
constexpr int kFlatRound = KT == TensorType::Q8_0 || KT == TensorType::BF16 ? kAllItems
                           : KT == TensorType::F16                          ? 3
                                                                            : 0;

// Items a thread requests in one memory round: fewer with more rows (more accumulators). In
// the four-block kernels (kManyBlocks) five 16-bit items (a 2,560-column row then takes two
// warps, one round) and three F32 items (the LoRA jobs beside 16-bit weights): more would
// spill their 64 registers.
template <TensorType TY, int TM, bool kManyBlocks>
constexpr int round_items_of() {
  if (TM != 1) return (Item<TY>::kUnroll + 1) / 2;
  if (TY == TensorType::F32 && kManyBlocks) return 3;
  if ((TY == TensorType::F16 || TY == TensorType::BF16) && kManyBlocks) return 5;
  return Item<TY>::kUnroll;
}
template <TensorType TY, int TM, bool kManyBlocks>
constexpr int kRoundItems = round_items_of<TY, TM, kManyBlocks>();

// Activation rows [t0, t0 + T) (T <= TM) of the job: x rows t0 + t, output rows t0 + t.
// warp_sums: [threads / 32][TM] floats of shared memory for rows wider than a warp.
// kManyBlocks: the kernel's many_blocks (kRoundItems).
template <TensorType TY, int TM, bool kManyBlocks, bool kAlignedX, int kFlat, bool kX16>
__device__ __forceinline__ void run_job(const JobDev& jd, int blk, int t0, int T, uint8_t* smem, float* warp_sums) {
  using It = Item<TY>;
  constexpr int U = kRoundItems<TY, TM, kManyBlocks>;
  const MatvecJob& job = jd.job;
  const int tpr = jd.tpr;
  const int g_lane = threadIdx.x & (tpr - 1);
  const int64_t row = int64_t(blk) * (int(blockDim.x) / tpr) + threadIdx.x / tpr;
  const bool row_ok = row < job.W.rows;
  const int64_t items = job.W.items, step = int64_t(tpr) * U, cols = job.W.cols;

  // The first round of weights is requested before waiting on the previous kernel. A
  // round holds all of a thread's items for rows of up to tpr * U items (one memory
  // round trip), else they stream in rounds.
  It w[U];
  int64_t base = g_lane;
  load_round(w, job.W, row, row_ok, base, tpr);
  // So are the epilogue's operands: the bias (a weight) and, for OutOp::add, the residual
  // (written by no kernel right before this one: MatvecJob::y). Read after the products,
  // they were one more memory round trip at the end of every block.
  float bias = 0.f, old[TM] = {};
  if (row_ok && g_lane == 0) {
    if (job.bias) bias = job.bias[row];
#pragma unroll
    for (int t = 0; t < TM; ++t)
      if (job.out_op == OutOp::add && t < T) old[t] = job.y[(t0 + t) * job.y_stride + row];
  }

  pdl_wait();
  pdl_trigger();
  XQ xq[2] = {};
  const float* xf = job.x + t0 * job.x_stride;  // float weights: fp32 activations, row t at xf + t * xf_stride
  int64_t xf_stride = job.x_stride;
  if constexpr (It::kQuant) {
    if (job.xq.q0) {  // quantised by the producer: read through L1
      const int xc = int(job.xq.cols), nb = xc / 32;
      const int pa = int(quant_x_piece_a(job.xq.split, xc)), pb = int(quant_x_piece_b(job.xq.split, xc));
      xq[0] = XQ{job.xq.q0 + size_t(t0) * xc, job.xq.d0 + t0 * nb, job.xq.s0 + t0 * nb, xc, nb, pa, pb};
      xq[1] = XQ{job.xq.q1 + size_t(t0) * xc, job.xq.d1 + t0 * nb, job.xq.s1 + t0 * nb, xc, nb, pa, pb};
    } else {
      stage_quant<quant_x_split_reader(TY)>(job, t0, T, smem, xq);
      __syncthreads();
    }
  } else if (job.in_op != InOp::none) {
    stage_float(job, t0, T, reinterpret_cast<float*>(smem));
    xf = reinterpret_cast<const float*>(smem);
    xf_stride = cols;
    __syncthreads();
  }

  float acc[TM];
#pragma unroll
  for (int t = 0; t < TM; ++t) acc[t] = 0.f;
  const auto rounds = [&](auto x16_tag) {
    while (row_ok) {
      compute_round<It, TM, U, kAlignedX, kFlat, decltype(x16_tag)::value>(w, base, items, tpr, T, xq, xf, xf_stride,
                                                                           cols, job.x16, acc);
      base += step;
      if (base >= items) break;
      load_round(w, job.W, row, row_ok, base, tpr);
    }
  };
  // In kX16 kernels the loop twice, so that neither form branches on x16 between its items.
  if constexpr (kX16 && !It::kQuant) {
    if (job.x16 && job.in_op == InOp::none) {
      rounds(std::true_type{});
    } else {
      rounds(std::false_type{});
    }
  } else {
    rounds(std::false_type{});
  }
#pragma unroll
  for (int t = 0; t < TM; ++t) {
    for (int o = min(tpr, 32) >> 1; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if (tpr > 32) {  // the row's warps add their sums in order
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
      for (int t = 0; t < TM; ++t) warp_sums[warp * TM + t] = acc[t];
    }
    __syncthreads();
    if (g_lane == 0) {
#pragma unroll
      for (int t = 0; t < TM; ++t) {
        float s = 0.f;
        for (int k = 0; k < tpr / 32; ++k) s += warp_sums[(warp + k) * TM + t];
        acc[t] = s;
      }
    }
  }
  if (row_ok && g_lane == 0) {
#pragma unroll
    for (int t = 0; t < TM; ++t) {
      if (t >= T) break;
      const int64_t at = (t0 + t) * job.y_stride + row;
      const float out = apply_out(job.out_op, acc[t], bias, old[t]);
      job.y[at] = out;
      if (job.y16) job.y16[at] = __half_as_ushort(__float2half_rn(out));
      if (job.out_op == OutOp::add && job.y_raw) job.y_raw[at] = acc[t];
    }
  }
}

// One instantiation per quantised type TY (or F16 for float-only launches, always with
// kFloat) and row count TM; with kFloat, besides TY it runs the float types of the LoRA
// matrices (F32, F16). One type per kernel keeps the register allocation of the other types'
// paths out of it, and a launch without float jobs takes the kernel without their code.
// kAlignedX (F16 and BF16 kernels): every job's x rows are 16-byte aligned and its cols a
// multiple of 8, as the host checked (H100 2.9B F16 decode +6%: NOTES.md runs 70, 73).
// kWide (one-row launches of F16 or BF16 weights, matvec.cu: wide_launch): ten items a thread,
// so that a 2,560-column row is one warp's single round, and three 256-thread blocks per SM:
// half the threads of the four-block kernel, so that a launch such as the 2.9B W_o (2,560 rows)
// is resident in one wave and none of its blocks requests its weights only after the wait.
// kX16 (one-row aligned float launches with a job that has MatvecJob::x16): the f16 x path
// beside the fp32 one. A separate instantiation, because the two paths in one kernel made the
// fp32 one slower (0.1B F16 decode -3.8%, NOTES.md run 137).
template <TensorType TY, int TM, bool kFloat, bool kAlignedX = false, bool kWide = false, bool kX16 = false>
__global__ void __launch_bounds__(kThreads, kWide ? 3 : kMinBlocks<TY, TM>)
    matvec_kernel(const __grid_constant__ Batch batch) {
  static_assert(!kWide || (TM == 1 && kAlignedX), "the wide kernel is for one-row aligned float launches");
  static_assert(!kX16 || (TM == 1 && kAlignedX), "f16 x is for one-row aligned float launches");
  constexpr bool kMany = kMinBlocks<TY, TM> == 4 && !kWide;
  constexpr int kFlat = kFlatRound<TY>;
  static_assert(TY != TensorType::F16 || kFloat, "the float-only kernel is the float paths");
  static_assert(!kAlignedX || TY == TensorType::F16 || TY == TensorType::BF16, "aligned x only for float weights");
  extern __shared__ __align__(16) uint8_t smem[];
  float* warp_sums = reinterpret_cast<float*>(smem + batch.red_smem);
  int j = 0;
  while (j + 1 < batch.n_jobs && int(blockIdx.x) >= batch.jobs[j + 1].block_begin) ++j;
  const JobDev& jd = batch.jobs[j];
  const int blk = int(blockIdx.x) - jd.block_begin;
  const TensorType type = jd.job.W.type;
  const int t0 = int(blockIdx.y) * TM, T = min(TM, batch.T - t0);  // row group blockIdx.y
  if constexpr (TY != TensorType::F16) {
    if (type == TY || !kFloat) {
      run_job<TY, TM, kMany, kAlignedX, kFlat, kX16>(jd, blk, t0, T, smem, warp_sums);
      return;
    }
  }
  if constexpr (kFloat) {
    if (type == TensorType::F32) {  // the wide kernel's F32 rows: the four-block kernel's items (no spill)
      run_job<TensorType::F32, TM, kMany || kWide, kAlignedX, kFlat, kX16>(jd, blk, t0, T, smem, warp_sums);
    } else {
      run_job<TensorType::F16, TM, kMany, kAlignedX, kFlat, kX16>(jd, blk, t0, T, smem, warp_sums);
    }
  }
}

template <TensorType TY, int TM, bool kFloat, bool kAlignedX = false, bool kWide = false, bool kX16 = false>
void launch_matvec_kernel(const Batch& batch, int blocks, size_t smem, Stream stream) {
  allow_smem(matvec_kernel<TY, TM, kFloat, kAlignedX, kWide, kX16>, smem);
  launch("matvec", matvec_kernel<TY, TM, kFloat, kAlignedX, kWide, kX16>, dim3(blocks, (batch.T + TM - 1) / TM),
         dim3(batch.threads), smem, stream, batch);
}

#define RWKV_MATVEC_DECLARE(PREFIX, TY, FLOAT)                                                                         \
  PREFIX template void launch_matvec_kernel<TY, 1, FLOAT>(const Batch& batch, int blocks, size_t smem, Stream stream); \
  PREFIX template void launch_matvec_kernel<TY, 4, FLOAT>(const Batch& batch, int blocks, size_t smem, Stream stream);
// The float-only kernel's aligned-x variants (F16, FLOAT = true).
#define RWKV_MATVEC_DECLARE_ALIGNED(PREFIX)                                                                 \
  PREFIX template void launch_matvec_kernel<TensorType::F16, 1, true, true>(const Batch& batch, int blocks, \
                                                                            size_t smem, Stream stream);    \
  PREFIX template void launch_matvec_kernel<TensorType::F16, 4, true, true>(const Batch& batch, int blocks, \
                                                                            size_t smem, Stream stream);
// BF16's aligned-x variants, with and without the F32/F16 paths.
#define RWKV_MATVEC_DECLARE_ALIGNED_BF16(PREFIX)                                                              \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, true, true>(const Batch& batch, int blocks,  \
                                                                             size_t smem, Stream stream);     \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 4, true, true>(const Batch& batch, int blocks,  \
                                                                             size_t smem, Stream stream);     \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, false, true>(const Batch& batch, int blocks, \
                                                                              size_t smem, Stream stream);    \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 4, false, true>(const Batch& batch, int blocks, \
                                                                              size_t smem, Stream stream);
// The wide one-row variants (kWide): F16 (float-only launches) and BF16 with and without the
// F32/F16 paths.
#define RWKV_MATVEC_DECLARE_WIDE(PREFIX)                                                                            \
  PREFIX template void launch_matvec_kernel<TensorType::F16, 1, true, true, true>(const Batch& batch, int blocks,   \
                                                                                  size_t smem, Stream stream);      \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, true, true, true>(const Batch& batch, int blocks,  \
                                                                                   size_t smem, Stream stream);     \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, false, true, true>(const Batch& batch, int blocks, \
                                                                                    size_t smem, Stream stream);
// The f16-x variants (kX16) of the one-row aligned kernels: F16 and BF16 (with and without the
// F32/F16 paths), four-block and wide.
#define RWKV_MATVEC_DECLARE_X16(PREFIX)                                                     \
  PREFIX template void launch_matvec_kernel<TensorType::F16, 1, true, true, false, true>(   \
      const Batch& batch, int blocks, size_t smem, Stream stream);                          \
  PREFIX template void launch_matvec_kernel<TensorType::F16, 1, true, true, true, true>(    \
      const Batch& batch, int blocks, size_t smem, Stream stream);                          \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, true, true, false, true>(  \
      const Batch& batch, int blocks, size_t smem, Stream stream);                          \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, false, true, false, true>( \
      const Batch& batch, int blocks, size_t smem, Stream stream);                          \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, true, true, true, true>(   \
      const Batch& batch, int blocks, size_t smem, Stream stream);                          \
  PREFIX template void launch_matvec_kernel<TensorType::BF16, 1, false, true, true, true>(  \
      const Batch& batch, int blocks, size_t smem, Stream stream);
// A quantised (or BF16) type: with and without the float paths. F16 takes only
// RWKV_MATVEC_DECLARE(..., true).
#define RWKV_MATVEC_INSTANTIATE(TY) RWKV_MATVEC_DECLARE(, TY, true) RWKV_MATVEC_DECLARE(, TY, false)
// In matvec.cu: the instantiations live in matvec_inst_*.cu.
#define RWKV_MATVEC_EXTERN(TY) RWKV_MATVEC_DECLARE(extern, TY, true) RWKV_MATVEC_DECLARE(extern, TY, false)

}  // namespace rwkv::cuda::matvec_detail
