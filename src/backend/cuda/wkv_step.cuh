// One token of the WKV7 recurrence for one state row split over kLanes adjacent lanes,
// shared by the decode and prefill kernels (wkv7.cu).
#pragma once

#include "backend/cuda/common.cuh"

namespace rwkv::cuda {

inline constexpr float kL2Eps = 1e-12f;

// A lane's Q columns of a token's vectors (spec §2.3): r, decay, k_mod, alpha = -kk and
// beta = kk a, as float4 j = 0 .. Q/4-1. Read where they are used from shared memory
// (SharedCols) or held in registers (TokenCols, loaded ahead of their use).
struct SharedCols {
  const float *r_, *d_, *km_, *al_, *be_;
  __device__ static float4 at(const float* p, int j) { return reinterpret_cast<const float4*>(p)[j]; }
  __device__ float4 r(int j) const { return at(r_, j); }
  __device__ float4 d(int j) const { return at(d_, j); }
  __device__ float4 km(int j) const { return at(km_, j); }
  __device__ float4 al(int j) const { return at(al_, j); }
  __device__ float4 be(int j) const { return at(be_, j); }
};
template <int Q>
struct TokenCols {
  float4 r_[Q / 4], d_[Q / 4], km_[Q / 4], al_[Q / 4], be_[Q / 4];
  __device__ void load(const SharedCols& s) {
#pragma unroll
    for (int j = 0; j < Q / 4; ++j) {
      al_[j] = s.al(j);
      d_[j] = s.d(j);
      km_[j] = s.km(j);
      be_[j] = s.be(j);
      r_[j] = s.r(j);
    }
  }
  __device__ float4 r(int j) const { return r_[j]; }
  __device__ float4 d(int j) const { return d_[j]; }
  __device__ float4 km(int j) const { return km_[j]; }
  __device__ float4 al(int j) const { return al_[j]; }
  __device__ float4 be(int j) const { return be_[j]; }
};

// The state update of this lane's Q columns of row i: returns this lane's part of y_i (the
// caller sums the kLanes parts). sa, which needs the whole row, is summed across the lanes
// here; it uses the old state, y the new one.
template <int Q, int kLanes, class Cols>
__device__ __forceinline__ float state_step_part(float (&st)[Q], float vi, const Cols& c) {
  float sa0 = 0.f, sa1 = 0.f;
#pragma unroll
  for (int j = 0; j < Q / 4; ++j) {
    const float4 al = c.al(j);
    sa0 = fmaf(al.x, st[4 * j], sa0);
    sa1 = fmaf(al.y, st[4 * j + 1], sa1);
    sa0 = fmaf(al.z, st[4 * j + 2], sa0);
    sa1 = fmaf(al.w, st[4 * j + 3], sa1);
  }
  float sa = sa0 + sa1;
#pragma unroll
  for (int m = 1; m < kLanes; m <<= 1) sa += __shfl_xor_sync(0xffffffffu, sa, m);
  float y0 = 0.f, y1 = 0.f;
#pragma unroll
  for (int j = 0; j < Q / 4; ++j) {
    const float4 d = c.d(j), k = c.km(j), be = c.be(j), r = c.r(j);
    float* s = st + 4 * j;
    s[0] = fmaf(s[0], d.x, fmaf(vi, k.x, sa * be.x));
    s[1] = fmaf(s[1], d.y, fmaf(vi, k.y, sa * be.y));
    s[2] = fmaf(s[2], d.z, fmaf(vi, k.z, sa * be.z));
    s[3] = fmaf(s[3], d.w, fmaf(vi, k.w, sa * be.w));
    y0 = fmaf(s[0], r.x, y0);
    y1 = fmaf(s[1], r.y, y1);
    y0 = fmaf(s[2], r.z, y0);
    y1 = fmaf(s[3], r.w, y1);
  }
  return y0 + y1;
}

// One token's state update for row i, columns [part*Q, part*Q+Q), the token's vectors at
// r .. be (all N columns, shared memory): returns y_i (summed over the kLanes parts).
template <int Q, int kLanes = 4>
__device__ __forceinline__ float state_step(float (&st)[Q], int part, float vi, const float* r, const float* d,
                                            const float* km, const float* al, const float* be) {
  const int c0 = part * Q;
  float y = state_step_part<Q, kLanes>(st, vi, SharedCols{r + c0, d + c0, km + c0, al + c0, be + c0});
#pragma unroll
  for (int m = 1; m < kLanes; m <<= 1) y += __shfl_xor_sync(0xffffffffu, y, m);
  return y;
}

}  // namespace rwkv::cuda
