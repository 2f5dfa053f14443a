// ReLU^2-sparse FFN value product at decode (ops.h: SparseFfn). The value matrix (C x F)
// is stored transposed, one row of C weights per hidden unit j, so a hidden unit that is
// exactly zero costs nothing: for trained RWKV-7 models most are (ReLU squared), for random
// weights about half.
//
// Grid: x = slices of 512 outputs (a warp's 32 lanes x 16 consecutive outputs), y = groups
// of 8 blocks of 32 hidden units (one block per warp). A warp finds the non-zero units of
// its block with a ballot and streams their rows, 16 bytes per lane per load (Q4_K: 8),
// several loads in flight. Quantised types apply their scales once per block of 32 units
// (Q8_0, Q4_K, Q5_K) or group of 16 (Q6_K). Each block writes its partial sums; a second launch adds the partials in
// a fixed order to y (deterministic, no float atomics). Where the next layer's attention
// LayerNorm follows, that launch is a cluster of blocks that also does the LayerNorm, token
// shift and lerps of the new row (ffn_sparse_sum_ln_kernel): one launch fewer per layer.
#include <cooperative_groups.h>

#include <cstring>

#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quantx.cuh"
#include "common/half.h"
#include "tensor/transpose.h"

namespace rwkv::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kSlice = 512;      // outputs per block column
constexpr int kInFlight = 16;    // 16-byte loads per lane per round
constexpr unsigned kDepth = 40;  // partial loads per output in flight in the sum (2.9B: 40 groups)

// Byte k of `word` as a float without an int-to-float conversion (a quarter-rate instruction
// on Hopper, one per weight byte here): the byte ^ 0x80 as the low mantissa bits of 2^23 is
// exactly 2^23 + q + 128; word_x80 is word ^ kX80.
constexpr int kX80 = int(0x80808080u);
__device__ __forceinline__ float byte_f(int word_x80, int k) {
  return __uint_as_float(__byte_perm(uint32_t(word_x80), 0x4B000000u, 0x7540u + unsigned(k))) - 8388736.f;
}

template <bool kBF16>
__device__ __forceinline__ float2 half2f(int w) {
  if constexpr (kBF16) {
    return make_float2(__uint_as_float(uint32_t(w) << 16), __uint_as_float(uint32_t(w) & 0xffff0000u));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
  }
}

// acc[e] += sum over the non-zero units of this warp's block of W[j][i0 + e] h[j]; sc holds
// the block's Q8_0 scales of outputs i0 .. i0+15 (read before the wait).
// The next non-zero unit of a warp's block (the lowest bit of the warp-uniform mask, which
// it clears): its index b and its value h[b] in every lane; once the mask is empty, ok is
// false and h 0.
struct Unit {
  int b;
  bool ok;
  float h;
};
__device__ __forceinline__ Unit next_unit(unsigned& mask, float hv) {
  Unit u;
  u.b = mask ? __ffs(int(mask)) - 1 : 0;
  u.ok = mask != 0;
  mask &= mask - 1;
  u.h = u.ok ? __shfl_sync(0xffffffffu, hv, u.b) : 0.f;
  return u;
}

// s[e] += h q[e] for the 16 int8 quants of a row piece (Q8_0, Q6_K).
__device__ __forceinline__ void add_int8_row(float h, int4 w, float (&s)[16]) {
  const int q[4] = {w.x ^ kX80, w.y ^ kX80, w.z ^ kX80, w.w ^ kX80};
#pragma unroll
  for (int e = 0; e < 16; ++e) s[e] = fmaf(h, byte_f(q[e / 4], e % 4), s[e]);
}

