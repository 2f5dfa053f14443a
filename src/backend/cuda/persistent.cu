// The persistent one-sequence decode kernel (the design is in persistent.h). Block layout:
// warps 0-7 consume tiles, warp 8 produces them (lane 0 issues the copies). Shared
// memory, in order: the ring of tile slots, the staged input of the current job, the
// LayerNorm of h and the token-shift vector [2 x C], the current job, the tiles' metadata,
// the claim counter, reduction scratch, WKV vectors, and the ring's mbarriers (full: the
// tile arrived; empty: its warp is done with it).
#include "backend/cuda/launch.cuh"
#include "backend/cuda/persistent.h"
#include "backend/cuda/quant_dev.cuh"
#include "backend/cuda/quantx.cuh"
#include "backend/cuda/wkv_step.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kConsumerWarps = 8, kConsumers = 32 * kConsumerWarps, kThreads = kConsumers + 32;
constexpr int kHead = 64;  // head size the WKV stage is written for

struct SmemLayout {
  size_t act, ln, job, meta, claim, red, wkv, bars, total;
};
__host__ __device__ inline size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
__host__ __device__ inline SmemLayout smem_layout(const PersistentArgs& a) {
  SmemLayout s;
  s.act = size_t(a.slots) * size_t(a.slot_bytes);
  s.ln = s.act + round_up(size_t(a.act_bytes), 16);
  s.job = s.ln + 2 * size_t(a.C) * 4;
  s.meta = s.job + round_up(sizeof(PJob), 16);
  s.claim = s.meta + 16 * size_t(a.slots);
  s.red = s.claim + 16;
  s.wkv = s.red + 32 * 4;
  s.bars = round_up(s.wkv + 7 * kHead * 4, 8);
  s.total = s.bars + 2 * size_t(a.slots) * 8;
  return s;
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900

constexpr int kMaxStageCols = 16384;  // widest staged input (persistent_plan.cpp checks)

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// One arrival that also announces `bytes` of asynchronous copies to come.
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
// Global -> shared bulk copy (16-byte aligned, size a multiple of 16), completing on `bar`.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}
// The consumer warps only (the producer warp never joins).
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory"); }
__device__ __forceinline__ float consumer_sum(float v, float* red) {
  v = warp_sum(v);
  consumer_sync();  // red may still be read by a previous reduction
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  consumer_sync();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kConsumerWarps; ++w) total += red[w];
  return total;
}
__device__ __forceinline__ uint32_t ld_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// Waits until every block has finished stage `flag`; afterwards the consumers read what
// other blocks wrote (through L2: ld.global.cg, never a stale L1 line).
__device__ __forceinline__ void wait_stage(const uint32_t* flag, uint32_t blocks) {
  if (threadIdx.x == 0) {
    while (ld_acquire(flag) < blocks) {
    }
    __threadfence();
  }
  consumer_sync();
}
__device__ __forceinline__ void signal_stage(uint32_t* flag) {
  consumer_sync();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(flag, 1u);
  }
}

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void trace_point(const PersistentArgs& a, int g, int point, uint64_t v = 0) {
  if (a.trace && threadIdx.x == 0)
    a.trace[(size_t(blockIdx.x) * a.stages + g) * 5 + point] = point < 4 ? global_ns() : v;
}

// ln[c] = LayerNorm(h)[c], ln[C + c] = the token-shift vector (the previous token's).
__device__ __forceinline__ void prep_layer_norm(const PersistentArgs& a, const float* w, const float* b,
                                                const float* shift, float* ln, float* red) {
  constexpr int kPer = 4096 / kConsumers;  // C <= 4096
  const int C = a.C;
  float v[kPer], p[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int c = threadIdx.x + k * kConsumers;
    v[k] = c < C ? __ldcg(a.h + c) : 0.f;
    p[k] = c < C ? __ldcg(shift + c) : 0.f;
  }
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) s += v[k];
  const float mean = consumer_sum(s, red) / float(C);
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int c = threadIdx.x + k * kConsumers;
    const float d = c < C ? v[k] - mean : 0.f;
    q += d * d;
  }
  const float rstd = rsqrtf(consumer_sum(q, red) / float(C) + a.ln_eps);
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int c = threadIdx.x + k * kConsumers;
    if (c < C) {
      ln[c] = (v[k] - mean) * rstd * __ldg(w + c) + __ldg(b + c);
      ln[C + c] = p[k];
    }
  }
  consumer_sync();
}

