// Blocked int8 kernel for the block-quantised types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
// Q5_K, Q6_K) when many tokens share the weights (prefill), on CPUs with VNNI u8 x s8 dot
// products.
//
// The dot-product tiles (matmul_avx2.cpp, matmul_k_avx2.cpp) spend several instructions per
// 64 multiply-adds (dot, convert, scale, add) plus the decoding of every row for every token
// tile. Here tokens sit in the int32 lanes instead: the activations of P::kFloats tokens
// are interleaved per 4 bytes ([block][quad q][token][4 levels]), so one VNNI instruction
// multiplies 4 weight bytes (broadcast) by 4 levels of every token, four or eight of them
// finish a sub-block (16 or 32 elements with one weight scale) for a whole vector of tokens,
// and its scales are applied once per (row, token vector). Each thread decodes a slab of
// weight rows into signed levels with per-sub-block scale d and min m (value = d * level +
// m), whose panels of kPanelRows rows then meet every token of the call, a cache-sized
// chunk of tokens at a time.
//
// Activations are quantised to 8 bits per 32 elements (q8_prepare, levels + 128 as unsigned
// bytes): for the legacy types the dot-product kernels' quantisation, so both give the same
// integer block sums; the k-quant dot kernels use 256-element Q8_K blocks instead. The +128
// is cancelled by starting each sub-block's sum at -128 * sum(weight levels).

#include "tensor/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <cstring>
#include <vector>

#include "tensor/blocks.h"
#include "tensor/matmul_avx2.h"
#include "tensor/matmul_legacy_avx2.h"
#include "tensor/quant_k.h"

namespace rwkv::matmul_detail {

// Without VNNI, Q8_0's int16 pair sums would saturate: the dot-product tiles keep every type.
#if !defined(RWKV_MATMUL_VNNI)
const Kernel* simd_kernel_gemm_int8(TensorType) { return nullptr; }
#else
namespace {

using P = Wide;
constexpr int64_t kGroupTokens = P::kFloats;                // tokens per vector: 16 (zmm), 8 (ymm)
constexpr int kVecs = kVectorRegisters == 32 ? 3 : 2;       // token vectors per micro-kernel
constexpr int kPanelRows = kVectorRegisters == 32 ? 4 : 2;  // weight rows per micro-kernel
constexpr int64_t kQuads = QK4_0 / 4;                       // 4-byte quads per block

// One group of kGroupTokens tokens: levels [nb][kQuads][token][4], then d [nb][token],
// then s = d * sum(levels) [nb][token] (floats).
size_t group_bytes(int64_t nb) { return size_t(nb * kGroupTokens) * (QK4_0 + 2 * sizeof(float)); }
int64_t token_groups(int64_t T) { return (T + kGroupTokens - 1) / kGroupTokens; }

size_t int8_act_bytes(int64_t cols, int64_t T) { return size_t(token_groups(T)) * group_bytes(cols / QK4_0); }

// Token t goes to group t / kGroupTokens. Whoever prepares the last token also fills the
// padding tokens of the last group (level 0, zero scales: they add nothing).
void int8_prepare(const float* x, int64_t cols, int64_t T, int64_t t0, int64_t t1, uint8_t* act) {
  const int64_t nb = cols / QK4_0;
  const size_t gbytes = group_bytes(nb);
  thread_local std::vector<uint8_t> token;
  token.resize(q8_act_bytes(cols));
  const int64_t end = t1 == T ? token_groups(T) * kGroupTokens : t1;
  for (int64_t t = t0; t < end; ++t) {
    uint8_t* group = act + size_t(t / kGroupTokens) * gbytes;
    const int64_t k = t % kGroupTokens;
    auto* d = reinterpret_cast<float*>(group + size_t(nb * kGroupTokens * QK4_0));
    float* s = d + nb * kGroupTokens;
    if (t >= T) {
      for (int64_t q = 0; q < nb * kQuads; ++q) memset(group + (q * kGroupTokens + k) * 4, 0x80, 4);
      for (int64_t b = 0; b < nb; ++b) d[b * kGroupTokens + k] = s[b * kGroupTokens + k] = 0.0f;
      continue;
    }
    q8_prepare(x + t * cols, cols, token.data());
    const auto* td = reinterpret_cast<const float*>(token.data() + cols);
    for (int64_t q = 0; q < nb * kQuads; ++q) memcpy(group + (q * kGroupTokens + k) * 4, token.data() + 4 * q, 4);
    for (int64_t b = 0; b < nb; ++b) {
      d[b * kGroupTokens + k] = td[b];
      s[b * kGroupTokens + k] = td[nb + b];
    }
  }
}

// A slab of weight rows decoded for the micro-kernel: row i's signed levels, and per
// sub-block j the sum's start -128 * sum(levels), the scale d and the min m.
struct Panel {
  std::vector<int8_t> levels;  // [rows][cols]
  std::vector<int32_t> start;  // [rows][cols / kSub]
  std::vector<float> d, m;     // [rows][cols / kSub]
};

// Consecutive rows of a decoded slab as a micro-kernel reads them: row i's levels at
// levels + i * cols, its start, d and m at + i * cols / kSub.
struct PanelRows {
  const int8_t* levels;
  const int32_t* start;
  const float *d, *m;
};

// Cache blocking. Every panel of a slab meets a chunk of tokens whose activations (about
// kChunkBytes) stay in L2 meanwhile; the slab's decoded rows (about kSlabBytes) are read once
// per chunk. Streaming all of a call's activations past each panel instead lost 30-40% at
// 256-1,024 tokens on the 16-core Xeon of bench/RESULTS.md.
constexpr size_t kChunkBytes = 512 * 1024, kSlabBytes = 256 * 1024;

// Row decoders: Rows::decode writes a stored block's kElems levels and the d (and m) of its
// kElems / kSub sub-blocks.
template <class Decode>
struct LegacyRows {
  using Block = typename Decode::Block;
  static constexpr int64_t kElems = QK4_0, kSub = QK4_0;
  static constexpr bool kHasMin = Decode::kHasMin;
  static void decode(const Block& blk, int8_t* levels, float* d, float* m) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(levels), Decode::template levels<Avx2>(&blk));
    d[0] = f16_scalar(blk.d);
    if constexpr (kHasMin) m[0] = f16_scalar(blk.m);
  }
};

