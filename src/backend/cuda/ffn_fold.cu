// The FFN LayerNorm folded into the key product at one-row decode (ops.h: KeyFoldArgs), for
// 16-bit float keys. A LayerNorm launch between the output projection and the key product
// cost ~2.9 us of a ~70 us 2.9B F16 layer (H100: 424 -> 441 tok/s without it, results wrong;
// NOTES.md run 113). Here each row's tpr threads hold the whole row in one round of kItems
// 16-byte items: before the PDL wait they turn their weights into w c1 and take w . e (both
// known before the row y), after it they read y once for the product and for y's sums.
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 5;    // 8-weight items a thread: 2,560 columns over 64 threads
constexpr int kMaxTpr = 64;  // threads a row: two warps at most, meeting in shared memory

__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// Four blocks of 256 threads (or eight of 128) per SM at 64 registers, as the one-row F16
// matvec: its loads in flight are what keep the SM busy (NOTES.md runs 101-103). So the
// weights stay packed across the wait and are converted twice (for w . e before it, for the
// row after it); c1, e and y are the same for every block and come from L1.
template <TensorType TY>
__global__ void __launch_bounds__(kThreads, 4) ffn_key_fold_kernel(const __grid_constant__ KeyFoldArgs a, int tpr) {
  using It = Item<TY>;
  __shared__ float4 warp_sums[kThreads / 32];
  const int g_lane = threadIdx.x & (tpr - 1);
  const int64_t row = int64_t(blockIdx.x) * (int(blockDim.x) / tpr) + threadIdx.x / tpr;
  const bool row_ok = row < a.W.rows;
  const int64_t items = a.W.items;
  It w[kItems];
#pragma unroll
  for (int u = 0; u < kItems; ++u) {
    const int64_t it = g_lane + int64_t(tpr) * u;
    if (row_ok && it < items) w[u].load(a.W, row, it);
  }
  const float row_a = row_ok && g_lane == 0 ? a.row_a[row] : 0.f;
  // Before the wait: w . e.
  float e_dot = 0.f;
#pragma unroll
  for (int u = 0; u < kItems; ++u) {
    const int64_t it = g_lane + int64_t(tpr) * u;
    if (!row_ok || it >= items) break;
    float v[8], e[8];
    w[u].values(v);
    load8(a.e + 8 * it, e);
#pragma unroll
    for (int k = 0; k < 8; ++k) e_dot = fmaf(v[k], e[k], e_dot);
  }
  pdl_wait();
  pdl_trigger();
  // The row: the products with w c1 and its sums, all shifted by K (every thread covers its
  // own columns once, so a row's threads together see every column once).
  const float K = a.y[0];
  float dot = 0.f, s1 = 0.f, s2 = 0.f;
#pragma unroll
  for (int u = 0; u < kItems; ++u) {
    const int64_t it = g_lane + int64_t(tpr) * u;
    if (it >= items) break;
    float v[8] = {}, c1[8], y[8];
    if (row_ok) w[u].values(v);
    load8(a.c1 + 8 * it, c1);
    load8(a.y + 8 * it, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float d = y[k] - K;
      dot = fmaf(v[k] * c1[k], d, dot);
      s1 += d;
      s2 = fmaf(d, d, s2);
    }
  }
  float4 t = make_float4(dot, s1, s2, e_dot);
  for (int o = min(tpr, 32) >> 1; o > 0; o >>= 1) {
    t.x += __shfl_xor_sync(0xffffffffu, t.x, o);
    t.y += __shfl_xor_sync(0xffffffffu, t.y, o);
    t.z += __shfl_xor_sync(0xffffffffu, t.z, o);
    t.w += __shfl_xor_sync(0xffffffffu, t.w, o);
  }
  if (tpr > 32) {  // block-uniform: the row's warps add their sums in order
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) warp_sums[warp] = t;
    __syncthreads();
    if (g_lane == 0) {
      t = warp_sums[warp];
      for (int k = 1; k < tpr / 32; ++k) t = add4(t, warp_sums[warp + k]);
    }
  }
  if (!row_ok || g_lane != 0) return;
  const float inv_c = 1.f / float(a.W.cols);
  const float mean_d = t.y * inv_c;  // mean - K
  const float var = fmaxf(t.z * inv_c - mean_d * mean_d, 0.f);
  const float z = rsqrtf(var + a.eps) * (t.x - mean_d * row_a) + t.w;
  const float r = fmaxf(z, 0.f);
  a.hidden[row] = r * r;
}

// Threads a row: the fewest (a power of two) whose kItems items cover it.
int threads_per_row(int64_t items) {
  int tpr = 1;
  while (int64_t(tpr) * kItems < items) tpr *= 2;
  return tpr;
}

}  // namespace

bool ffn_key_fold_supported(TensorType type, int64_t C) {
  return (type == TensorType::F16 || type == TensorType::BF16) && C % 8 == 0 && C > 0 &&
         threads_per_row(C / 8) <= kMaxTpr;
}

void ffn_key_folded(const KeyFoldArgs& a, Stream stream) {
  if (!ffn_key_fold_supported(a.W.type, a.W.cols) || a.W.items * 8 != a.W.cols)
    fail(ErrorCode::unsupported, "cuda ffn_key_folded: " + std::string(type_name(a.W.type)) + " key of " +
                                     std::to_string(a.W.cols) + " columns");
  const int tpr = threads_per_row(a.W.items);
  // 128-thread blocks where the grid has four blocks per SM or more (as the matvec's).
  const int64_t rows_per_block = kThreads / tpr;
  const int threads = (a.W.rows + rows_per_block - 1) / rows_per_block >= 4 * device_sms() && tpr <= kThreads / 2
                          ? kThreads / 2
                          : kThreads;
  const int64_t rows_per_launch_block = threads / tpr;
  const unsigned blocks = unsigned((a.W.rows + rows_per_launch_block - 1) / rows_per_launch_block);
  with_type<TensorType::F16, TensorType::BF16>(a.W.type, [&](auto ty) {
    launch("ffn_key_fold", ffn_key_fold_kernel<decltype(ty)::value>, dim3(blocks), dim3(unsigned(threads)), 0, stream,
           a, tpr);
  });
}

void ffn_fold_vectors(const float* ln_w, const float* ln_b, const float* mix, int64_t C, float* c1, float* c0) {
  for (int64_t c = 0; c < C; ++c) {
    c1[c] = (1.f - mix[c]) * ln_w[c];
    c0[c] = (1.f - mix[c]) * ln_b[c];
  }
}

}  // namespace rwkv::cuda