// The job's input x into shared memory: fp32 for float weights, else two int8 terms per
// block of 32 (XQ, as the matvec kernels take it). Thread i takes float4 groups i, i + 256,
// ...; the 8 groups of a block of 32 are 8 neighbouring lanes.
__device__ __forceinline__ void stage_input(const PJob& job, const float* ln, int C, bool quant, uint8_t* act,
                                            XQ (&xq)[2]) {
  const int cols = int(job.W.cols), n4 = cols / 4;
  // All global loads of the thread first (one round trip), then the values.
  constexpr int kRounds = kMaxStageCols / 4 / kConsumers;
  float4 raw[kRounds];
  const bool vec = job.in == PIn::vec;
  const float* src = vec ? job.x : job.mix_w;
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
    const int idx = r * kConsumers + int(threadIdx.x);
    raw[r] = idx < n4 ? (vec ? __ldcg(reinterpret_cast<const float4*>(src) + idx)
                             : __ldg(reinterpret_cast<const float4*>(src) + idx))
                      : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  auto value4 = [&](int idx, float4 x) {
    if (vec) {
      x.x = apply_in(job.in_op, x.x);
      x.y = apply_in(job.in_op, x.y);
      x.z = apply_in(job.in_op, x.z);
      x.w = apply_in(job.in_op, x.w);
      return x;
    }
    const float4 l = *reinterpret_cast<const float4*>(ln + 4 * idx),
                 p = *reinterpret_cast<const float4*>(ln + C + 4 * idx);
    return make_float4(l.x + (p.x - l.x) * x.x, l.y + (p.y - l.y) * x.y, l.z + (p.z - l.z) * x.z,
                       l.w + (p.w - l.w) * x.w);
  };
  if (!quant) {
    float4* xs = reinterpret_cast<float4*>(act);
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      const int idx = r * kConsumers + int(threadIdx.x);
      if (idx < n4) xs[idx] = value4(idx, raw[r]);
    }
    return;
  }
  const int nb = cols / 32;
  int8_t* q0 = reinterpret_cast<int8_t*>(act);
  int8_t* q1 = q0 + cols;
  float* d0 = reinterpret_cast<float*>(q1 + cols);
  float* d1 = d0 + nb;
  int* s0 = reinterpret_cast<int*>(d1 + nb);
  int* s1 = s0 + nb;
#pragma unroll
  for (int round = 0; round < kRounds; ++round) {  // n4 is a multiple of 8: groups of 8 lanes agree
    if (round * kConsumers >= n4) break;
    const int idx = round * kConsumers + int(threadIdx.x);
    const bool ok = idx < n4;
    const float4 v = ok ? value4(idx, raw[round]) : make_float4(0.f, 0.f, 0.f, 0.f);
    quantize_group8(v, ok, q0, q1, d0, d1, s0, s1, idx, idx / 8);
  }
  xq[0] = XQ{q0, d0, s0, cols, nb};
  xq[1] = XQ{q1, d1, s1, cols, nb};
}

// Warp 0 copies job `id` into shared memory (one round trip: a word per lane and pass).
__device__ __forceinline__ void fetch_job(const PersistentArgs& a, int id, PJob* sjob) {
  static_assert(sizeof(PJob) % 4 == 0, "PJob is copied as words");
  constexpr int kWords = int(sizeof(PJob) / 4);
  if (threadIdx.x < 32) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(a.jobs + id);
    uint32_t* dst = reinterpret_cast<uint32_t*>(sjob);
    uint32_t w[(kWords + 31) / 32];
#pragma unroll
    for (int q = 0; q < (kWords + 31) / 32; ++q) {
      const int i = int(threadIdx.x) + 32 * q;
      w[q] = i < kWords ? __ldg(src + i) : 0u;
    }
#pragma unroll
    for (int q = 0; q < (kWords + 31) / 32; ++q) {
      const int i = int(threadIdx.x) + 32 * q;
      if (i < kWords) dst[i] = w[q];
    }
  }
}