// Q4_K / Q5_K: acc[e] += D[e] sum_j h[j] q[j][e] - M[e] sum_j h[j] over this warp's block of
// 32 units (one sub-block, so one (D, M) pair per output). Q4_K rows are nibbles (8 bytes per
// lane and row), Q5_K rows unsigned bytes (16).
template <bool kNibbles>
__device__ __forceinline__ void block_rows_dm(const SparseFfn& W, int64_t j0, float hv, int64_t i0, bool active,
                                              float (&acc)[16]) {
  unsigned mask = __ballot_sync(0xffffffffu, hv != 0.f);
  if (!mask) return;
  // The block's pairs, requested with its first rows (one round trip for both).
  int4 dm[8] = {};
  if (active) {
    const float* p = W.dm + 2 * ((j0 / 32) * W.C + i0);
#pragma unroll
    for (int k = 0; k < 8; ++k) dm[k] = ld_stream16(p + 4 * k);
  }
  const float hsum = warp_sum(hv);
  constexpr int kRows = kNibbles ? kInFlight : kInFlight / 2;  // Q5_K: 16 bytes a row (registers)
  float s[16] = {};
  while (mask) {  // warp-uniform
    int4 w[kRows];
    float hj[kRows];
#pragma unroll
    for (int k = 0; k < kRows; ++k) {
      const Unit u = next_unit(mask, hv);
      hj[k] = u.h;
      w[k] = make_int4(0, 0, 0, 0);
      if (u.ok && active) {
        if constexpr (kNibbles) {
          const int2 v = ld_stream8(W.w + ((j0 + u.b) * W.C + i0) / 2);
          w[k] = make_int4(v.x, v.y, 0, 0);
        } else {
          w[k] = ld_stream16(W.w + (j0 + u.b) * W.C + i0);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kRows; ++k) {
      // Quants as the low mantissa byte of 2^23 (exactly 2^23 + q). Nibbles: byte b of the
      // low nibbles is output 2b, of the high ones output 2b + 1.
      int q[4];
      if constexpr (kNibbles) {
        q[0] = w[k].x & 0x0F0F0F0F;
        q[1] = (w[k].x >> 4) & 0x0F0F0F0F;
        q[2] = w[k].y & 0x0F0F0F0F;
        q[3] = (w[k].y >> 4) & 0x0F0F0F0F;
      } else {
        q[0] = w[k].x;
        q[1] = w[k].y;
        q[2] = w[k].z;
        q[3] = w[k].w;
      }
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        const int word = kNibbles ? q[2 * (e / 8) + (e % 2)] : q[e / 4];
        const unsigned byte = kNibbles ? unsigned((e % 8) / 2) : unsigned(e % 4);
        const float v = __uint_as_float(__byte_perm(uint32_t(word), 0x4B000000u, 0x7540u + byte));
        s[e] = fmaf(hj[k], v - 8388608.f, s[e]);
      }
    }
  }
  if (active) {
    const float* f = reinterpret_cast<const float*>(dm);
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] += fmaf(f[2 * e], s[e], -f[2 * e + 1] * hsum);
  }
}

// Q6_K: signed int8 quants (as Q8_0's) and one float scale per output and group of 16 units,
// so a warp's block of 32 units is two groups, each at most kInFlight rows (one round):
// acc[e] += D_g[e] sum_{j in g} h[j] q[j][e].
__device__ __forceinline__ void block_rows_q6_k(const SparseFfn& W, int64_t j0, float hv, int64_t i0, bool active,
                                                float (&acc)[16]) {
  static_assert(kInFlight >= 16, "a group of 16 units in one round");
  const unsigned mask = __ballot_sync(0xffffffffu, hv != 0.f);
  if (!mask) return;
  int4 scale[8] = {};  // [0, 4): group 2 j0/32 of outputs i0 .. i0 + 15, [4, 8): the next group
  if (active) {
    const float* p = W.dm + (j0 / 16) * W.C + i0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      scale[k] = ld_stream16(p + 4 * k);
      scale[4 + k] = ld_stream16(p + W.C + 4 * k);
    }
  }
#pragma unroll
  for (int g = 0; g < 2; ++g) {
    unsigned m = mask & (g ? 0xFFFF0000u : 0x0000FFFFu);
    if (!m) continue;  // warp-uniform
    int4 w[16];
    float hj[16];
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      const Unit u = next_unit(m, hv);
      hj[k] = u.h;
      w[k] = u.ok && active ? ld_stream16(W.w + (j0 + u.b) * W.C + i0) : make_int4(0, 0, 0, 0);
    }
    float s[16] = {};
