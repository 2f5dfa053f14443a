// The one-row FFN at decode in one launch (ops.h: ffn_fused): hidden = relu(W_key x)^2,
// then y += W_value hidden over the hidden units that are not zero.
//
// Why one launch: as two (the key matvec, then ffn_sparse.cu), the value product cannot
// request a weight byte before every key row is done, and each is a ~14 us step of the
// 2.9B layer chain for 28 and ~14 MB (NOTES.md run 67). Here a block computes the hidden
// units it owns and goes straight on to their value rows: the only grid-wide dependency
// left is the final sum of the blocks' partial outputs.
//
// Block: 256 threads own kUnits = 16 consecutive hidden units j0 .. j0+15 (half a value
// scale block of 32, so one scale per output serves them all).
//   1. Key rows: 16 threads per row walk its work items (the decode matvec's items, x as
//      two int8 terms from the producer); the first round of weights, and the value
//      scales, are requested before the PDL wait.
//   2. Value rows: thread t owns outputs 16c .. 16c+15 (c = t mod C/16) for group
//      g = t div (C/16) of the non-zero units; groups meet in shared memory.
//   3. Clusters of kCluster blocks add their partials through distributed shared memory
//      (block r of a cluster sums output slice r), then the last cluster to finish slice
//      r adds the clusters' partials in cluster order into y: deterministic, no float
//      atomics.
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

#include "backend/cuda/matvec_kernel.cuh"

namespace rwkv::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kUnits = 16;                 // hidden units per block
constexpr int kTpr = kThreads / kUnits;    // threads per key row
constexpr int kCluster = 8;                // blocks per cluster (the portable maximum)
constexpr int kRound = 6;                  // value rows in flight per thread
constexpr int kDepth = 32;                 // partial loads in flight per output in the final sum
constexpr int64_t kMaxC = 16 * kThreads;   // every thread owns at most one chunk of 16 outputs
constexpr int kX80 = int(0x80808080u);

// Byte k of `word_x80` (a word of int8 quants ^ 0x80) as a float, without an int-to-float
// conversion (ffn_sparse.cu: exactly 2^23 + q + 128 from the bits, minus 2^23 + 128).
__device__ __forceinline__ float byte_f(int word_x80, int k) {
  return __uint_as_float(__byte_perm(uint32_t(word_x80), 0x4B000000u, 0x7540u + unsigned(k))) - 8388736.f;
}

__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
#endif
}

// Threads per output chunk group: as many groups of C/16 threads as fit the block (one for
// C >= 4096 / 2), at most one per hidden unit.
__host__ __device__ constexpr int value_groups(int64_t C) {
  const int nc = int(C / 16);
  return nc * 2 > kThreads ? 1 : (kThreads / nc < kUnits ? kThreads / nc : kUnits);
}

