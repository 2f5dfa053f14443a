// The time-mix core (spec §2.2 steps 6, 9-13 and §2.3) after the projections.
//
// wkv_fused: one block per (sequence, head), 4N threads; thread (i, part) keeps the state
// columns [part*N/4, part*N/4 + N/4) of value row i in registers. Per token: channel
// scalars (value-residual mix, kk, k_mod) by the first N threads, the state update and
// read-out by all, then group norm + bonus + gate. For decode.
//
// wkv_prefill: the per-token work is split out of the recurrence: wkv_prep (warp per
// (token, head)), wkv_scan (the sequential recurrence alone, a head's rows split over
// several blocks, tokens staged in shared memory in chunks), wkv_post (warp per (token, head)).
#include <initializer_list>

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

// Group norm statistics of a head's 32 M values, M a lane: mean and 1 / sqrt(variance + eps),
// every lane gets both. One round (warp_merge_equal): a sum, then the squared deviations
// from its mean, would be two dependent warp reductions on the decode chain.
template <int M>
__device__ __forceinline__ float2 head_norm_stats(const float (&y)[M], float eps) {
  float sum = 0.f;
#pragma unroll
  for (int m = 0; m < M; ++m) sum += y[m];
  const float mean = sum * (1.f / float(M));
  float m2 = 0.f;
#pragma unroll
  for (int m = 0; m < M; ++m) m2 = fmaf(y[m] - mean, y[m] - mean, m2);
  const float2 st = warp_merge_equal(mean, m2, float(M));
  return make_float2(st.x, rsqrtf(st.y * (1.f / float(32 * M)) + eps));
}

// Named barrier 1 over the whole block: warp 0 waits there for the other warps' parts of y
// (bar.sync), the others only signal (bar.arrive) and go on to store their state rows.
template <int kThreads>
__device__ __forceinline__ void y_ready_wait() {
  asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory");
}
template <int kThreads>
__device__ __forceinline__ void y_ready_signal() {
  asm volatile("bar.arrive 1, %0;" ::"n"(kThreads) : "memory");
}
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(uint32_t(__cvta_generic_to_shared(smem))), "l"(gmem));
}