#pragma unroll
    for (int k = 0; k < 16; ++k) add_int8_row(hj[k], w[k], s);
    const float* f = reinterpret_cast<const float*>(scale + 4 * g);
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] = fmaf(f[e], s[e], acc[e]);
  }
}

template <TensorType TY>
__device__ __forceinline__ void block_rows(const SparseFfn& W, int64_t j0, float hv, int64_t i0, bool active,
                                           const int4 (&sc)[2], float (&acc)[16]) {
  if constexpr (TY == TensorType::Q4_K || TY == TensorType::Q5_K) {
    block_rows_dm<TY == TensorType::Q4_K>(W, j0, hv, i0, active, acc);
    return;
  }
  if constexpr (TY == TensorType::Q6_K) {
    block_rows_q6_k(W, j0, hv, i0, active, acc);
    return;
  }
  constexpr bool kQ8 = TY == TensorType::Q8_0;
  constexpr int kRows = kQ8 ? kInFlight : kInFlight / 2;  // float types: 32 bytes per lane per row
  unsigned mask = __ballot_sync(0xffffffffu, hv != 0.f);
  float s[16] = {};
  while (mask) {  // warp-uniform
    int4 w[kInFlight];
    float hj[kRows];
#pragma unroll
    for (int k = 0; k < kRows; ++k) {
      const Unit u = next_unit(mask, hv);
      hj[k] = u.h;
      if constexpr (kQ8) {
        w[k] = u.ok && active ? ld_stream16(W.w + (j0 + u.b) * W.C + i0) : make_int4(0, 0, 0, 0);
      } else {
        const uint8_t* p = W.w + ((j0 + u.b) * W.C + i0) * 2;
        w[2 * k] = u.ok && active ? ld_stream16(p) : make_int4(0, 0, 0, 0);
        w[2 * k + 1] = u.ok && active ? ld_stream16(p + 16) : make_int4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int k = 0; k < kRows; ++k) {
      if constexpr (kQ8) {
        add_int8_row(hj[k], w[k], s);
      } else {
        const int q[8] = {w[2 * k].x,     w[2 * k].y,     w[2 * k].z,     w[2 * k].w,
                          w[2 * k + 1].x, w[2 * k + 1].y, w[2 * k + 1].z, w[2 * k + 1].w};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float2 f = half2f<TY == TensorType::BF16>(q[e]);
          s[2 * e] = fmaf(hj[k], f.x, s[2 * e]);
          s[2 * e + 1] = fmaf(hj[k], f.y, s[2 * e + 1]);
        }
      }
    }
  }
  if constexpr (kQ8) {
    if (active) {
      const int d[8] = {sc[0].x, sc[0].y, sc[0].z, sc[0].w, sc[1].x, sc[1].y, sc[1].z, sc[1].w};
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float2 f = half2f<false>(d[e]);
        acc[2 * e] = fmaf(f.x, s[2 * e], acc[2 * e]);
        acc[2 * e + 1] = fmaf(f.y, s[2 * e + 1], acc[2 * e + 1]);
      }
    }
  } else {
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] += s[e];
  }
}

template <TensorType TY>
__global__ void __launch_bounds__(kThreads)
    ffn_sparse_kernel(const SparseFfn W, const float* __restrict__ h, float* partial) {
  __shared__ float4 part[kWarps][kSlice / 4];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t slice0 = int64_t(blockIdx.x) * kSlice;
  const int64_t i0 = slice0 + 16 * lane;
  const bool active = i0 < W.C;
  const int64_t j0 = (int64_t(blockIdx.y) * kWarps + warp) * 32;
  int4 sc[2] = {};  // Q8_0: the scales do not depend on h, so they load before the wait
  if (TY == TensorType::Q8_0 && active && j0 < W.F) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(W.scales + (j0 / 32) * W.C + i0);
    sc[0] = ld_stream16(p);
    sc[1] = ld_stream16(p + 16);
  }
  pdl_wait();
  pdl_trigger();
  float acc[16] = {};
  if (j0 < W.F) {
    const float hv = j0 + lane < W.F ? h[j0 + lane] : 0.f;
    block_rows<TY>(W, j0, hv, i0, active, sc, acc);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e)
    part[warp][4 * lane + e] = make_float4(acc[4 * e], acc[4 * e + 1], acc[4 * e + 2], acc[4 * e + 3]);
  __syncthreads();
  // This block's sums over its warps, outputs slice0 + o for o = threadIdx.x, + 256.
  const float* pf = reinterpret_cast<const float*>(part);
  float* mine = partial + int64_t(blockIdx.y) * W.C;
  for (int o = threadIdx.x; o < kSlice; o += kThreads) {
    if (slice0 + o >= W.C) break;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += pf[w * kSlice + o];
    mine[slice0 + o] = v;
  }
}