// red: [value_groups(C)][C] floats of dynamic shared memory; partial: [gridDim.x /
// kCluster][C] floats of scratch; counters: kCluster, zero between launches.
template <TensorType TK>
__global__ void __launch_bounds__(kThreads, 2)
    ffn_fused_kernel(const PackedView K, const QuantX x, const SparseFfn V, float* y, float* partial,
                     unsigned* counters) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using It = Item<TK>;
  constexpr int U = It::kUnroll;
  extern __shared__ __align__(16) float red[];
  __shared__ float hid[kUnits];
  __shared__ int nz[kUnits];
  __shared__ int nnz;
  __shared__ bool last;

  const int64_t C = V.C, n_sets = V.F / kUnits;
  const int t = int(threadIdx.x);
  // Key rows: unit t / kTpr of the set, items g_lane, g_lane + kTpr, ...
  const int unit = t / kTpr, g_lane = t % kTpr;
  const int64_t items = K.items, step = int64_t(kTpr) * U;
  // Value rows: outputs 16c .. 16c+15 for the non-zero units of rank g (mod groups).
  const int nc = int(C / 16), groups = value_groups(C);
  const int g = t / nc, c = t - g * nc;
  const bool value_thread = g < groups;

  // The first set's first round of key weights before the wait: they do not depend on x.
  int64_t set = blockIdx.x;
  It w[U];
  matvec_detail::load_round(w, K, set * kUnits + unit, true, g_lane, kTpr);
  pdl_wait();
  pdl_trigger();
  const int nb = int(C / 32);
  const XQ xq[2] = {XQ{x.q0, x.d0, x.s0, int(C), nb}, XQ{x.q1, x.d1, x.s1, int(C), nb}};

  float total[16] = {};  // this thread's outputs over its sets
  for (; set < n_sets; set += gridDim.x) {
    const int64_t j0 = set * kUnits;
    // 1. The set's key rows (the first round already requested).
    float acc[1] = {0.f};
    for (int64_t base = g_lane;;) {
      matvec_detail::compute_round<It, 1, U, false>(w, base, items, kTpr, 1, xq, nullptr, 0, C, acc);
      base += step;
      if (base >= items) break;
      matvec_detail::load_round(w, K, j0 + unit, true, base, kTpr);
    }
    for (int o = kTpr / 2; o > 0; o >>= 1) acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], o);
    if (g_lane == 0) hid[unit] = apply_out(OutOp::relu_sq, acc[0], 0.f, 0.f);
    __syncthreads();
    if (t < 32) {
      const bool on = t < kUnits && hid[t] != 0.f;
      const unsigned mask = __ballot_sync(0xffffffffu, on);
      if (on) nz[__popc(mask & ((1u << t) - 1u))] = t;
      if (t == 0) nnz = __popc(mask);
    }
    __syncthreads();
    // The next set's first key round, in flight during this set's value rows.
    if (set + gridDim.x < n_sets)
      matvec_detail::load_round(w, K, (set + gridDim.x) * kUnits + unit, true, g_lane, kTpr);

    // 2. The set's non-zero value rows, kRound loads in flight, with the outputs' scales
    // for its block of 32 hidden units.
    if (value_thread) {
      const uint8_t* sp = reinterpret_cast<const uint8_t*>(V.scales + (j0 / 32) * C + 16 * c);
      const int4 sc[2] = {ld_stream16(sp), ld_stream16(sp + 16)};
      const int n = nnz;
      float s[16] = {};
      for (int r0 = g; r0 < n; r0 += kRound * groups) {
        int4 q[kRound];
        float hj[kRound];
#pragma unroll
        for (int k = 0; k < kRound; ++k) {
          const int r = r0 + k * groups;
          const int u = r < n ? nz[r] : 0;
          hj[k] = r < n ? hid[u] : 0.f;
          q[k] = r < n ? ld_stream16(V.w + (j0 + u) * C + 16 * c) : make_int4(0, 0, 0, 0);
        }
#pragma unroll
        for (int k = 0; k < kRound; ++k) {
          if (hj[k] == 0.f) continue;
          const int b[4] = {q[k].x ^ kX80, q[k].y ^ kX80, q[k].z ^ kX80, q[k].w ^ kX80};
#pragma unroll
          for (int e = 0; e < 16; ++e) s[e] = fmaf(hj[k], byte_f(b[e / 4], e % 4), s[e]);
        }
      }
      const int d[8] = {sc[0].x, sc[0].y, sc[0].z, sc[0].w, sc[1].x, sc[1].y, sc[1].z, sc[1].w};
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&d[e]));
        total[2 * e] = fmaf(f.x, s[2 * e], total[2 * e]);
        total[2 * e + 1] = fmaf(f.y, s[2 * e + 1], total[2 * e + 1]);
      }
    }
    __syncthreads();  // hid and nz are rewritten by the next set
  }

  // This block's partial: the groups' sums in group order, in group 0's row of red.
  if (value_thread) {
    float4* out = reinterpret_cast<float4*>(red + int64_t(g) * C + 16 * c);
#pragma unroll
    for (int e = 0; e < 4; ++e)
      out[e] = make_float4(total[4 * e], total[4 * e + 1], total[4 * e + 2], total[4 * e + 3]);
  }
  __syncthreads();
  if (groups > 1) {
    for (int64_t o = t; o < C; o += kThreads) {
      float v = red[o];
      for (int k = 1; k < groups; ++k) v += red[k * C + o];
      red[o] = v;
    }
  }

  // 3. This cluster's sum of output slice `rank`, over its blocks in rank order.
  cluster_arrive();
  cluster_wait();
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank());
  const int64_t per = (C + kCluster - 1) / kCluster, lo = rank * per, hi = lo + per < C ? lo + per : C;
  const int64_t cl = blockIdx.x / kCluster, n_cl = gridDim.x / kCluster;
  for (int64_t o = lo + t; o < hi; o += kThreads) {
    float v = 0.f;
#pragma unroll
    for (int r = 0; r < kCluster; ++r) v += cluster.map_shared_rank(red, r)[o];
    partial[cl * C + o] = v;
  }
  cluster_arrive();  // this block is done with its peers' shared memory
  __threadfence();
  __syncthreads();
  if (t == 0) last = atomicAdd(&counters[rank], 1u) == unsigned(n_cl - 1);
  __syncthreads();
  if (last) {
    __threadfence();
    for (int64_t o = lo + t; o < hi; o += kThreads) {
      float v = 0.f;
      for (int64_t c0 = 0; c0 < n_cl; c0 += kDepth) {
        float p[kDepth];
#pragma unroll
        for (int k = 0; k < kDepth; ++k) p[k] = c0 + k < n_cl ? __ldcg(partial + (c0 + k) * C + o) : 0.f;
#pragma unroll
        for (int k = 0; k < kDepth; ++k) v += p[k];
      }
      y[o] += v;
    }
    if (t == 0) counters[rank] = 0;  // ready for the next launch
  }
  cluster_wait();  // no block leaves while a peer may still read its shared memory