// Q4_K and Q5_K: chunk c of 64 elements holds sub-block 2c in the low nibbles of qs[32c..],
// 2c + 1 in the high ones; Q5_K's fifth bits are bits 2c and 2c + 1 of qh[l]; value =
// d * scale * q - dmin * min (spec §4.3).
template <class BlockType, bool kFive>
struct KRows {
  using Block = BlockType;
  static constexpr int64_t kElems = QK_K, kSub = 32;
  static constexpr bool kHasMin = true;
  static void decode(const Block& blk, int8_t* levels, float* d, float* m) {
    const float dd = f16_scalar(blk.d), dmin = f16_scalar(blk.dmin);
    uint8_t sm[16];
    quant_detail::unpack_k_scales(blk.scales, sm);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        int lo = blk.qs[32 * c + l] & 0xF, hi = blk.qs[32 * c + l] >> 4;
        if constexpr (kFive) {
          lo |= ((blk.qh[l] >> (2 * c)) & 1) << 4;
          hi |= ((blk.qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        levels[64 * c + l] = int8_t(lo);
        levels[64 * c + 32 + l] = int8_t(hi);
      }
    }
    for (int j = 0; j < 8; ++j) {
      d[j] = dd * float(sm[j]);
      m[j] = -dmin * float(sm[8 + j]);
    }
  }
};

// Q6_K: in half n of 128 elements, quarter q of 32 takes the low (q < 2) or high nibbles of
// ql[64n + 32(q & 1) + l] and bits 2q, 2q + 1 of qh[32n + l]; level = that - 32; the 16
// elements from 16j share int8 scale j (spec §4.3).
struct Q6KRows {
  using Block = BlockQ6_K;
  static constexpr int64_t kElems = QK_K, kSub = 16;
  static constexpr bool kHasMin = false;
  static void decode(const BlockQ6_K& blk, int8_t* levels, float* d, float*) {
    for (int n = 0; n < 2; ++n) {
      for (int q = 0; q < 4; ++q) {
        const uint8_t* ql = blk.ql + 64 * n + 32 * (q & 1);
        const uint8_t* qh = blk.qh + 32 * n;
        for (int l = 0; l < 32; ++l) {
          const int low = (ql[l] >> (4 * (q >> 1))) & 0xF, high = (qh[l] >> (2 * q)) & 3;
          levels[128 * n + 32 * q + l] = int8_t((low | high << 4) - 32);
        }
      }
    }
    const float dd = f16_scalar(blk.d);
    for (int j = 0; j < 16; ++j) d[j] = dd * float(blk.scales[j]);
  }
};

template <class Rows>
struct Int8Gemm {
  static constexpr int64_t kSub = Rows::kSub, kSubs = QK4_0 / kSub;  // sub-blocks per block of 32
  static_assert(!Rows::kHasMin || kSub == QK4_0, "a min needs the activation block's sum");