// At least four blocks per SM (two for N = 128): with many sequences the kernel moves every
// state through the SM, and three resident blocks (76 registers) left it latency-bound.
// Warp 0 does a token's channel work, M = N/32 channels h*N + lane + 32m per lane, so every
// reduction over the head is a warp sum: a token costs one block barrier and one named
// barrier (nine with block-wide reductions).
template <int N>
__global__ void __launch_bounds__(4 * N, N == 128 ? 2 : 4) wkv_fused_kernel(const __grid_constant__ WkvArgs a) {
  constexpr int Q = N / 4, M = N / 32, kThreads = 4 * N;
  // The token's vectors as the state update reads them (s_v: v after the value-residual mix).
  __shared__ __align__(16) float s_r[N], s_d[N], s_km[N], s_al[N], s_be[N], s_v[N], s_y[N];
  // Warp 0's copies: raw k, v_first, a, nu and the gate of the token, the head's per-channel
  // weights.
  __shared__ float s_k[N], s_vf[N], s_a[N], s_nu[N], s_g[N], s_kk[N], s_ka[N], s_rk[N], s_lw[N], s_lb[N];
  const int h = blockIdx.x, b = blockIdx.y;
  const int tid = threadIdx.x, i = tid >> 2, part = tid & 3, lane = tid & 31;
  const bool lead = tid < 32;  // warp 0
  const int C = a.H * N, c0 = h * N + lane;
  // r, k, v and v_first of a token (written two or more kernels back) into shared memory by
  // cp.async: in flight without holding registers. The first token's go before the PDL wait.
  const auto copy_early = [&](size_t row) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int c = lane + 32 * m;
      cp_async4(s_r + c, a.r + row + c0 + 32 * m);
      cp_async4(s_k + c, a.k + row + c0 + 32 * m);
      cp_async4(s_v + c, a.v + row + c0 + 32 * m);
      if (!a.first_layer) cp_async4(s_vf + c, a.v_first + row + c0 + 32 * m);
    }
    asm volatile("cp.async.commit_group;");
  };
  // a, decay, g and nu (written by the kernel right before this one), after the wait.
  const auto copy_late = [&](size_t row) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int c = lane + 32 * m;
      cp_async4(s_a + c, a.a + row + c0 + 32 * m);
      cp_async4(s_d + c, a.decay + row + c0 + 32 * m);
      cp_async4(s_g + c, a.g + row + c0 + 32 * m);
      if (!a.first_layer) cp_async4(s_nu + c, a.nu + row + c0 + 32 * m);
    }
    asm volatile("cp.async.commit_group;");
  };
  // So are the per-channel weights, the batch layout (uploaded before the step) and this
  // layer's WKV state (written by no kernel of this step before this one).
  const int start = a.batch.seq_start[b], end = a.batch.seq_start[b + 1];
  if (lead) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int c = lane + 32 * m;
      cp_async4(s_kk + c, a.k_k + c0 + 32 * m);
      cp_async4(s_ka + c, a.k_a + c0 + 32 * m);
      cp_async4(s_rk + c, a.r_k + c0 + 32 * m);
      cp_async4(s_lw + c, a.lnx_w + c0 + 32 * m);
      cp_async4(s_lb + c, a.lnx_b + c0 + 32 * m);
    }
    if (start < end)
      copy_early(size_t(start) * C);
    else
      asm volatile("cp.async.wait_all;" ::: "memory");  // nothing to do: leave no copy in flight
  }
  float* S = a.state + size_t(a.batch.seq_slot[b]) * a.state_stride + size_t(h) * N * N + size_t(i) * N + part * Q;
  float st[Q];
  load_state(S, st);
  pdl_wait();
  pdl_trigger();
  for (int r = start; r < end; ++r) {
    const size_t row = size_t(r) * C;
    if (lead) {
      if (r > start) copy_early(row);
      copy_late(row);
      asm volatile("cp.async.wait_all;" ::: "memory");  // each lane reads only what it copied
      float ss = 0.f;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const int c = lane + 32 * m;
        const size_t at = row + c0 + 32 * m;
        float vv = s_v[c];
        if (a.first_layer) {
          a.v_first[at] = vv;
        } else {
          vv += s_nu[c] * (s_vf[c] - vv);
          a.v[at] = vv;
          s_v[c] = vv;
        }
        const float kv = s_k[c];
        const float kmod = kv * (1.f + (s_a[c] - 1.f) * s_ka[c]);
        ss += (kv * s_kk[c]) * (kv * s_kk[c]);
        s_km[c] = kmod;
        if (a.kmod) a.kmod[at] = kmod;
      }
      const float inv = rsqrtf(fmaxf(warp_sum(ss), kL2Eps * kL2Eps));  // 1 / max(|kk|, eps)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const int c = lane + 32 * m;
        const float kk = s_k[c] * s_kk[c] * inv;
        s_al[c] = -kk;
        s_be[c] = kk * s_a[c];
        if (a.kk) a.kk[row + c0 + 32 * m] = kk;
      }
    }
    __syncthreads();
    const float y = state_step<Q>(st, part, s_v[i], s_r, s_d, s_km, s_al, s_be);
    if (part == 0) s_y[i] = y;
    if (!lead) {
      y_ready_signal<kThreads>();
      continue;
    }
    y_ready_wait<kThreads>();
    // Group norm over the head's N values of y, bonus, gate (spec §2.2 steps 12-13).
    float yv[M], bonus = 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int c = lane + 32 * m;
      yv[m] = s_y[c];
      bonus += s_r[c] * s_km[c] * s_rk[c];
    }
    const float2 gn = head_norm_stats(yv, a.gn_eps);
    const float mean = gn.x, rs = gn.y;
    bonus = warp_sum(bonus);
    float xo[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int c = lane + 32 * m;
      const size_t at = row + c0 + 32 * m;
      const float o = (yv[m] - mean) * rs * s_lw[c] + s_lb[c] + bonus * s_v[c];
      if (a.y) a.y[at] = yv[m];
      if (a.lnx) a.lnx[at] = o;
      xo[m] = o * s_g[c];
      a.xo[at] = xo[m];
      if (a.xo16) a.xo16[at] = __half_as_ushort(__float2half_rn(xo[m]));
    }
    if (a.xo_q.q0) {  // the head's M blocks of 32: all reductions first, so that they overlap
      Quant32 q[M];
#pragma unroll
      for (int m = 0; m < M; ++m) q[m] = quant32(xo[m]);
#pragma unroll
      for (int m = 0; m < M; ++m) store_quant32(a.xo_q, q[m], int64_t(row), c0 + 32 * m);
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
  const float inv = rsqrtf(fmaxf(warp_sum(ss), kL2Eps * kL2Eps));  // 1 / max(|kk|, eps)
#pragma unroll
  for (int m = 0; m < M; ++m) a.kk[row + h * N + lane + 32 * m] = kk[m] * inv;
}

__device__ __forceinline__ void cp_async16(float* smem, const float* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(uint32_t(__cvta_generic_to_shared(smem))), "l"(gmem));
}