#endif
}

}  // namespace

bool ffn_fused_supported(TensorType key, TensorType value, int64_t C, int64_t F) {
  if (key != TensorType::Q8_0 || value != TensorType::Q8_0) return false;
  if (C % 32 != 0 || C > kMaxC || F % (kUnits * kCluster) != 0) return false;
  // Thread block clusters need compute capability 9.0, and this binary's code for it.
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, ffn_fused_kernel<TensorType::Q8_0>) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  int dev = 0, major = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  return major >= 9 && attr.binaryVersion >= 90;
}

size_t ffn_fused_scratch_floats(int64_t C, int64_t F) {
  return size_t(F / (kUnits * kCluster) * C + kCluster);  // partials, then the counters
}

void ffn_fused(const PackedView& K, const QuantX& x, const SparseFfn& V, float* y, float* scratch, Stream stream) {
  const int64_t C = V.C, F = V.F, sets = F / kUnits;
  if (K.type != TensorType::Q8_0 || V.type != TensorType::Q8_0 || K.rows != F || K.cols != C)
    fail(ErrorCode::unsupported, "cuda fused ffn: key and value must be Q8_0 matrices of F x C and C x F");
  auto* counters = reinterpret_cast<unsigned*>(scratch + F / (kUnits * kCluster) * C);
  const auto kernel = ffn_fused_kernel<TensorType::Q8_0>;
  const size_t smem = size_t(value_groups(C)) * size_t(C) * sizeof(float);
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = kCluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  // As many blocks as can be resident at once (every block then pays the partial sum once),
  // spread so that each takes the same number of sets, give or take one.
  configure_kernel(reinterpret_cast<const void*>(kernel), "ffn_fused", sets);
  static std::unordered_map<size_t, int> max_clusters;  // by shared memory bytes
  auto it = max_clusters.find(smem);
  if (it == max_clusters.end()) {
    cfg.gridDim = dim3(unsigned(sets));
    int n = 0;
    check(cudaOccupancyMaxActiveClusters(&n, kernel, &cfg), "cudaOccupancyMaxActiveClusters");
    if (n < 1) fail(ErrorCode::unsupported, "cuda fused ffn: no cluster of its blocks fits an SM group");
    it = max_clusters.emplace(smem, n).first;
  }
  int64_t blocks = std::min<int64_t>(sets, int64_t(it->second) * kCluster);
  if (const char* e = std::getenv("RWKV_CUDA_FFN_FUSED_BLOCKS")) blocks = std::min<int64_t>(sets, std::atoll(e));
  const int64_t rounds = (sets + blocks - 1) / blocks;
  blocks = ((sets + rounds - 1) / rounds + kCluster - 1) / kCluster * kCluster;
  cfg.gridDim = dim3(unsigned(blocks));
  cfg.numAttrs = pdl_enabled() ? 2 : 1;
  check(cudaLaunchKernelEx(&cfg, kernel, K, x, V, y, scratch, counters), "ffn_fused");
}

}  // namespace rwkv::cuda
