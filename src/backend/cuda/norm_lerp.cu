// Row-wise ops: embedding + ln0, LayerNorm + token shift + lerps (spec §2.2 steps 1-2,
// §2.4 step 1, §2.6), LayerNorm of selected rows (head), elementwise epilogues and the
// fp32 -> f16 conversion that feeds cuBLAS.
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"
#include "backend/cuda/quantx.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kMaxPer = 16;  // values of a row per thread: C <= 4096

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

// LayerNorm (population variance) of a row held in registers as load_row lays it out.
__device__ __forceinline__ void layer_norm_regs(float (&v)[kMaxPer], int C, const float (&w)[kMaxPer],
                                                const float (&b)[kMaxPer], float eps, float* scratch) {
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) s += v[k];
  const float mean = block_sum(s, scratch) / float(C);
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) {
    const int c = threadIdx.x + k * kRowThreads;
    const float d = c < C ? v[k] - mean : 0.f;
    q += d * d;
  }
  const float rs = rsqrtf(block_sum(q, scratch) / float(C) + eps);
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) v[k] = (v[k] - mean) * rs * w[k] + b[k];
}

template <TensorType TY>
__global__ void __launch_bounds__(kRowThreads) embed_ln_kernel(PackedView E, const int32_t* tokens, const float* ln_w,
                                                              const float* ln_b, float eps, float* raw, float* h) {
  extern __shared__ float xs[];  // C floats
  __shared__ float scratch[32];
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

// Mean and 1/sqrt(var + eps) of a row, by the whole block (every thread gets both).
__device__ __forceinline__ float2 row_stats(const float* __restrict__ src, int C, float eps, float* scratch) {
  float v[kMaxPer];
  load_row(src, C, v);
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) s += v[k];
  const float mean = block_sum(s, scratch) / float(C);
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPer; ++k) {
    const int c = threadIdx.x + k * kRowThreads;
    const float d = c < C ? v[k] - mean : 0.f;
    q += d * d;
  }
  return make_float2(mean, rsqrtf(block_sum(q, scratch) / float(C) + eps));
}

// Grid (rows, C / 256): every block normalises its whole row (statistics) but writes only
// its 256 channels, one per thread, so a single decode row still spreads over C/256 SMs.
__global__ void __launch_bounds__(kRowThreads) ln_shift_lerp_kernel(const __grid_constant__ ShiftLerpArgs a) {
  __shared__ float scratch[32];
  const int C = a.C;
  const int c = blockIdx.y * kRowThreads + threadIdx.x;
  const bool has = c < C;  // warp-uniform: C is a multiple of 32
  float w = 0.f, b = 0.f, mix[6] = {};
  if (has) {  // weights before the PDL wait
    w = a.ln_w[c];
    b = a.ln_b[c];
#pragma unroll
    for (int m = 0; m < 6; ++m)
      if (m < a.n_mix) mix[m] = a.mix[size_t(m) * C + c];
  }
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x;
  const int s = a.batch.row_seq[r];
  const int start = a.batch.seq_start[s], last = a.batch.seq_start[s + 1] - 1;
  float* shift = a.shift + size_t(a.batch.seq_slot[s]) * a.state_stride;
  const float* hr = a.h + size_t(r) * C;
  const float hc = has ? hr[c] : 0.f;
  const float old_shift = has && r == start ? shift[c] : 0.f;
  const float2 st = row_stats(hr, C, a.eps, scratch);
  const float x = (hc - st.x) * st.y * w + b;
  float prev = old_shift;
  if (r != start) {
    const float* hp = a.h + size_t(r - 1) * C;
    const float2 sp = row_stats(hp, C, a.eps, scratch);
    prev = has ? (hp[c] - sp.x) * sp.y * w + b : 0.f;
  }
  if (has) a.xln[size_t(r) * C + c] = x;
  for (int m = 0; m < a.n_mix; ++m) {
    if (!has) break;
    const float o = x + (prev - x) * mix[m];
    const int64_t at = int64_t(r) * C + c;
    a.out[m][at] = o;
    if (a.out_q[m].q0) quantize32(a.out_q[m], o, at, at / 32);
  }
  // The blocks of a sequence's first row are the only readers of its shift state, so they
  // also write the new one: x of the sequence's last row.
  if (r == start) {
    float nx = x;
    if (last != r) {
      const float* hl = a.h + size_t(last) * C;
      const float2 sl = row_stats(hl, C, a.eps, scratch);
      nx = has ? (hl[c] - sl.x) * sl.y * w + b : 0.f;
    }
    if (has) shift[c] = nx;
  }
}

