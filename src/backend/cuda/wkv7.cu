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