  static void decode_row(const uint8_t* row, int64_t cols, int8_t* levels, int32_t* start, float* d, float* m) {
    const auto* blocks = reinterpret_cast<const typename Rows::Block*>(row);
    for (int64_t b = 0; b < cols / Rows::kElems; ++b) {
      const int64_t j = b * (Rows::kElems / kSub);
      Rows::decode(blocks[b], levels + b * Rows::kElems, d + j, m + j);
    }
    // Sums of the biased bytes (level + 128) of each sub-block, in 64-bit lanes.
    const __m128i bias = _mm_set1_epi8(char(0x80));
    for (int64_t j = 0; j < cols / kSub; ++j) {
      __m128i sums = _mm_sad_epu8(_mm_xor_si128(load128(levels + j * kSub), bias), _mm_setzero_si128());
      if constexpr (kSub == 32)
        sums = _mm_add_epi64(sums,
                             _mm_sad_epu8(_mm_xor_si128(load128(levels + j * kSub + 16), bias), _mm_setzero_si128()));
      const int32_t sum = int32_t(_mm_cvtsi128_si64(_mm_add_epi64(sums, _mm_unpackhi_epi64(sums, sums)))) - 128 * kSub;
      start[j] = -128 * sum;
    }
  }

  // out[i * V * kGroupTokens + v * kGroupTokens + k] = row i . token k of group v, for the R
  // panel rows and the V token groups starting at act.
  template <int R, int V>
  static void micro(const PanelRows& panel, int64_t cols, const uint8_t* act, size_t gbytes, float* out) {
    const int64_t nb = cols / QK4_0, subs = cols / kSub;
    const uint8_t* levels[V];
    const float* da[V];
    for (int v = 0; v < V; ++v) {
      levels[v] = act + size_t(v) * gbytes;
      da[v] = reinterpret_cast<const float*>(levels[v] + size_t(nb * kGroupTokens * QK4_0));
    }
    P::F acc[R][V];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v) acc[i][v] = P::fzero();
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t h = 0; h < kSubs; ++h) {
        const int64_t j = b * kSubs + h;  // sub-block
        P::I p[R][V];
        for (int i = 0; i < R; ++i) {
          const P::I start = P::set1_32(panel.start[size_t(i * subs + j)]);
          for (int v = 0; v < V; ++v) p[i][v] = start;
        }
        const uint8_t* aq[V];
        for (int v = 0; v < V; ++v) aq[v] = levels[v] + j * kSub * kGroupTokens;
        const int8_t* wq = panel.levels + j * kSub;
        for (int q = 0; q < kSub / 4; ++q) {
          P::I a[V];
          for (int v = 0; v < V; ++v) a[v] = P::load(aq[v] + q * kGroupTokens * 4);
          for (int i = 0; i < R; ++i) {
            int32_t quad;
            memcpy(&quad, wq + i * cols + 4 * q, 4);
            const P::I w = P::set1_32(quad);
            for (int v = 0; v < V; ++v) p[i][v] = P::dot_u8s8(p[i][v], a[v], w);
          }
        }
        for (int v = 0; v < V; ++v) {
          const P::F dav = P::load(da[v] + b * kGroupTokens);
          for (int i = 0; i < R; ++i)
            acc[i][v] = P::fma(P::cvt(p[i][v]), P::mul(dav, P::set1(panel.d[size_t(i * subs + j)])), acc[i][v]);
        }
      }
      if constexpr (Rows::kHasMin) {
        // The m * sum(x) term: s = d_a * sum(a) per activation block.
        for (int v = 0; v < V; ++v) {
          const P::F sav = P::load(da[v] + (nb + b) * kGroupTokens);
          for (int i = 0; i < R; ++i) acc[i][v] = P::fma(P::set1(panel.m[size_t(i * subs + b)]), sav, acc[i][v]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v) P::store(out + (i * V + v) * kGroupTokens, acc[i][v]);
  }

  static void run(const Operands& op, int64_t r0, int64_t r1, int64_t T) {
    static constexpr auto table = micro_table<Int8Gemm, kPanelRows, kVecs>();
    const int64_t cols = op.cols, subs = cols / kSub, groups = token_groups(T);
    const size_t gbytes = group_bytes(cols / QK4_0);
    // Slab rows and chunk groups: multiples of the micro-kernel's, at least one of them.
    const int64_t slab_rows = std::max<int64_t>(1, int64_t(kSlabBytes) / cols / kPanelRows) * kPanelRows;
    const int64_t chunk_groups = std::max<int64_t>(1, int64_t(kChunkBytes / gbytes) / kVecs) * kVecs;
    thread_local Panel panel;
    const int64_t most = std::min(slab_rows, r1 - r0);
    panel.levels.resize(size_t(most * cols));
    panel.start.resize(size_t(most * subs));
    panel.d.resize(size_t(most * subs));
    panel.m.resize(size_t(most * subs));
    alignas(64) float out[kPanelRows * kVecs * kGroupTokens];
    for (int64_t s0 = r0; s0 < r1; s0 += slab_rows) {
      const int64_t s1 = std::min(r1, s0 + slab_rows);
      for (int64_t r = s0; r < s1; ++r) {
        const size_t at = size_t((r - s0) * subs);
        decode_row(op.w + size_t(r) * op.w_stride, cols, panel.levels.data() + (r - s0) * cols, &panel.start[at],
                   &panel.d[at], &panel.m[at]);
      }
      for (int64_t g0 = 0; g0 < groups; g0 += chunk_groups) {
        const int64_t g1 = std::min(groups, g0 + chunk_groups);
        for (int64_t r = s0; r < s1; r += kPanelRows) {
          const int R = int(std::min<int64_t>(kPanelRows, s1 - r));
          const size_t at = size_t((r - s0) * subs);
          const PanelRows rows{panel.levels.data() + (r - s0) * cols, &panel.start[at], &panel.d[at], &panel.m[at]};
          for (int64_t g = g0; g < g1; g += kVecs) {
            const int V = int(std::min<int64_t>(kVecs, g1 - g));
            table[size_t(R - 1)][size_t(V - 1)](rows, cols, op.act + size_t(g) * gbytes, gbytes, out);
            // Token-major: each token's R outputs are adjacent in y.
            const int64_t t0 = g * kGroupTokens, n = std::min<int64_t>(V * kGroupTokens, T - t0);
            for (int64_t k = 0; k < n; ++k) {
              float* yk = op.y + size_t(t0 + k) * size_t(op.rows) + size_t(r);
              for (int i = 0; i < R; ++i) yk[i] = out[i * V * kGroupTokens + k];
            }
          }
        }
      }
    }
  }
};

template <class Rows>
constexpr Kernel int8_kernel{&int8_act_bytes, &int8_prepare, &Int8Gemm<Rows>::run, kPanelRows, QK4_0};

}  // namespace

const Kernel* simd_kernel_gemm_int8(TensorType type) {
  switch (type) {
    case TensorType::Q4_0:
      return &int8_kernel<LegacyRows<DecodeQ4_0>>;
    case TensorType::Q4_1:
      return &int8_kernel<LegacyRows<DecodeQ4_1>>;
    case TensorType::Q5_0:
      return &int8_kernel<LegacyRows<DecodeQ5_0>>;
    case TensorType::Q5_1:
      return &int8_kernel<LegacyRows<DecodeQ5_1>>;
    case TensorType::Q8_0:
      return &int8_kernel<LegacyRows<DecodeQ8_0>>;
    case TensorType::Q4_K:
      return &int8_kernel<KRows<BlockQ4_K, false>>;
    case TensorType::Q5_K:
      return &int8_kernel<KRows<BlockQ5_K, true>>;
    case TensorType::Q6_K:
      return &int8_kernel<Q6KRows>;
    default:
      return nullptr;
  }
}

#endif  // RWKV_MATMUL_VNNI

}  // namespace rwkv::matmul_detail

#endif  // __AVX2__ && __FMA__ && __F16C__