// Shared-memory layout of the scan's token vectors: a vector of N floats is stored as L
// parts of N/L floats, each followed by 4 floats of padding, so that the L lanes of a state
// row (each reading its part with 16-byte loads) hit different banks.
template <int N, int L, int RB>
struct ScanStage {
  static constexpr int kChunk = N >= 128 ? 8 : 16;  // tokens staged at a time
  static constexpr int kRow = N + 4 * L;            // floats per padded vector
  static constexpr int kVectors = 5;                // r, decay, k_mod, kk -> -kk, a -> kk a
  static constexpr int kFloats = kChunk * (kVectors * kRow + RB);
  static __device__ int at(int c) { return c + (c / (N / L)) * 4; }
};

// The recurrence alone, for prefill: block per (sequence, head, slice of RB value rows) of
// RB L threads; thread (i, part) keeps row i's columns [part*N/L, part*N/L + N/L) in
// registers (state_step). Rows are independent given the token's vectors, so a head is
// split over N/RB blocks. The scan is bound by each warp's instruction latency (one warp
// per scheduler, each instruction waiting for the one before), so the work of a token is
// spread thin: L = 8 lanes per row, ~80 instructions per warp and token (NOTES.md run 31).
// The token vectors are copied into shared memory kChunk tokens at a time with cp.async,
// double-buffered, the next chunk's copies in flight while the current one is computed.
template <int N, int RB, int L>
__global__ void __launch_bounds__(RB* L) wkv_scan_kernel(const __grid_constant__ WkvArgs a) {
  using St = ScanStage<N, L, RB>;
  constexpr int Q = N / L, kThreads = RB * L, kChunk = St::kChunk, kRow = St::kRow;
  constexpr int kPerToken = St::kVectors * (N / 4) + RB / 4;  // 16-byte copies per token
  constexpr int kCopies = (kPerToken + kThreads - 1) / kThreads;
  static_assert(kThreads % N == 0, "the alpha/beta pass takes whole columns per thread");
  extern __shared__ __align__(16) float smem[];
  const int h = blockIdx.x / (N / RB), row0 = (blockIdx.x % (N / RB)) * RB, b = blockIdx.y;
  const int tid = threadIdx.x, i = tid / L, part = tid % L, pad = part * 4;
  const int C = a.H * N;
  // The batch layout and this layer's state (written by no kernel of this step before this
  // one) are read before the PDL wait.
  const int start = a.batch.seq_start[b], end = a.batch.seq_start[b + 1];
  float* S =
      a.state + size_t(a.batch.seq_slot[b]) * a.state_stride + size_t(h) * N * N + size_t(row0 + i) * N + part * Q;
  float st[Q];
  load_state(S, st);
  // This thread's 16-byte copies, the same for every token: source (token 0), destination
  // (token 0 of a stage) and the destination's stride per token.
  const float* src[kCopies];
  int dst[kCopies], dst_step[kCopies];
#pragma unroll
  for (int m = 0; m < kCopies; ++m) {
    const int k = tid + m * kThreads;
    src[m] = nullptr;
    dst[m] = dst_step[m] = 0;
    if (k < St::kVectors * (N / 4)) {
      const int which = k / (N / 4), c = (k % (N / 4)) * 4;
      src[m] = (which == 0 ? a.r : which == 1 ? a.decay : which == 2 ? a.kmod : which == 3 ? a.kk : a.a) + h * N + c;
      dst[m] = which * kChunk * kRow + St::at(c);
      dst_step[m] = kRow;
    } else if (k < kPerToken) {
      const int c = (k - St::kVectors * (N / 4)) * 4;
      src[m] = a.v + h * N + row0 + c;
      dst[m] = St::kVectors * kChunk * kRow + c;
      dst_step[m] = RB;
    }
  }
  pdl_wait();
  pdl_trigger();
  auto issue = [&](float* stage, int r0, int n) {
    for (int t = 0; t < n; ++t) {
#pragma unroll
      for (int m = 0; m < kCopies; ++m)
        if (src[m]) cp_async16(stage + dst[m] + t * dst_step[m], src[m] + size_t(r0 + t) * C);
    }
    asm volatile("cp.async.commit_group;");
  };
  // y of the chunk before: sums the lanes' parts in ys (written before the last barrier).
  float* ys = smem + 2 * St::kFloats;  // [kChunk][RB][L]
  auto write_y = [&](int r0, int n) {
    for (int e = tid; e < n * RB; e += kThreads) {
      const float4* p = reinterpret_cast<const float4*>(ys + e * L);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < L / 4; ++j) sum += (p[j].x + p[j].y) + (p[j].z + p[j].w);
      a.y[size_t(r0 + e / RB) * C + h * N + row0 + e % RB] = sum;
    }
  };
  if (start < end) issue(smem, start, min(kChunk, end - start));
  const int col = St::at(tid % N);
  int cur = 0, last = start, last_n = 0;
  for (int r0 = start; r0 < end; r0 += kChunk, cur ^= 1) {
    float* s = smem + cur * St::kFloats;
    const int n = min(kChunk, end - r0);
    asm volatile("cp.async.wait_all;" ::: "memory");
    // Every thread's copies of this chunk have landed, and the last chunk's parts of y are
    // in ys.
    __syncthreads();
    write_y(last, last_n);
    for (int t = tid / N; t < n; t += kThreads / N) {  // kk -> alpha = -kk, a -> beta = kk a
      float* kk = s + (3 * kChunk + t) * kRow + col;
      float* aa = s + (4 * kChunk + t) * kRow + col;
      *aa *= *kk;
      *kk = -*kk;
    }
    __syncthreads();
    // The other stage was last read in the previous chunk, and ys summed, before the
    // barriers above.
    if (r0 + kChunk < end) issue(smem + (cur ^ 1) * St::kFloats, r0 + kChunk, min(kChunk, end - r0 - kChunk));
    // Token by token, the next token's columns loaded while this one is computed (two
    // register sets). Each lane's part of y goes to ys; the parts are summed after the chunk.
    const float* v = s + St::kVectors * kChunk * kRow + i;
    const float* cols = s + part * Q + pad;
    auto load = [&](TokenCols<Q>& c, int t) {
      const float* p = cols + t * kRow;
      constexpr int kVec = kChunk * kRow;
      c.load(SharedCols{p, p + kVec, p + 2 * kVec, p + 3 * kVec, p + 4 * kVec});
    };
    TokenCols<Q> ca, cb;
    load(ca, 0);
    for (int t = 0; t < n; t += 2) {
      if (t + 1 < n) load(cb, t + 1);
      ys[(t * RB + i) * L + part] = state_step_part<Q, L>(st, v[t * RB], ca);
      if (t + 1 == n) break;
      if (t + 2 < n) load(ca, t + 2);
      ys[((t + 1) * RB + i) * L + part] = state_step_part<Q, L>(st, v[(t + 1) * RB], cb);
    }
    last = r0;
    last_n = n;
  }
  __syncthreads();
  write_y(last, last_n);
  store_state(S, st);
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
  float y[M], bonus = 0.f;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const int hc = h * N + lane + 32 * m;
    y[m] = a.y[row + hc];
    bonus += a.r[row + hc] * a.kmod[row + hc] * a.r_k[hc];
  }
  const float2 gn = head_norm_stats(y, a.gn_eps);
  const float mean = gn.x, rs = gn.y;
  bonus = warp_sum(bonus);
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
template <int N, int RB, int L>
void scan_rows(const WkvArgs& a, Stream stream) {
  const size_t smem = (2 * ScanStage<N, L, RB>::kFloats + ScanStage<N, L, RB>::kChunk * RB * L) * sizeof(float);
  allow_smem(wkv_scan_kernel<N, RB, L>, smem);
  launch("wkv_scan", wkv_scan_kernel<N, RB, L>, dim3(a.H * (N / RB), a.batch.B), dim3(RB * L), smem, stream, a);
}
// 32 value rows per block; 16 where that would leave most SMs idle (one sequence of a
// model with 12 heads).
template <int N>
void scan_n(const WkvArgs& a, Stream stream) {
  constexpr int kLanes = 8;  // 4 and 16 were slower (run 31)
  if (a.H * a.batch.B * (N / 32) < 100)
    scan_rows<N, 16, kLanes>(a, stream);
  else
    scan_rows<N, 32, kLanes>(a, stream);
}
template <int N>
void prefill_n(const WkvArgs& a, Stream stream) {
  const dim3 per_token((a.H + 7) / 8, a.batch.R);
  launch("wkv_prep", wkv_prep_kernel<N>, per_token, dim3(256), 0, stream, a);
  scan_n<N>(a, stream);
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
  // The scan copies the token vectors 16 bytes at a time.
  for (const float* p : std::initializer_list<const float*>{a.r, a.decay, a.kmod, a.kk, a.a, a.v})
    if ((reinterpret_cast<uintptr_t>(p) & 15) != 0)
      fail(ErrorCode::argument, "cuda wkv_prefill: inputs not 16-byte aligned");
  if (a.N == 32)
    prefill_n<32>(a, stream);
  else if (a.N == 64)
    prefill_n<64>(a, stream);
  else
    prefill_n<128>(a, stream);
}

}  // namespace rwkv::cuda
