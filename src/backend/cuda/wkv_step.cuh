// One token of the WKV7 recurrence for one state row split over kLanes adjacent lanes,
// shared by the decode and prefill kernels (wkv7.cu) and the persistent kernel's WKV stage
// (persistent.cu).
#pragma once

#include "backend/cuda/common.cuh"

namespace rwkv::cuda {

inline constexpr float kL2Eps = 1e-12f;

// One token's state update for row i, columns [part*Q, part*Q+Q): returns y_i (summed
// over the kLanes parts). sa uses the old state, y the new one (spec §2.3).
template <int Q, int kLanes = 4>
__device__ __forceinline__ float state_step(float (&st)[Q], int part, float vi, const float* r, const float* d,
                                            const float* km, const float* al, const float* be) {
  const int c0 = part * Q;
  auto f4 = [](const float* p) { return *reinterpret_cast<const float4*>(p); };
  float sa0 = 0.f, sa1 = 0.f;
#pragma unroll
  for (int j = 0; j < Q; j += 4) {
    const float4 al4 = f4(al + c0 + j);
    sa0 = fmaf(al4.x, st[j], sa0);
    sa1 = fmaf(al4.y, st[j + 1], sa1);
    sa0 = fmaf(al4.z, st[j + 2], sa0);
    sa1 = fmaf(al4.w, st[j + 3], sa1);
  }
  float sa = sa0 + sa1;
#pragma unroll
  for (int m = 1; m < kLanes; m <<= 1) sa += __shfl_xor_sync(0xffffffffu, sa, m);
  float y0 = 0.f, y1 = 0.f;
#pragma unroll
  for (int j = 0; j < Q; j += 4) {
    const float4 d4 = f4(d + c0 + j), k4 = f4(km + c0 + j), b4 = f4(be + c0 + j), r4 = f4(r + c0 + j);
    st[j] = fmaf(st[j], d4.x, fmaf(vi, k4.x, sa * b4.x));
    st[j + 1] = fmaf(st[j + 1], d4.y, fmaf(vi, k4.y, sa * b4.y));
    st[j + 2] = fmaf(st[j + 2], d4.z, fmaf(vi, k4.z, sa * b4.z));
    st[j + 3] = fmaf(st[j + 3], d4.w, fmaf(vi, k4.w, sa * b4.w));
    y0 = fmaf(st[j], r4.x, y0);
    y1 = fmaf(st[j + 1], r4.y, y1);
    y0 = fmaf(st[j + 2], r4.z, y0);
    y1 = fmaf(st[j + 3], r4.w, y1);
  }
  float y = y0 + y1;
#pragma unroll
  for (int m = 1; m < kLanes; m <<= 1) y += __shfl_xor_sync(0xffffffffu, y, m);
  return y;
}

}  // namespace rwkv::cuda
