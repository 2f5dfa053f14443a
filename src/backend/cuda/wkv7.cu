// The time-mix core (spec §2.2 steps 6, 9-13 and §2.3) after the projections.
//
// wkv_fused: one block per (sequence, head), 4N threads; thread (i, part) keeps the state
// columns [part*N/4, part*N/4 + N/4) of value row i in registers. Per token: channel
// scalars (value-residual mix, kk, k_mod) by the first N threads, the state update and
// read-out by all, then group norm + bonus + gate. For decode.
//
// wkv_prefill: the per-token work is split out of the recurrence: wkv_prep (warp per
// (token, head)), wkv_scan (the sequential recurrence alone, four state rows per thread,
// tokens staged in shared memory in chunks), wkv_post (warp per (token, head)).
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quantx.cuh"
#include "backend/cuda/wkv_step.cuh"

namespace rwkv::cuda {
namespace {

template <int Q>
__device__ __forceinline__ void load_state(const float* S, float (&st)[Q]) {
#pragma unroll
  for (int j = 0; j < Q; j += 4) {
    const float4 f = *reinterpret_cast<const float4*>(S + j);
    st[j] = f.x;
    st[j + 1] = f.y;
    st[j + 2] = f.z;
    st[j + 3] = f.w;
  }
}
template <int Q>
__device__ __forceinline__ void store_state(float* S, const float (&st)[Q]) {
#pragma unroll
  for (int j = 0; j < Q; j += 4)
    *reinterpret_cast<float4*>(S + j) = make_float4(st[j], st[j + 1], st[j + 2], st[j + 3]);
}

// At least four blocks per SM (two for N = 128): with many sequences the kernel moves every
// state through the SM, and three resident blocks (76 registers) left it latency-bound.
template <int N>
__global__ void __launch_bounds__(4 * N, N == 128 ? 2 : 4) wkv_fused_kernel(const __grid_constant__ WkvArgs a) {
  constexpr int Q = N / 4;
  __shared__ __align__(16) float s_r[N], s_d[N], s_km[N], s_al[N], s_be[N], s_v[N], s_y[N];
  __shared__ float scratch[32];
  const int h = blockIdx.x, b = blockIdx.y;
  const int tid = threadIdx.x, i = tid >> 2, part = tid & 3;
  const int C = a.H * N, hc = h * N + tid;  // hc: this thread's channel (tid < N)
  const bool chan = tid < N;
  // Per-channel weights before the PDL wait.
  float k_k = 0.f, k_a = 0.f, r_k = 0.f, lw = 0.f, lb = 0.f;
  if (chan) {
    k_k = a.k_k[hc];
    k_a = a.k_a[hc];
    r_k = a.r_k[hc];
    lw = a.lnx_w[hc];
    lb = a.lnx_b[hc];
  }
  // The batch layout (uploaded before the step) and this layer's WKV state (written by no
  // kernel of this step before this one) are read before the PDL wait.
  const int start = a.batch.seq_start[b], end = a.batch.seq_start[b + 1];
  float* S = a.state + size_t(a.batch.seq_slot[b]) * a.state_stride + size_t(h) * N * N + size_t(i) * N + part * Q;
  float st[Q];
  load_state(S, st);
  pdl_wait();
  pdl_trigger();
  for (int r = start; r < end; ++r) {
    const size_t at = size_t(r) * C + hc;
    float rr = 0.f, kv = 0.f, vv = 0.f, aa = 0.f, dd = 0.f, gg = 0.f, nu = 0.f, vf = 0.f;
    if (chan) {  // every load of the token at once
      rr = a.r[at];
      kv = a.k[at];
      vv = a.v[at];
      aa = a.a[at];
      dd = a.decay[at];
      gg = a.g[at];
      if (a.first_layer) {
        a.v_first[at] = vv;
      } else {
        nu = a.nu[at];
        vf = a.v_first[at];
        vv += nu * (vf - vv);
        a.v[at] = vv;
      }
    }
    float kk = kv * k_k;
    const float kmod = kv * (1.f + (aa - 1.f) * k_a);
    if (chan) {
      s_r[tid] = rr;
      s_d[tid] = dd;
      s_km[tid] = kmod;
      s_v[tid] = vv;
    }
    const float norm = sqrtf(block_sum(kk * kk, scratch));
    if (chan) {
      kk /= fmaxf(norm, kL2Eps);
      s_al[tid] = -kk;
      s_be[tid] = kk * aa;
      if (a.kk) a.kk[at] = kk;
      if (a.kmod) a.kmod[at] = kmod;
    }
    __syncthreads();
    const float y = state_step<Q>(st, part, s_v[i], s_r, s_d, s_km, s_al, s_be);
    if (part == 0) s_y[i] = y;
    __syncthreads();
    const float yv = chan ? s_y[tid] : 0.f;
    const float bonus = block_sum(rr * kmod * r_k, scratch);
    const float mean = block_sum(yv, scratch) / float(N);
    const float dv = chan ? yv - mean : 0.f;
    const float var = block_sum(dv * dv, scratch) / float(N);
    if (chan) {  // warps 0 .. N/32-1 entirely: quantize32 below is warp-uniform
      const float o = dv * rsqrtf(var + a.gn_eps) * lw + lb + bonus * vv;
      if (a.y) a.y[at] = yv;
      if (a.lnx) a.lnx[at] = o;
      a.xo[at] = o * gg;
      if (a.xo_q.q0) quantize32(a.xo_q, o * gg, int64_t(at), int64_t(at) / 32);
    }
  }
  store_state(S, st);
}

// Warp per (token, head): value-residual mix, kk, k_mod (prefill).
template <int N>
__global__ void __launch_bounds__(256) wkv_prep_kernel(const __grid_constant__ WkvArgs a) {
  constexpr int M = N / 32;  // channels per lane
  pdl_wait();
  pdl_trigger();
  const int h = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (h >= a.H) return;
  const int C = a.H * N;
  const size_t row = size_t(blockIdx.y) * C;
  float kk[M], ss = 0.f;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const int hc = h * N + lane + 32 * m;
    const size_t at = row + hc;
    const float kv = a.k[at], aa = a.a[at];
    float vv = a.v[at];
    if (a.first_layer) {
      a.v_first[at] = vv;
    } else {
      vv += a.nu[at] * (a.v_first[at] - vv);
      a.v[at] = vv;
    }
    kk[m] = kv * a.k_k[hc];
    ss += kk[m] * kk[m];
    a.kmod[at] = kv * (1.f + (aa - 1.f) * a.k_a[hc]);
  }
  const float inv = 1.f / fmaxf(sqrtf(warp_sum(ss)), kL2Eps);
#pragma unroll
  for (int m = 0; m < M; ++m) a.kk[row + h * N + lane + 32 * m] = kk[m] * inv;
}

// The recurrence alone: block per (sequence, head) of N threads; thread (g, part) keeps
// rows 4g .. 4g+3, columns [part*N/4, part*N/4 + N/4) of the state in registers, so each
// vector slice it reads from shared memory serves four rows (shared-memory bandwidth,
// not arithmetic, limits a step otherwise: one row per thread was as slow). Tokens are
// staged kChunk at a time, the next chunk loaded while the current one is computed.
template <int N>
__global__ void __launch_bounds__(N) wkv_scan_kernel(const __grid_constant__ WkvArgs a) {
  constexpr int Q = N / 4, kRows = 4;
  constexpr int kChunk = 8;
  __shared__ __align__(16) float s_r[kChunk][N], s_d[kChunk][N], s_km[kChunk][N], s_al[kChunk][N], s_be[kChunk][N],
      s_v[kChunk][N];
  const int h = blockIdx.x, b = blockIdx.y;
  const int tid = threadIdx.x, g = tid >> 2, part = tid & 3, c0 = part * Q;
  const int C = a.H * N;
  pdl_wait();
  pdl_trigger();
  const int start = a.batch.seq_start[b], end = a.batch.seq_start[b + 1];
  float* S = a.state + size_t(a.batch.seq_slot[b]) * a.state_stride + size_t(h) * N * N + size_t(kRows * g) * N + c0;
  float st[kRows][Q];
#pragma unroll
  for (int u = 0; u < kRows; ++u) load_state(S + size_t(u) * N, st[u]);
  auto f4 = [](const float* p) { return *reinterpret_cast<const float4*>(p); };
  // The next chunk's per-token values are requested while the current chunk is computed
  // (waiting for them chunk by chunk was ~40% of the kernel's time).
  float vr[kChunk], vd[kChunk], vk[kChunk], vkk[kChunk], va[kChunk], vv[kChunk];
  auto fetch = [&](int r0) {
#pragma unroll
    for (int t = 0; t < kChunk; ++t) {
      if (r0 + t < end) {
        const size_t at = size_t(r0 + t) * C + h * N + tid;
        vr[t] = a.r[at];
        vd[t] = a.decay[at];
        vk[t] = a.kmod[at];
        vkk[t] = a.kk[at];
        va[t] = a.a[at];
        vv[t] = a.v[at];
      }
    }
  };
  fetch(start);
  for (int r0 = start; r0 < end; r0 += kChunk) {
    const int n = min(kChunk, end - r0);
#pragma unroll
    for (int t = 0; t < kChunk; ++t) {
      if (t < n) {
        s_r[t][tid] = vr[t];
        s_d[t][tid] = vd[t];
        s_km[t][tid] = vk[t];
        s_al[t][tid] = -vkk[t];
        s_be[t][tid] = vkk[t] * va[t];
        s_v[t][tid] = vv[t];
      }
    }
    __syncthreads();
    if (r0 + kChunk < end) fetch(r0 + kChunk);
    for (int t = 0; t < n; ++t) {
      float sa[kRows] = {}, y[kRows] = {};
#pragma unroll
      for (int j = 0; j < Q; j += 4) {
        const float4 al = f4(&s_al[t][c0 + j]);
#pragma unroll
        for (int u = 0; u < kRows; ++u)
          sa[u] += al.x * st[u][j] + al.y * st[u][j + 1] + al.z * st[u][j + 2] + al.w * st[u][j + 3];
      }
#pragma unroll
      for (int u = 0; u < kRows; ++u) {
        sa[u] += __shfl_xor_sync(0xffffffffu, sa[u], 1);
        sa[u] += __shfl_xor_sync(0xffffffffu, sa[u], 2);
      }
      const float4 v4 = f4(&s_v[t][kRows * g]);
      const float vi[kRows] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
      for (int j = 0; j < Q; j += 4) {
        const float4 d = f4(&s_d[t][c0 + j]), k = f4(&s_km[t][c0 + j]), be = f4(&s_be[t][c0 + j]),
                     r = f4(&s_r[t][c0 + j]);
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          st[u][j] = fmaf(st[u][j], d.x, fmaf(vi[u], k.x, sa[u] * be.x));
          st[u][j + 1] = fmaf(st[u][j + 1], d.y, fmaf(vi[u], k.y, sa[u] * be.y));
          st[u][j + 2] = fmaf(st[u][j + 2], d.z, fmaf(vi[u], k.z, sa[u] * be.z));
          st[u][j + 3] = fmaf(st[u][j + 3], d.w, fmaf(vi[u], k.w, sa[u] * be.w));
          y[u] += st[u][j] * r.x + st[u][j + 1] * r.y + st[u][j + 2] * r.z + st[u][j + 3] * r.w;
        }
      }
#pragma unroll
      for (int u = 0; u < kRows; ++u) {
        y[u] += __shfl_xor_sync(0xffffffffu, y[u], 1);
        y[u] += __shfl_xor_sync(0xffffffffu, y[u], 2);
      }
      if (part == 0)
        *reinterpret_cast<float4*>(a.y + size_t(r0 + t) * C + h * N + kRows * g) = make_float4(y[0], y[1], y[2], y[3]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < kRows; ++u) store_state(S + size_t(u) * N, st[u]);
}

// Warp per (token, head): group norm, bonus, gate (prefill).
template <int N>
__global__ void __launch_bounds__(256) wkv_post_kernel(const __grid_constant__ WkvArgs a) {
  constexpr int M = N / 32;
  pdl_wait();
  pdl_trigger();
  const int h = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (h >= a.H) return;
  const int C = a.H * N;
  const size_t row = size_t(blockIdx.y) * C;
  float y[M], sum = 0.f, bonus = 0.f;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const int hc = h * N + lane + 32 * m;
    y[m] = a.y[row + hc];
    sum += y[m];
    bonus += a.r[row + hc] * a.kmod[row + hc] * a.r_k[hc];
  }
  const float mean = warp_sum(sum) / float(N);
  bonus = warp_sum(bonus);
  float q = 0.f;
#pragma unroll
  for (int m = 0; m < M; ++m) q += (y[m] - mean) * (y[m] - mean);
  const float rs = rsqrtf(warp_sum(q) / float(N) + a.gn_eps);
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const int hc = h * N + lane + 32 * m;
    const float o = (y[m] - mean) * rs * a.lnx_w[hc] + a.lnx_b[hc] + bonus * a.v[row + hc];
    if (a.lnx) a.lnx[row + hc] = o;
    a.xo[row + hc] = o * a.g[row + hc];
  }
}

