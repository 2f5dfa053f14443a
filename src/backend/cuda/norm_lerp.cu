// Row-wise ops: embedding + ln0, LayerNorm + token shift + lerps (spec §2.2 steps 1-2,
// §2.4 step 1, §2.6), LayerNorm of selected rows (head), elementwise epilogues and the
// fp32 -> f16 conversion that feeds cuBLAS.
#include <algorithm>

#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"
#include "backend/cuda/quantx.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kMaxPer = 16;      // values of a row per thread: C <= 4096
constexpr int kSplitRows = 256;  // ln_shift_lerp: rows up to which a row spreads over blocks

// v[k] = src[c] for the channels c = threadIdx.x + k * kRowThreads of this thread (0 past C).
// All loads are issued before any is used.
__device__ __forceinline__ void load_row(const float* __restrict__ src, int C, float (&v)[kMaxPer]) {
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) {
    const int c = threadIdx.x + k * kRowThreads;
    v[k] = c < C ? src[c] : 0.f;
  }
}
__device__ __forceinline__ void store_row(float* __restrict__ dst, int C, const float (&v)[kMaxPer]) {
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) {
    const int c = threadIdx.x + k * kRowThreads;
    if (c < C) dst[c] = v[k];
  }
}

// Mean and 1/sqrt(var + eps) (population variance) of a row held in registers as load_row
// lays it out, by the whole block of kRowThreads (every thread gets both), in one round: each
// thread's (count, mean, squared deviations) of its values, merged pairwise across its warp
// (whose lanes hold equal counts: C is a multiple of 32), then over the warps through
// `scratch` (Chan et al.'s merge; fixed order, so deterministic, and exact deviations). Two
// rounds (a block sum, then one of squared deviations) put one more block exchange on the
// decode chain (NOTES.md run 117).
__device__ __forceinline__ float2 stats_regs(const float (&v)[kMaxPer], int C, float eps, float4* scratch) {
  float n = 0.f, s = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) {
    if (threadIdx.x + k * kRowThreads < C) {
      s += v[k];
      n += 1.f;
    }
  }
  float mean = n > 0.f ? __fdividef(s, n) : 0.f, m2 = 0.f;  // any centre will do: M2 is about it
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) {
    const float d = threadIdx.x + k * kRowThreads < C ? v[k] - mean : 0.f;
    m2 = fmaf(d, d, m2);
  }
  const float2 st = warp_merge_equal(mean, m2, n);
  const int lane = threadIdx.x & 31;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[threadIdx.x >> 5] = make_float4(32.f * n, st.x, st.y, 0.f);
  __syncthreads();
  // The warps' groups (counts differ where C is not a multiple of kRowThreads), in lanes < 8.
  const float4 g = lane < kRowThreads / 32 ? scratch[lane] : make_float4(0.f, 0.f, 0.f, 0.f);
  const float inv_c = 1.f / float(C);  // the counts add up to C
  const float2 row = warp_merge_groups(g.x, g.y, g.z, inv_c);
  return make_float2(row.x, rsqrtf(row.y * inv_c + eps));
}

// LayerNorm of a row held in registers as load_row lays it out.
__device__ __forceinline__ void layer_norm_regs(float (&v)[kMaxPer], int C, const float (&w)[kMaxPer],
                                                const float (&b)[kMaxPer], float eps, float4* scratch) {
  const float2 st = stats_regs(v, C, eps, scratch);
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) v[k] = (v[k] - st.x) * st.y * w[k] + b[k];
}

template <TensorType TY>
__global__ void __launch_bounds__(kRowThreads) embed_ln_kernel(PackedView E, const int32_t* tokens, const float* ln_w,
                                                               const float* ln_b, float eps, float* raw, float* h) {
  extern __shared__ float xs[];  // C floats
  __shared__ float4 scratch[kRowThreads / 32];
  const int C = int(E.cols);
  float w[kMaxPer], b[kMaxPer];
  load_row(ln_w, C, w);
  load_row(ln_b, C, b);
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x;
  const int64_t tok = tokens[r];
  for (int64_t it = threadIdx.x; it < E.items; it += blockDim.x) {
    Item<TY> item;
    item.load(E, tok, it);
    float v[Item<TY>::kElems];
    item_values(item, it, v);
#pragma unroll
    for (int k = 0; k < Item<TY>::kElems; ++k) {
      const int64_t c = Item<TY>::col(it, k);
      if (c < C) xs[c] = v[k];
    }
  }
  __syncthreads();
  float x[kMaxPer];
  load_row(xs, C, x);
  if (raw) store_row(raw + size_t(r) * C, C, x);
  layer_norm_regs(x, C, w, b, eps, scratch);
  store_row(h + size_t(r) * C, C, x);
}

// Mean and 1/sqrt(var + eps) of a row in memory, by the whole block.
__device__ __forceinline__ float2 row_stats(const float* __restrict__ src, int C, float eps, float4* scratch) {
  float v[kMaxPer];
  load_row(src, C, v);
  return stats_regs(v, C, eps, scratch);
}

