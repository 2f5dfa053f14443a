// Quantising activations to QuantX (ops.h) inside producer kernels: one warp, one block of
// 32 consecutive values, one value per lane.
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

}  // namespace rwkv::cuda