template <int N>
void fused_n(const WkvArgs& a, Stream stream) {
  launch("wkv_fused", wkv_fused_kernel<N>, dim3(a.H, a.batch.B), dim3(4 * N), 0, stream, a);
}
template <int N>
void prefill_n(const WkvArgs& a, Stream stream) {
  const dim3 per_token((a.H + 7) / 8, a.batch.R);
  launch("wkv_prep", wkv_prep_kernel<N>, per_token, dim3(256), 0, stream, a);
  launch("wkv_scan", wkv_scan_kernel<N>, dim3(a.H, a.batch.B), dim3(N), 0, stream, a);
  launch("wkv_post", wkv_post_kernel<N>, per_token, dim3(256), 0, stream, a);
}

// Head size supported, and the state 16-byte aligned (the kernels move it as float4).
void check_args(const WkvArgs& a) {
  if (a.N != 32 && a.N != 64 && a.N != 128)
    fail(ErrorCode::unsupported, "cuda wkv: head size " + std::to_string(a.N) + " (supported: 32, 64, 128)");
  if ((reinterpret_cast<uintptr_t>(a.state) & 15) != 0 || a.state_stride % 4 != 0)
    fail(ErrorCode::argument, "cuda wkv: state not 16-byte aligned");
}

}  // namespace

void wkv_fused(const WkvArgs& a, Stream stream) {
  check_args(a);
  if (a.N == 32)
    fused_n<32>(a, stream);
  else if (a.N == 64)
    fused_n<64>(a, stream);
  else
    fused_n<128>(a, stream);
}

void wkv_prefill(const WkvArgs& a, Stream stream) {
  check_args(a);
  if (!a.kk || !a.kmod || !a.y) fail(ErrorCode::argument, "cuda wkv_prefill: kk, kmod and y scratch are required");
  if (a.N == 32)
    prefill_n<32>(a, stream);
  else if (a.N == 64)
    prefill_n<64>(a, stream);
  else
    prefill_n<128>(a, stream);
}

}  // namespace rwkv::cuda