// Grid (rows, splits): every block normalises its whole row (statistics) and writes the
// channels blockIdx.y * 256 + threadIdx.x + k * splits * 256. Decode uses C / 256 splits
// so one row spreads over several SMs; prefill one split per row.
__global__ void __launch_bounds__(kRowThreads) ln_shift_lerp_kernel(const __grid_constant__ ShiftLerpArgs a) {
  __shared__ float4 scratch[kRowThreads / 32];
  if (a.early_trigger) pdl_trigger();
  const int C = a.C;
  const int c0 = blockIdx.y * kRowThreads + threadIdx.x, cstep = gridDim.y * kRowThreads;
  // Before the PDL wait: the first channel's weights, the batch layout (uploaded before the
  // step) and the sequence's shift state (written by no kernel of this step before this
  // one). After the wait only the row itself is read: a decode step of many sequences
  // spent most of this kernel's ~19 us in the dependent loads of the layout and the state.
  const int r = blockIdx.x;
  const int s = a.batch.row_seq[r];
  const int start = a.batch.seq_start[s], last = a.batch.seq_start[s + 1] - 1;
  float* shift = a.shift + size_t(a.batch.seq_slot[s]) * a.state_stride;
  float w = 0.f, b = 0.f, mix[6] = {}, shift0 = 0.f;
  if (c0 < C) {
    w = a.ln_w[c0];
    b = a.ln_b[c0];
#pragma unroll
    for (int m = 0; m < 6; ++m)
      if (m < a.n_mix) mix[m] = a.mix[size_t(m) * C + c0];
    if (r == start) shift0 = shift[c0];
  }
  pdl_wait();
  if (!a.early_trigger) pdl_trigger();
  const float* hr = a.h + size_t(r) * C;
  const float* hp = a.h + size_t(r > start ? r - 1 : r) * C;
  const float* hl = a.h + size_t(last) * C;
  const float2 st = row_stats(hr, C, a.eps, scratch);
  const float2 sp = r != start ? row_stats(hp, C, a.eps, scratch) : make_float2(0.f, 0.f);
  const float2 sl = r == start && last != r ? row_stats(hl, C, a.eps, scratch) : make_float2(0.f, 0.f);
  for (int c = c0; c < C; c += cstep) {  // warp-uniform: C is a multiple of 32
    if (c != c0) {
      w = a.ln_w[c];
      b = a.ln_b[c];
      for (int m = 0; m < a.n_mix; ++m) mix[m] = a.mix[size_t(m) * C + c];
    }
    const float x = (hr[c] - st.x) * st.y * w + b;
    // The blocks of a sequence's first row are the only readers of its shift state, so
    // they also write the new one: x of the sequence's last row.
    const float prev = r == start ? (c == c0 ? shift0 : shift[c]) : (hp[c] - sp.x) * sp.y * w + b;
    if (r == start) shift[c] = last == r ? x : (hl[c] - sl.x) * sl.y * w + b;
    const int64_t at = int64_t(r) * C + c;
    if (a.xln) a.xln[at] = x;
    for (int m = 0; m < a.n_mix; ++m) {
      const float o = x + (prev - x) * mix[m];
      if (a.out[m]) a.out[m][at] = o;
      if (a.out16[m]) static_cast<__half*>(a.out16[m])[at] = __float2half_rn(o);
      if (a.out_q[m].q0) quantize32(a.out_q[m], o, int64_t(r) * C, c);
    }
  }
}

__global__ void __launch_bounds__(kRowThreads)
    layer_norm_rows_kernel(const float* x, const int32_t* rows, int C, const float* ln_w, const float* ln_b, float eps,
                           float* y, QuantX yq) {
  __shared__ float4 scratch[kRowThreads / 32];
  float w[kMaxPer], b[kMaxPer];
  load_row(ln_w, C, w);
  load_row(ln_b, C, b);
  pdl_wait();
  pdl_trigger();
  const int i = blockIdx.x;
  const int src = rows ? rows[i] : i;
  float v[kMaxPer];
  load_row(x + size_t(src) * C, C, v);
  layer_norm_regs(v, C, w, b, eps, scratch);
  store_row(y + size_t(i) * C, C, v);
  if (yq.q0) {
    Quant32 q[kMaxPer];  // every block of the row reduced before any is stored: they overlap
#pragma unroll
    for (int k = 0; k < kMaxPer; ++k)
      if (threadIdx.x + k * kRowThreads < C) q[k] = quant32(v[k]);  // warp-uniform: C is a multiple of 32
#pragma unroll
    for (int k = 0; k < kMaxPer; ++k) {
      const int c = threadIdx.x + k * kRowThreads;
      if (c < C) store_quant32(yq, q[k], int64_t(i) * C, c);
    }
  }
}