// What a row's epilogue reads from global memory, requested before its dot product: the
// bias (decay / sigmoid) or the residual h (add_shift).
__device__ __forceinline__ float row_prefetch(const PJob& job, int row) {
  switch (job.out) {
    case POut::decay:
    case POut::sigmoid:
      return __ldg(job.bias + row);
    case POut::add_shift:
      return __ldcg(job.y + row);
    default:
      return 0.f;
  }
}

__device__ __forceinline__ void store_row(const PJob& job, const float* ln, float* state, int row, float v, float pre) {
  switch (job.out) {
    case POut::store:
      job.y[row] = v;
      break;
    case POut::decay:
      job.y[row] = decay_from_logit(pre + v);
      break;
    case POut::sigmoid:
      job.y[row] = sigmoidf_(pre + v);
      break;
    case POut::relu_sq: {
      const float r = fmaxf(v, 0.f);
      job.y[row] = r * r;
      break;
    }
    case POut::add_shift:  // this block alone owns row `row` of h in this stage
      state[job.shift_off + row] = ln[row];
      job.y[row] = pre + v;
      break;
  }
}

// R rows of a tile (rows[r] of the tile; repeats allowed, their sums are dropped), by one
// warp: lane i takes items i, i + 32, ...; each round requests the R rows' items before
// any product, and the staged input of an item serves all R rows.
template <TensorType TY, int R>
__device__ __forceinline__ void rows_dot(const PackedView& V, const int (&rows)[R], const XQ (&xq)[2], const float* xf,
                                         float (&acc)[R]) {
  using It = Item<TY>;
  const int items = int(V.items);
  for (int it = threadIdx.x & 31; it < items; it += 32) {
    It w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) w[r].template load<true>(V, rows[r], it);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if constexpr (It::kQuant) {
        acc[r] += w[r].dot(xq[0], 0, it) + w[r].dot(xq[1], 0, it);
      } else {
        acc[r] += w[r].dot_f(xf, V.cols, it);
      }
    }
  }
}

// Rows [g, g + n) of the tile (n <= R) through rows_dot, then their epilogues.
template <TensorType TY, int R>
__device__ __forceinline__ void row_group(const PJob& job, const PackedView& V, int row0, int g, int n,
                                          const XQ (&xq)[2], const float* xf, const float* ln, float* state) {
  const int lane = threadIdx.x & 31;
  const float pre = lane < n ? row_prefetch(job, row0 + g + lane) : 0.f;
  int rows[R];
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    rows[r] = g + min(r, n - 1);
    acc[r] = 0.f;
  }
  rows_dot<TY, R>(V, rows, xq, xf, acc);
  float mine = 0.f;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = warp_sum(acc[r]);
    if (lane == r) mine = v;
  }
  if (lane < n) store_row(job, ln, state, row0 + g + lane, mine, pre);
}

// The rows of a tile in shared memory (rows [row0, row0 + nr) of the job's matrix), by one
// warp, four at a time (then two, then one).
template <TensorType TY>
__device__ __forceinline__ void tile_rows(const PJob& job, const uint8_t* slot, int row0, int nr, const XQ (&xq)[2],
                                          const float* xf, const float* ln, float* state) {
  PackedView V;
  V.type = TY;
  V.rows = nr;
  V.cols = job.W.cols;
  V.items = job.W.items;
  uint32_t off = 0;
#pragma unroll
  for (int p = 0; p < kMaxPlanes; ++p) {
    V.plane[p] = slot + off;
    V.stride[p] = job.W.stride[p];
    off += uint32_t(round_up(size_t(nr) * job.W.stride[p], 16));
  }
  int g = 0;
  for (; g + 4 <= nr; g += 4) row_group<TY, 4>(job, V, row0, g, 4, xq, xf, ln, state);
  if (g + 2 <= nr) {
    row_group<TY, 2>(job, V, row0, g, 2, xq, xf, ln, state);
    g += 2;
  }
  if (g < nr) row_group<TY, 1>(job, V, row0, g, 1, xq, xf, ln, state);
}

