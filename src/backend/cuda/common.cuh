// Shared device helpers of the CUDA kernels: error checks, programmatic dependent launch
// (PDL) hooks, warp reductions and streaming loads.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backend/cuda/ops.h"
#include "common/error.h"

namespace rwkv::cuda {

// Throws Error(backend) naming the failed call; used after every CUDA API call.
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::backend, std::string("cuda: ") + what + ": " + cudaGetErrorString(err));
}
#define RWKV_CUDA_CHECK(call) ::rwkv::cuda::check((call), #call)
// After a kernel launch: reports launch-configuration errors at once.
#define RWKV_CUDA_LAUNCHED(name) ::rwkv::cuda::check(cudaGetLastError(), name)

// PDL: a kernel launched with programmatic stream serialisation may start while the
// previous one finishes. Every kernel calls pdl_wait() before it touches memory written by
// an earlier kernel, and before it writes anything (the wait also orders kernels two apart).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel in the stream be scheduled now (its blocks wait in pdl_wait()).
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Mean and sum of squared deviations (M2) of a warp's values, from each lane's own (mean, M2)
// of n values (the same n in every lane), in one round: at butterfly distance o each side
// holds k = n o values, and pairs merge as mean = (ma + mb) / 2, M2 = M2a + M2b + (mb - ma)^2
// k / 2 (Chan et al.). Symmetric in a and b, so every lane gets the same bits; exact
// deviations, so a large mean costs no precision.
__device__ __forceinline__ float2 warp_merge_equal(float mean, float m2, float n) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float mo = __shfl_xor_sync(0xffffffffu, mean, o), m2o = __shfl_xor_sync(0xffffffffu, m2, o);
    const float d = mo - mean;
    m2 = (m2 + m2o) + d * d * (0.5f * n * float(o));
    mean = 0.5f * (mean + mo);
  }
  return make_float2(mean, m2);
}
// The same for groups of different counts, one a lane (count 0 where a lane holds none):
// `inv_total` is 1 / the sum of the counts. Every lane gets (mean, M2) of all the groups.
__device__ __forceinline__ float2 warp_merge_groups(float count, float mean, float m2, float inv_total) {
  const float all_mean = warp_sum(count * mean) * inv_total;
  const float d = mean - all_mean;
  return make_float2(all_mean, warp_sum(fmaf(count * d, d, m2)));
}

// 16-byte load of weight bytes that are streamed once: bypasses L1 allocation.
__device__ __forceinline__ int4 ld_stream16(const void* p) {
  int4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ int2 ld_stream8(const void* p) {
  int2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.s32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const void* p) {
  uint32_t v;
  asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ uint16_t ld_stream2(const void* p) {
  uint16_t v;
  asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

// The epilogues run after a product's reduction, on the decode chain: fast divisions (2 ulp).
__device__ __forceinline__ float sigmoidf_(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

// The transform InOp names, applied to an activation before a product.
__device__ __forceinline__ float apply_in(InOp op, float v) {
  switch (op) {
    case InOp::tanh:
      return tanhf(v);
    case InOp::sigmoid:
      return sigmoidf_(v);
    case InOp::relu_sq:
      return fmaxf(v, 0.f) * fmaxf(v, 0.f);
    default:
      return v;
  }
}
// decay = exp(-e^-0.5 * sigmoid(z)), spec §2.2 step 4 (fp32 throughout).
__device__ __forceinline__ float decay_from_logit(float z) {
  return expf(__fdividef(-0.6065306597126334f, 1.f + expf(-z)));
}

// The epilogue OutOp names for a product v (+ bias); `old` is the destination's value
// (OutOp::add).
__device__ __forceinline__ float apply_out(OutOp op, float v, float bias, float old) {
  switch (op) {
    case OutOp::add:
      return old + v;
    case OutOp::decay:
      return decay_from_logit(bias + v);
    case OutOp::sigmoid:
      return sigmoidf_(bias + v);
    case OutOp::relu_sq:
      return fmaxf(v, 0.f) * fmaxf(v, 0.f);
    case OutOp::tanh:
      return tanhf(bias + v);
    default:
      return v;
  }
}

}  // namespace rwkv::cuda