void check_width(int C, const char* what) {
  if (C <= 0 || C > kRowThreads * kMaxPer || C % 32 != 0)
    fail(ErrorCode::unsupported,
         std::string("cuda ") + what + ": width " + std::to_string(C) + " (must be a multiple of 32, at most 4096)");
}

// Grid (column blocks, rows): no division per element.
__global__ void epilogue_kernel(OutOp op, const float* src, float* dst, const float* bias, int64_t cols,
                                int64_t stride) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.y;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t at = r * stride + c;
    dst[at] = apply_out(op, src[at], bias ? bias[c] : 0.f, op == OutOp::add ? dst[at] : 0.f);
  }
}

// Grid (column blocks, rows); four values per thread when rows are 16-byte aligned.
__global__ void to_f16_kernel(const float* x, int64_t x_stride, int64_t cols, InOp op, __half* dst, bool vec) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.y;
  const float* xr = x + r * x_stride;
  __half* dr = dst + r * cols;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, step = int64_t(gridDim.x) * blockDim.x;
  if (vec) {
    for (int64_t c = 4 * first; c < cols; c += 4 * step) {
      const float4 v = *reinterpret_cast<const float4*>(xr + c);
      const __half2 lo = __floats2half2_rn(apply_in(op, v.x), apply_in(op, v.y));
      const __half2 hi = __floats2half2_rn(apply_in(op, v.z), apply_in(op, v.w));
      *reinterpret_cast<__half2*>(dr + c) = lo;
      *reinterpret_cast<__half2*>(dr + c + 2) = hi;
    }
  } else {
    for (int64_t c = first; c < cols; c += step) dr[c] = __float2half_rn(apply_in(op, xr[c]));
  }
}

// Column blocks of 256 threads for a row of `cols` (per = values per thread).
unsigned column_blocks(int64_t cols, int per) {
  return unsigned(std::min<int64_t>((cols + 256 * per - 1) / (256 * per), 64));
}

}  // namespace

void embed_ln(const PackedView& emb, const int32_t* tokens, int R, const float* ln_w, const float* ln_b, float eps,
              float* raw, float* h, Stream stream) {
  check_width(int(emb.cols), "embed_ln");
  const size_t smem = size_t(emb.cols) * sizeof(float);
  bool launched = false;
  auto go = [&](auto kernel) {
    allow_smem(kernel, smem);
    launch("embed_ln", kernel, dim3(R), dim3(kRowThreads), smem, stream, emb, tokens, ln_w, ln_b, eps, raw, h);
    launched = true;
  };
#define RWKV_GO(TY) go(embed_ln_kernel<TY>)
  switch (emb.type) {
    RWKV_CUDA_TYPE_CASES(RWKV_GO)
    default:
      break;
  }
#undef RWKV_GO
  if (!launched) fail(ErrorCode::unsupported, "cuda embed_ln: unsupported embedding type");
}

void ln_shift_lerp(const ShiftLerpArgs& args, Stream stream) {
  check_width(args.C, "ln_shift_lerp");
  if (args.n_mix < 1 || args.n_mix > 6) fail(ErrorCode::argument, "cuda ln_shift_lerp: 1 to 6 lerps");
  // Up to kSplitRows rows (decode of many sequences), each row over C / 256 blocks: a block
  // per row left most SMs idle and took ~30 us at 64 rows of 2560. Longer prefill chunks
  // have blocks enough with one per row.
  const int splits = args.batch.R <= kSplitRows ? (args.C + kRowThreads - 1) / kRowThreads : 1;
  const dim3 grid(args.batch.R, splits);
  launch("ln_shift_lerp", ln_shift_lerp_kernel, grid, dim3(kRowThreads), 0, stream, args);
}

void layer_norm_rows(const float* x, const int32_t* rows, int n, int C, const float* w, const float* b, float eps,
                     float* y, const QuantX* yq, Stream stream) {
  check_width(C, "layer_norm_rows");
  if (yq && yq->cols != C) fail(ErrorCode::argument, "cuda layer_norm_rows: quantised output of another width");
  launch("layer_norm_rows", layer_norm_rows_kernel, dim3(n), dim3(kRowThreads), 0, stream, x, rows, C, w, b, eps, y,
         yq ? *yq : QuantX{});
}

void epilogue(OutOp op, const float* src, float* dst, const float* bias, int rows, int64_t cols, int64_t stride,
              Stream stream) {
  launch("epilogue", epilogue_kernel, dim3(column_blocks(cols, 1), rows), dim3(256), 0, stream, op, src, dst, bias,
         cols, stride);
}

void to_f16(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, void* dst, Stream stream) {
  const bool vec = cols % 4 == 0 && x_stride % 4 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(dst) & 7) == 0;
  launch("to_f16", to_f16_kernel, dim3(column_blocks(cols, vec ? 4 : 1), rows), dim3(256), 0, stream, x, x_stride, cols,
         op, static_cast<__half*>(dst), vec);
}

}  // namespace rwkv::cuda