__device__ __forceinline__ void tile_rows_any(const PJob& job, const uint8_t* slot, int row0, int nr, const XQ (&xq)[2],
                                              const float* xf, const float* ln, float* state) {
#define RWKV_TILE_ROWS(T) tile_rows<T>(job, slot, row0, nr, xq, xf, ln, state)
  switch (job.W.type) { RWKV_CUDA_TYPE_CASES(RWKV_TILE_ROWS) default : break; }
#undef RWKV_TILE_ROWS
}

// One token of head `head` (N = 64, thread (i, part) = state row i, columns part*16 ..),
// as wkv_fused_kernel in wkv7.cu; the state slice arrived in the ring slot `st_in`.
__device__ __forceinline__ void wkv_head(const PersistentArgs& a, const PLayer& L, float* state, int head,
                                         const float* st_in, float* sw, float* red) {
  constexpr int N = kHead, Q = N / 4;
  float *s_r = sw, *s_d = sw + N, *s_km = sw + 2 * N, *s_al = sw + 3 * N, *s_be = sw + 4 * N, *s_v = sw + 5 * N,
        *s_y = sw + 6 * N;
  const int tid = threadIdx.x, i = tid >> 2, part = tid & 3;
  const int hc = head * N + tid;
  const bool chan = tid < N, row = tid < 4 * N;  // threads past 4N only join the reductions
  float st[Q] = {};
  if (row) {
#pragma unroll
    for (int j = 0; j < Q; j += 4) {
      const float4 f = *reinterpret_cast<const float4*>(st_in + i * N + part * Q + j);
      st[j] = f.x;
      st[j + 1] = f.y;
      st[j + 2] = f.z;
      st[j + 3] = f.w;
    }
  }
  float rr = 0.f, kv = 0.f, vv = 0.f, aa = 0.f, dd = 0.f, gg = 0.f, k_k = 0.f, k_a = 0.f, r_k = 0.f;
  if (chan) {
    rr = __ldcg(a.r + hc);
    kv = __ldcg(a.k + hc);
    vv = __ldcg(a.v + hc);
    aa = __ldcg(a.a + hc);
    dd = __ldcg(a.decay + hc);
    gg = __ldcg(a.g + hc);
    k_k = __ldg(L.k_k + hc);
    k_a = __ldg(L.k_a + hc);
    r_k = __ldg(L.r_k + hc);
    if (L.first) {
      a.v_first[hc] = vv;
    } else {
      const float nu = __ldcg(a.nu + hc), vf = __ldcg(a.v_first + hc);
      vv += nu * (vf - vv);
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
  const float norm = sqrtf(consumer_sum(kk * kk, red));
  if (chan) {
    kk /= fmaxf(norm, kL2Eps);
    s_al[tid] = -kk;
    s_be[tid] = kk * aa;
  }
  consumer_sync();
  const int c0 = part * Q;
  const float y = state_step<Q>(st, part, row ? s_v[i] : 0.f, s_r, s_d, s_km, s_al, s_be);
  if (row) {
    if (part == 0) s_y[i] = y;
    float* S = state + size_t(head) * N * N + size_t(i) * N + c0;
#pragma unroll
    for (int j = 0; j < Q; j += 4)
      *reinterpret_cast<float4*>(S + j) = make_float4(st[j], st[j + 1], st[j + 2], st[j + 3]);
  }
  consumer_sync();
  const float yv = chan ? s_y[tid] : 0.f;
  const float bonus = consumer_sum(rr * kmod * r_k, red);
  const float mean = consumer_sum(yv, red) / float(N);
  const float dv = chan ? yv - mean : 0.f;
  const float var = consumer_sum(dv * dv, red) / float(N);
  if (chan) {
    const float o = dv * rsqrtf(var + a.gn_eps) * __ldg(L.lnx_w + hc) + __ldg(L.lnx_b + hc) + bonus * vv;
    a.xo[hc] = o * gg;
  }
}

#endif

__global__ void __launch_bounds__(kThreads, 1) persistent_kernel(const __grid_constant__ PersistentArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint8_t smem[];
  const SmemLayout lay = smem_layout(a);
  uint8_t* ring = smem;
  uint8_t* act = smem + lay.act;
  float* ln = reinterpret_cast<float*>(smem + lay.ln);
  PJob* sjob = reinterpret_cast<PJob*>(smem + lay.job);
  int4* meta = reinterpret_cast<int4*>(smem + lay.meta);
  int* claim = reinterpret_cast<int*>(smem + lay.claim);
  float* red = reinterpret_cast<float*>(smem + lay.red);
  float* sw = reinterpret_cast<float*>(smem + lay.wkv);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + lay.bars);
  uint64_t* empty = full + a.slots;
  const int G = a.stages, b = blockIdx.x;
  if (threadIdx.x == 0) {
    for (int s = 0; s < a.slots; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 1);  // the tile's warp (warp 0 for a WKV tile)
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  float* state = a.states + size_t(a.seq_slot[0]) * size_t(a.state_floats);
  const int32_t* sb = a.stage_begin + size_t(b) * (G + 1);

  if (threadIdx.x >= kConsumers) {  // producer: the last warp
    // Descriptors come 32 at a time, one per lane, the next batch requested before the
    // current one is issued; lane 0 issues the copies, waiting for free slots.
    const int lane = threadIdx.x & 31;
    const int t0 = sb[0], t1 = sb[G];
    const uint8_t* state_bytes = reinterpret_cast<const uint8_t*>(state);
    auto load = [&](int j) {
      PTile t{};
      if (j < t1) t = a.tiles[j];
      return t;
    };
    PTile cur = load(t0 + lane);
    for (int base = t0; base < t1; base += 32) {
      const PTile nxt = load(base + 32 + lane);
      const int n = min(32, t1 - base);
      for (int i = 0; i < n; ++i) {
        PTile t;
        const uint32_t* cw = reinterpret_cast<const uint32_t*>(&cur);
        uint32_t* tw = reinterpret_cast<uint32_t*>(&t);
#pragma unroll
        for (int w = 0; w < int(sizeof(PTile) / 4); ++w) tw[w] = __shfl_sync(0xffffffffu, cw[w], i);
        if (lane == 0) {
          const int k = base + i - t0, s = k % a.slots;
          if (k >= a.slots) mbar_wait(&empty[s], uint32_t((k / a.slots) - 1) & 1u);
          meta[s] = make_int4(t.job, t.row0, t.nr, t.layer);
          mbar_expect_tx(&full[s], t.bytes[0] + t.bytes[1] + t.bytes[2] + t.bytes[3]);
          uint8_t* dst = ring + size_t(s) * a.slot_bytes;
#pragma unroll
          for (int p = 0; p < kMaxPlanes; ++p) {
            if (t.bytes[p] == 0) continue;
            const uint8_t* src = t.job < 0 ? state_bytes + reinterpret_cast<uintptr_t>(t.src[p]) : t.src[p];
            bulk_copy(dst, src, t.bytes[p], &full[s]);
            dst += t.bytes[p];
          }
        }
        __syncwarp();
      }
      cur = nxt;
    }
    return;
  }

  // Consumers. A tile belongs to one warp (its index in the stage modulo 8), which waits
  // for it, computes its rows and releases the slot; a WKV tile is computed by all warps.
  // Warps meet where the staged input changes (a new segment: a run of tiles of one job)
  // and at stage boundaries.
  XQ xq[2] = {};
  const int32_t* segb = a.seg_begin + size_t(b) * (G + 1);
  const int t_first = sb[0];
  for (int g = 0; g < G; ++g) {
    const int l = g / kPersistentStages, kind = g % kPersistentStages;
    const int j1 = sb[g + 1], q0 = segb[g], q1 = segb[g + 1];
    const PLayer& L = a.layers[l];
    const bool prep = kind == 0 || kind == 4;
    trace_point(a, g, 0);
    if (q1 > q0 && a.segs[q0].y >= 0) fetch_job(a, a.segs[q0].y, sjob);  // while the previous stage finishes
    if ((prep || q1 > q0) && g > 0) wait_stage(a.sync + g - 1, uint32_t(a.blocks));
    if (kind == 0) prep_layer_norm(a, L.att_ln_w, L.att_ln_b, state + L.att_shift_off, ln, red);
    if (kind == 4) prep_layer_norm(a, L.ffn_ln_w, L.ffn_ln_b, state + L.ffn_shift_off, ln, red);
    trace_point(a, g, 1);
    uint64_t starved = 0;  // trace: time thread 0 waited for tiles
    for (int q = q0; q < q1; ++q) {
      const int2 seg = a.segs[q];  // first tile, job
      const int t_end = q + 1 < q1 ? a.segs[q + 1].x : j1;
      if (q > q0) {
        consumer_sync();  // every warp is done with the previous input and job
        if (seg.y >= 0) fetch_job(a, seg.y, sjob);
      }
      consumer_sync();
      if (seg.y < 0) {  // WKV heads
        for (int j = seg.x; j < t_end; ++j) {
          const int k = j - t_first, s = k % a.slots;
          mbar_wait(&full[s], uint32_t(k / a.slots) & 1u);
          wkv_head(a, L, state + (L.att_shift_off + 2 * a.C), meta[s].y,
                   reinterpret_cast<const float*>(ring + size_t(s) * a.slot_bytes), sw, red);
          consumer_sync();
          if (threadIdx.x == 0) mbar_arrive(&empty[s]);
        }
        continue;
      }
      const TensorType ty = sjob->W.type;
      stage_input(*sjob, ln, a.C, ty != TensorType::F32 && ty != TensorType::F16 && ty != TensorType::BF16, act, xq);
      // Tiles are claimed in order by whichever warp is free (a counter in shared memory).
      if (threadIdx.x == 0) *claim = seg.x;
      consumer_sync();
      for (;;) {
        int j = 0;
        if ((threadIdx.x & 31) == 0) j = atomicAdd(claim, 1);
        j = __shfl_sync(0xffffffffu, j, 0);
        if (j >= t_end) break;
        const int k = j - t_first, s = k % a.slots;
        const uint64_t w0 = a.trace ? global_ns() : 0;
        mbar_wait(&full[s], uint32_t(k / a.slots) & 1u);
        if (a.trace) starved += global_ns() - w0;
        const int4 m = meta[s];  // job, row0, nr, layer
        tile_rows_any(*sjob, ring + size_t(s) * a.slot_bytes, m.y, m.z, xq, reinterpret_cast<const float*>(act), ln,
                      state);
        __syncwarp();
        if ((threadIdx.x & 31) == 0) mbar_arrive(&empty[s]);
      }
    }
    trace_point(a, g, 2);
    trace_point(a, g, 4, starved);
    signal_stage(a.sync + g);
    trace_point(a, g, 3);
  }
#endif
}

}  // namespace

size_t persistent_smem_bytes(const PersistentArgs& a) { return smem_layout(a).total; }

bool persistent_available(int* max_smem) {
  int dev = 0, major = 0, optin = 0, coop = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev), "cudaDeviceGetAttribute");
  *max_smem = optin;
  return major >= 9 && coop;
}

void persistent_decode(const PersistentArgs& a, Stream stream) {
  check(cudaMemsetAsync(a.sync, 0, size_t(a.stages) * sizeof(uint32_t), stream), "persistent counters");
  const size_t smem = persistent_smem_bytes(a);
  allow_smem(persistent_kernel, smem);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(a.blocks);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;  // every block resident: they wait on each other
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check(cudaLaunchKernelEx(&cfg, persistent_kernel, a), "persistent_decode");
}

}  // namespace rwkv::cuda