// Partial sums of output i over every group, in group order (kDepth loads in flight).
__device__ __forceinline__ float sum_partials(int64_t C, int groups, const float* partial, int64_t i) {
  float v = 0.f;
  for (int g0 = 0; g0 < groups; g0 += int(kDepth)) {
    float p[kDepth];
#pragma unroll
    for (unsigned g = 0; g < kDepth; ++g) p[g] = g0 + int(g) < groups ? __ldcg(partial + (g0 + g) * C + i) : 0.f;
#pragma unroll
    for (unsigned g = 0; g < kDepth; ++g) v += p[g];
  }
  return v;
}

// y[i] += sum over the groups of partial[g][i], in group order: a launch of its own. In the
// product's grid (the last block of each slice to finish adding them, found by a fence and
// a counter in every block) it cost ~1.5% more of the 2.9B decode step (NOTES.md run 83).
__global__ void __launch_bounds__(kThreads)
    ffn_sparse_reduce_kernel(int64_t C, int groups, const float* partial, float* y, bool early_trigger) {
  if (early_trigger) pdl_trigger();
  pdl_wait();
  if (!early_trigger) pdl_trigger();
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= C) return;
  y[i] += sum_partials(C, groups, partial, i);
}

// Blocks of a cluster that the fused sum + LayerNorm spreads one row of C over (C / 32
// divisible by it: every block holds whole warps of consecutive channels).
int sum_ln_cluster(int C) {
  for (int k = 8; k > 1; --k)
    if ((C / 32) % k == 0 && C / k <= 1024) return k;
  return 1;
}

