// Quantising activations to QuantX (ops.h) inside kernels: one warp and one value per lane
// for a block of 32 consecutive values, or eight lanes and a float4 each.
#pragma once

#include "backend/cuda/common.cuh"
#include "backend/cuda/ops.h"

namespace rwkv::cuda {

// Warp-wide maximum of non-negative floats and sum of ints: one redux.sync each on sm_80+
// (a non-negative float orders as its bits), else five shuffles. The quantisations below
// sit on the decode chain after the LayerNorm and the WKV read-out, where eight warps of a
// block reducing at once made the SM's shuffle throughput the limit (NOTES.md run 64).
__device__ __forceinline__ float warp_max_nonneg(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(v)));
#else
  return warp_max(v);
#endif
}
__device__ __forceinline__ int warp_sum_int_fast(int v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_add_sync(0xffffffffu, v);
#else
  return warp_sum_int(v);
#endif
}

// One lane's share of a block of 32 quantised to two int8 terms (QuantX): its quants, and
// the block's scales and quant sums (the same in every lane).
struct Quant32 {
  int q0, q1, s0, s1;
  float d0, d1;
};

// Every lane of the warp must call it together, one value each. Max and int sums are
// exact, so the result does not depend on the reduction form. The scales come by fast
// reciprocals (IEEE divisions are ~15 instructions each, four of them on the chain after a
// LayerNorm): q0 = rint(v * 127 / amax) stays within +-127 (|v| <= amax, error << 0.5), and
// the second term takes whatever the first leaves, so the pair still carries v. Blocks whose
// maximum is below kTiny (where 127 / amax would overflow) quantise to zero.
__device__ __forceinline__ Quant32 quant32(float v) {
  constexpr float kInv127 = 1.f / 127.f, kTiny = 1e-30f;
  Quant32 q;
  const float amax = warp_max_nonneg(fabsf(v));
  q.d0 = amax * kInv127;
  q.q0 = amax > kTiny ? __float2int_rn(v * __fdividef(127.f, amax)) : 0;
  const float r = v - float(q.q0) * q.d0;
  const float ramax = warp_max_nonneg(fabsf(r));
  q.s0 = warp_sum_int_fast(q.q0);
  q.d1 = ramax * kInv127;
  q.q1 = ramax > kTiny ? __float2int_rn(r * __fdividef(127.f, ramax)) : 0;
  q.s1 = warp_sum_int_fast(q.q1);
  return q;
}

// Stores lane's part of q at column c of the row that starts at element `row` (= t * cols)
// of `out` (its place in the row: quant_x_offset, ops.h), block (row + c) / 32.
__device__ __forceinline__ void store_quant32(const QuantX& out, const Quant32& q, int64_t row, int64_t c) {
  const int64_t at = row + quant_x_offset(c, out.split, out.cols);
  out.q0[at] = int8_t(q.q0);
  out.q1[at] = int8_t(q.q1);
  if ((threadIdx.x & 31) == 0) {
    const int64_t blk = (row + c) / 32;
    out.d0[blk] = q.d0;
    out.d1[blk] = q.d1;
    out.s0[blk] = q.s0;
    out.s1[blk] = q.s1;
  }
}

// Value v of this lane to column c of the row starting at element `row` of `out`. Every lane
// of the warp must call it.
__device__ __forceinline__ void quantize32(const QuantX& out, float v, int64_t row, int64_t c) {
  store_quant32(out, quant32(v), row, c);
}

// The same two-term quantisation for a block of 32 held as float4 by 8 neighbouring lanes
// (lane l of the group holds values 4l .. 4l+3). Every lane of the warp must call it
// together; `store` says whether this lane's group is a real block. Writes this lane's
// packed quants at word `word` of q0/q1 (four values stay together in either order of a
// QuantX row, ops.h: quant_x_offset) and, from the group's first lane, the block's scales and sums at
// index `blk`.
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
