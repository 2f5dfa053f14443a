// Quantising activations to QuantX (ops.h) inside kernels: one warp and one value per lane
// for a block of 32 consecutive values, or eight lanes and a float4 each.
#pragma once

#include "backend/cuda/common.cuh"
#include "backend/cuda/ops.h"

namespace rwkv::cuda {

// Writes value v of lane `lane` of block `blk` (= row * cols / 32 + column / 32) at element
// `at` (= row * cols + column). Every lane of the warp must call it together.
__device__ __forceinline__ void quantize32(const QuantX& out, float v, int64_t at, int64_t blk) {
  const int lane = threadIdx.x & 31;
  const float amax = warp_max(fabsf(v));
  const float d0 = amax / 127.f;
  const int q0 = amax > 0.f ? __float2int_rn(v * (127.f / amax)) : 0;
  const float r = v - float(q0) * d0;
  const float ramax = warp_max(fabsf(r));
  const float d1 = ramax / 127.f;
  const int q1 = ramax > 0.f ? __float2int_rn(r * (127.f / ramax)) : 0;
  const int s0 = warp_sum_int(q0), s1 = warp_sum_int(q1);
  out.q0[at] = int8_t(q0);
  out.q1[at] = int8_t(q1);
  if (lane == 0) {
    out.d0[blk] = d0;
    out.d1[blk] = d1;
    out.s0[blk] = s0;
    out.s1[blk] = s1;
  }
}

// The same two-term quantisation for a block of 32 held as float4 by 8 neighbouring lanes
// (lane l of the group holds values 4l .. 4l+3). Every lane of the warp must call it
// together; `store` says whether this lane's group is a real block. Writes this lane's
// packed quants at word `word` of q0/q1 and, from the group's first lane, the block's
// scales and sums at index `blk`.
__device__ __forceinline__ void quantize_group8(float4 v, bool store, int8_t* q0, int8_t* q1, float* d0, float* d1,
                                                int* s0, int* s1, int64_t word, int64_t blk) {
  const float f[4] = {v.x, v.y, v.z, v.w};
  float amax = fmaxf(fmaxf(fabsf(f[0]), fabsf(f[1])), fmaxf(fabsf(f[2]), fabsf(f[3])));
  for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float dq0 = amax / 127.f, inv0 = amax > 0.f ? 127.f / amax : 0.f;
  int qa[4];
  float r[4], ramax = 0.f;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    qa[e] = __float2int_rn(f[e] * inv0);
    r[e] = f[e] - float(qa[e]) * dq0;
    ramax = fmaxf(ramax, fabsf(r[e]));
  }
  for (int o = 1; o < 8; o <<= 1) ramax = fmaxf(ramax, __shfl_xor_sync(0xffffffffu, ramax, o));
  const float dq1 = ramax / 127.f, inv1 = ramax > 0.f ? 127.f / ramax : 0.f;
  int qb[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) qb[e] = __float2int_rn(r[e] * inv1);
  int sa = qa[0] + qa[1] + qa[2] + qa[3], sb = qb[0] + qb[1] + qb[2] + qb[3];
  for (int o = 1; o < 8; o <<= 1) {
    sa += __shfl_xor_sync(0xffffffffu, sa, o);
    sb += __shfl_xor_sync(0xffffffffu, sb, o);
  }
  if (!store) return;
  auto pack = [](const int(&q)[4]) {
    return int((q[0] & 0xff) | ((q[1] & 0xff) << 8) | ((q[2] & 0xff) << 16) | (uint32_t(q[3]) << 24));
  };
  reinterpret_cast<int*>(q0)[word] = pack(qa);
  reinterpret_cast<int*>(q1)[word] = pack(qb);
  if ((threadIdx.x & 7) == 0) {
    d0[blk] = dq0;
    d1[blk] = dq1;
    s0[blk] = sa;
    s1[blk] = sb;
  }
}

}  // namespace rwkv::cuda
