// Row-wise ops: embedding + ln0, LayerNorm + token shift + lerps (spec §2.2 steps 1-2,
// §2.4 step 1, §2.6), LayerNorm of selected rows (head), elementwise epilogues and the
// fp32 -> f16 conversion that feeds cuBLAS.
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kRowThreads = 256;

template <TensorType TY>
__global__ void __launch_bounds__(kRowThreads) embed_ln_kernel(PackedView E, const int32_t* tokens, const float* w,
                                                              const float* b, float eps, float* raw, float* h) {
  extern __shared__ float xs[];  // C floats, then 32 floats of reduction scratch
  const int C = int(E.cols);
  float* scratch = xs + C;
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
  if (raw)
    for (int c = threadIdx.x; c < C; c += blockDim.x) raw[size_t(r) * C + c] = xs[c];
  block_layer_norm(xs, C, w, b, eps, h + size_t(r) * C, scratch);
}

__global__ void __launch_bounds__(kRowThreads) ln_shift_lerp_kernel(const __grid_constant__ ShiftLerpArgs a) {
  extern __shared__ float sm[];  // x [C], prev [C], scratch [32]
  const int C = a.C;
  float* x = sm;
  float* prev = sm + C;
  float* scratch = sm + 2 * C;
  pdl_wait();
  pdl_trigger();
  const int r = blockIdx.x;
  const int s = a.batch.row_seq[r];
  const int start = a.batch.seq_start[s], last = a.batch.seq_start[s + 1] - 1;
  float* shift = a.shift + size_t(a.batch.seq_slot[s]) * a.state_stride;
  block_layer_norm(a.h + size_t(r) * C, C, a.ln_w, a.ln_b, a.eps, x, scratch);
  if (r == start) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) prev[c] = shift[c];
  } else {
    block_layer_norm(a.h + size_t(r - 1) * C, C, a.ln_w, a.ln_b, a.eps, prev, scratch);
  }
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xv = x[c], d = prev[c] - xv;
    a.xln[size_t(r) * C + c] = xv;
    for (int m = 0; m < a.n_mix; ++m) a.out[m][size_t(r) * C + c] = xv + d * a.mix[size_t(m) * C + c];
  }
  // The block of a sequence's first row is the only reader of its shift state, so it
  // also writes the new one: x of the sequence's last row.
  if (r == start) {
    if (last == r) {
      for (int c = threadIdx.x; c < C; c += blockDim.x) shift[c] = x[c];
    } else {
      block_layer_norm(a.h + size_t(last) * C, C, a.ln_w, a.ln_b, a.eps, prev, scratch);
      for (int c = threadIdx.x; c < C; c += blockDim.x) shift[c] = prev[c];
    }
  }
}

__global__ void __launch_bounds__(kRowThreads) layer_norm_rows_kernel(const float* x, const int32_t* rows, int C,
                                                                     const float* w, const float* b, float eps,
                                                                     float* y) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_trigger();
  const int i = blockIdx.x;
  const int src = rows ? rows[i] : i;
  block_layer_norm(x + size_t(src) * C, C, w, b, eps, y + size_t(i) * C, scratch);
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
  const size_t smem = (size_t(emb.cols) + 32) * sizeof(float);
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
  const size_t smem = (2 * size_t(args.C) + 32) * sizeof(float);
  allow_smem(ln_shift_lerp_kernel, smem);
  launch("ln_shift_lerp", ln_shift_lerp_kernel, dim3(args.batch.R), dim3(kRowThreads), smem, stream, args);
}

void layer_norm_rows(const float* x, const int32_t* rows, int n, int C, const float* w, const float* b, float eps,
                     float* y, Stream stream) {
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