__global__ void __launch_bounds__(kRowThreads) layer_norm_rows_kernel(const float* x, const int32_t* rows, int C,
                                                                     const float* ln_w, const float* ln_b, float eps,
                                                                     float* y) {
  __shared__ float scratch[32];
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
}

void check_width(int C, const char* what) {
  if (C <= 0 || C > kRowThreads * kMaxPer || C % 32 != 0)
    fail(ErrorCode::unsupported, std::string("cuda ") + what + ": width " + std::to_string(C) +
                                     " (must be a multiple of 32, at most 4096)");
}

__global__ void epilogue_kernel(OutOp op, const float* src, float* dst, const float* bias, int rows, int64_t cols,
                                int64_t stride) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = int64_t(rows) * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols, at = r * stride + c;
    const float v = src[at];
    switch (op) {
      case OutOp::store: dst[at] = v; break;
      case OutOp::add: dst[at] += v; break;
      case OutOp::decay: dst[at] = decay_from_logit(bias[c] + v); break;
      case OutOp::sigmoid: dst[at] = sigmoidf_(bias[c] + v); break;
      case OutOp::relu_sq: {
        const float m = fmaxf(v, 0.f);
        dst[at] = m * m;
        break;
      }
    }
  }
}

__global__ void to_f16_kernel(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, __half* dst) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = int64_t(rows) * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    float v = x[r * x_stride + c];
    if (op == InOp::tanh) v = tanhf(v);
    else if (op == InOp::sigmoid) v = sigmoidf_(v);
    dst[i] = __float2half_rn(v);
  }
}

int elementwise_blocks(int64_t n) { return int(std::min<int64_t>((n + 255) / 256, 4096)); }

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
    default: break;
  }
#undef RWKV_GO
  if (!launched) fail(ErrorCode::unsupported, "cuda embed_ln: unsupported embedding type");
}

void ln_shift_lerp(const ShiftLerpArgs& args, Stream stream) {
  check_width(args.C, "ln_shift_lerp");
  if (args.n_mix < 1 || args.n_mix > 6) fail(ErrorCode::argument, "cuda ln_shift_lerp: 1 to 6 lerps");
  const dim3 grid(args.batch.R, (args.C + kRowThreads - 1) / kRowThreads);
  launch("ln_shift_lerp", ln_shift_lerp_kernel, grid, dim3(kRowThreads), 0, stream, args);
}

void layer_norm_rows(const float* x, const int32_t* rows, int n, int C, const float* w, const float* b, float eps,
                     float* y, Stream stream) {
  check_width(C, "layer_norm_rows");
  launch("layer_norm_rows", layer_norm_rows_kernel, dim3(n), dim3(kRowThreads), 0, stream, x, rows, C, w, b, eps, y);
}

void epilogue(OutOp op, const float* src, float* dst, const float* bias, int rows, int64_t cols, int64_t stride,
              Stream stream) {
  launch("epilogue", epilogue_kernel, dim3(elementwise_blocks(int64_t(rows) * cols)), dim3(256), 0, stream, op, src,
         dst, bias, rows, cols, stride);
}

void to_f16(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, void* dst, Stream stream) {
  launch("to_f16", to_f16_kernel, dim3(elementwise_blocks(int64_t(rows) * cols)), dim3(256), 0, stream, x, x_stride,
         rows, cols, op, static_cast<__half*>(dst));
}

}  // namespace rwkv::cuda