// One decode row (ShiftLerpArgs with R = 1): y[c] += the partials' sum, then the next layer's
// LayerNorm + token shift + lerps of the new y (ln_shift_lerp_kernel's outputs). The grid is
// one cluster; block b owns channels [b * blockDim.x, (b + 1) * blockDim.x), one per thread.
// The row's mean and squared deviations meet in one round (two rounds, a sum and then the
// deviations, cost a cluster barrier and a distributed-shared-memory read more: NOTES.md run
// 116): merged pairwise in each warp, then over the warps through shared memory, then over
// the blocks through distributed shared memory, every merge in a fixed order
// (deterministic) and of exact deviations (no cancellation against a large mean). Replaces a
// launch of its own for the LayerNorm, whose ten blocks each read the whole row again after
// their PDL wait.
__global__ void ffn_sparse_sum_ln_kernel(int64_t C, int groups, const float* partial, float* y,
                                         const __grid_constant__ ShiftLerpArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  __shared__ float2 warp_stats[32];  // each warp's (mean, M2)
  __shared__ float2 block_stats;     // this block's, read by the cluster
  const cg::cluster_group cluster = cg::this_cluster();
  if (a.early_trigger) pdl_trigger();
  const int c = int(blockIdx.x * blockDim.x + threadIdx.x);
  // Before the wait: weights, and the shift state (written by no kernel of this step yet).
  const int s = a.batch.row_seq[0];
  float* shift = a.shift + size_t(a.batch.seq_slot[s]) * a.state_stride;
  const float w = a.ln_w[c], b = a.ln_b[c], prev = shift[c];
  float mix[6] = {};
#pragma unroll
  for (int m = 0; m < 6; ++m)
    if (m < a.n_mix) mix[m] = a.mix[size_t(m) * C + c];
  pdl_wait();
  if (!a.early_trigger) pdl_trigger();
  const float h = y[c] + sum_partials(C, groups, partial, c);
  y[c] = h;
  float2 st = warp_merge_equal(h, 0.f, 1.f);
  const unsigned lane = threadIdx.x & 31, warps = blockDim.x >> 5, ranks = cluster.num_blocks();
  if (lane == 0) warp_stats[threadIdx.x >> 5] = st;
  __syncthreads();
  const float2 ws = lane < warps ? warp_stats[lane] : make_float2(0.f, 0.f);
  st = warp_merge_groups(lane < warps ? 32.f : 0.f, ws.x, ws.y, 1.f / float(blockDim.x));
  if (threadIdx.x == 0) block_stats = st;
  cluster.sync();
  // Lane r of every warp reads block r's (all requests in flight at once).
  const float2 other = lane < ranks ? *cluster.map_shared_rank(&block_stats, lane) : make_float2(0.f, 0.f);
  st = warp_merge_groups(lane < ranks ? float(blockDim.x) : 0.f, other.x, other.y, 1.f / float(C));
  cluster.barrier_arrive();  // this block has read the others' statistics; it may leave after the wait below
  const float x = (h - st.x) * rsqrtf(st.y * (1.f / float(C)) + a.eps) * w + b;
  shift[c] = x;
  if (a.xln) a.xln[c] = x;
#pragma unroll
  for (int m = 0; m < 6; ++m) {  // unrolled: mix[] stays in registers
    if (m >= a.n_mix) break;
    const float o = x + (prev - x) * mix[m];
    if (a.out[m]) a.out[m][c] = o;
    if (a.out16[m]) static_cast<__half*>(a.out16[m])[c] = __float2half_rn(o);
    if (a.out_q[m].q0) quantize32(a.out_q[m], o, 0, c);
  }
  cluster.barrier_wait();  // no block's shared memory goes away while another reads it
#else
  __trap();  // launched only where clusters exist (sparse_sum_ln_supported)
#endif
}

// The value types with a sparse layout: f(std::integral_constant<TensorType, T>) for type T
// among them (with_type); false for any other type.
template <typename F>
bool with_sparse_type(TensorType type, F&& f) {
  using Type = TensorType;
  return with_type<Type::Q8_0, Type::Q4_K, Type::Q5_K, Type::Q6_K, Type::F16, Type::BF16>(type, std::forward<F>(f));
}

}  // namespace

bool sparse_sum_ln_supported(int C) {
  return clusters_supported() && C % 32 == 0 && C <= 4096 && sum_ln_cluster(C) > 1;
}

bool sparse_ffn_supported(TensorType type, int64_t C) {
  return with_sparse_type(type, [](auto) {}) && C % 16 == 0;
}

bool sparse_ffn_fills(int64_t C, int64_t F, int sms) {
  const int64_t groups = (F / 32 + kWarps - 1) / kWarps;
  return (C + kSlice - 1) / kSlice * groups >= sms;
}

size_t sparse_ffn_bytes(TensorType type, int64_t C, int64_t F) {
  const size_t n = size_t(C) * size_t(F);
  if (type == TensorType::Q8_0) return (n + 255) / 256 * 256 + size_t(F / 32) * size_t(C) * 2;
  if (type == TensorType::Q4_K) return (n / 2 + 255) / 256 * 256 + size_t(F / 32) * size_t(C) * 8;
  if (type == TensorType::Q5_K) return (n + 255) / 256 * 256 + size_t(F / 32) * size_t(C) * 8;
  if (type == TensorType::Q6_K) return (n + 255) / 256 * 256 + size_t(F / 16) * size_t(C) * 4;
  return n * 2;
}

size_t sparse_ffn_scratch_floats(int64_t C, int64_t F) {
  const int64_t groups = (F / 32 + kWarps - 1) / kWarps;
  return size_t(groups * C);  // the partials
}

void sparse_ffn_pack(TensorType type, int64_t C, int64_t F, const uint8_t* gguf, uint8_t* dst) {
  if (!sparse_ffn_supported(type, C)) fail(ErrorCode::unsupported, "cuda sparse ffn: unsupported type or width");
  const size_t stride = row_bytes(type, F);
  if (type == TensorType::Q8_0) {
    const size_t n = size_t(C) * size_t(F);
    q8_0_transpose_quants(gguf, uint64_t(C), uint32_t(F), 0, uint64_t(F), dst);
    q8_0_transpose_scales(gguf, uint64_t(C), uint32_t(F), 0, uint64_t(F / 32), dst + (n + 255) / 256 * 256);
    return;
  }
  if (type == TensorType::Q4_K) {
    const size_t n = size_t(C) * size_t(F);
    q4_k_transpose(gguf, uint64_t(C), uint32_t(F), dst, reinterpret_cast<float*>(dst + (n / 2 + 255) / 256 * 256));
    return;
  }
  if (type == TensorType::Q5_K) {
    const size_t n = size_t(C) * size_t(F);
    q5_k_transpose(gguf, uint64_t(C), uint32_t(F), dst, reinterpret_cast<float*>(dst + (n + 255) / 256 * 256));
    return;
  }
  if (type == TensorType::Q6_K) {
    const size_t n = size_t(C) * size_t(F);
    q6_k_transpose(gguf, uint64_t(C), uint32_t(F), reinterpret_cast<int8_t*>(dst),
                   reinterpret_cast<float*>(dst + (n + 255) / 256 * 256));
    return;
  }
  for (int64_t i = 0; i < C; ++i) {
    const uint8_t* row = gguf + size_t(i) * stride;
    for (int64_t j = 0; j < F; ++j) std::memcpy(dst + (size_t(j) * size_t(C) + size_t(i)) * 2, row + size_t(j) * 2, 2);
  }
}

SparseFfn sparse_ffn_view(TensorType type, int64_t C, int64_t F, const void* base) {
  SparseFfn v;
  v.type = type;
  v.C = C;
  v.F = F;
  v.w = static_cast<const uint8_t*>(base);
  if (type == TensorType::Q8_0) {
    const size_t n = size_t(C) * size_t(F);
    v.scales = reinterpret_cast<const uint16_t*>(v.w + (n + 255) / 256 * 256);
  }
  if (type == TensorType::Q4_K)
    v.dm = reinterpret_cast<const float*>(v.w + (size_t(C) * size_t(F) / 2 + 255) / 256 * 256);
  if (type == TensorType::Q5_K || type == TensorType::Q6_K)
    v.dm = reinterpret_cast<const float*>(v.w + (size_t(C) * size_t(F) + 255) / 256 * 256);
  return v;
}

void ffn_value_sparse(const SparseFfn& W, const float* h, float* y, float* scratch, Stream stream, bool early_trigger,
                      const ShiftLerpArgs* next_ln) {
  const int64_t groups = (W.F / 32 + kWarps - 1) / kWarps;
  const dim3 grid(unsigned((W.C + kSlice - 1) / kSlice), unsigned(groups)), block(kThreads);
  const bool known = with_sparse_type(W.type, [&](auto ty) {
    launch("ffn_sparse", ffn_sparse_kernel<decltype(ty)::value>, grid, block, 0, stream, W, h, scratch);
  });
  if (!known) fail(ErrorCode::unsupported, "cuda sparse ffn: unsupported type");
  if (next_ln) {
    const int k = sum_ln_cluster(int(W.C));
    launch_clustered("ffn_sparse_sum_ln", ffn_sparse_sum_ln_kernel, dim3(unsigned(k)), dim3(unsigned(W.C / k)), 0, k,
                     stream, W.C, int(groups), static_cast<const float*>(scratch), y, *next_ln);
    return;
  }
  launch("ffn_sparse_reduce", ffn_sparse_reduce_kernel, dim3(unsigned((W.C + kThreads - 1) / kThreads)), dim3(kThreads),
         0, stream, W.C, int(groups), static_cast<const float*>(scratch), y, early_trigger);
}

}  // namespace rwkv::cuda
