// Blocked int8 kernel for the legacy 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
// when many tokens share the weights (prefill), on CPUs with VNNI u8 x s8 dot products.
//
// The dot-product tiles (matmul_avx2.cpp) spend four instructions per 64 multiply-adds
// (dot, convert, scale, add) plus the per-block decoding of every row for every token
// tile. Here tokens sit in the int32 lanes instead: the activations of P::kFloats tokens
// are interleaved per 4 bytes ([block][quad q][token][4 levels]), so one VNNI instruction
// multiplies 4 weight bytes (broadcast) by 4 levels of every token, eight of them finish
// a block for a whole vector of tokens, and the block's scales are applied once per
// (row, token vector). Each thread decodes kPanelRows weight rows at a time into signed
// levels with per-block scales (the panel), which then meet every token of the call.
//
// Activations are the same per-block 8-bit quantisation as the dot-product kernels
// (q8_prepare, levels + 128 as unsigned bytes), so both give the same integer block sums;
// the +128 is cancelled by starting each block's sum at -128 * sum(weight levels).

// GCC 12's AVX-512 intrinsic headers build "undefined" vectors by self-initialisation,
// which -Wuninitialized flags once inlined here; the pragma must precede <immintrin.h>.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "tensor/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <cstring>
#include <vector>

#include "tensor/blocks.h"
#include "tensor/matmul_avx2.h"
#include "tensor/matmul_legacy_avx2.h"

namespace rwkv::matmul_detail {
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

// kPanelRows weight rows decoded for the micro-kernel: row i's signed levels, and per block
// b the sum's start -128 * sum(levels), the scale d and the min m (value = d * level + m).
struct Panel {
  std::vector<int8_t> levels;  // [kPanelRows][cols]
  std::vector<int32_t> start;  // [kPanelRows][nb]
  std::vector<float> d, m;     // [kPanelRows][nb]
};

template <class Decode>
struct Int8Gemm {
  using Block = typename Decode::Block;

  static void decode_row(const Block* row, int64_t nb, int8_t* levels, int32_t* start, float* d, float* m) {
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i lv = Decode::template levels<Avx2>(row + b);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(levels + b * QK4_0), lv);
      // Sums of the biased bytes (level + 128) in four 64-bit lanes.
      const __m256i sums = _mm256_sad_epu8(_mm256_xor_si256(lv, _mm256_set1_epi8(char(0x80))), _mm256_setzero_si256());
      const __m128i pair = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
      const int32_t sum = int32_t(_mm_cvtsi128_si64(_mm_add_epi64(pair, _mm_unpackhi_epi64(pair, pair)))) - 128 * QK4_0;
      start[b] = -128 * sum;
      d[b] = f16_scalar(row[b].d);
      if constexpr (Decode::kHasMin)
        m[b] = f16_scalar(row[b].m);
      else
        m[b] = 0.0f;
    }
  }

  // out[i * V * kGroupTokens + v * kGroupTokens + k] = row i . token k of group v, for the R
  // panel rows and the V token groups starting at act.
  template <int R, int V>
  static void micro(const Panel& panel, int64_t cols, const uint8_t* act, size_t gbytes, float* out) {
    const int64_t nb = cols / QK4_0;
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
      P::I p[R][V];
      for (int i = 0; i < R; ++i) {
        const P::I start = P::set1_32(panel.start[size_t(i * nb + b)]);
        for (int v = 0; v < V; ++v) p[i][v] = start;
      }
      for (int64_t q = 0; q < kQuads; ++q) {
        P::I a[V];
        for (int v = 0; v < V; ++v) a[v] = P::load(levels[v] + (b * kQuads + q) * kGroupTokens * 4);
        for (int i = 0; i < R; ++i) {
          int32_t quad;
          memcpy(&quad, panel.levels.data() + i * cols + b * QK4_0 + 4 * q, 4);
          const P::I w = P::set1_32(quad);
          for (int v = 0; v < V; ++v) p[i][v] = P::dot_u8s8(p[i][v], a[v], w);
        }
      }
      for (int v = 0; v < V; ++v) {
        const P::F dav = P::load(da[v] + b * kGroupTokens);
        for (int i = 0; i < R; ++i)
          acc[i][v] = P::fma(P::cvt(p[i][v]), P::mul(dav, P::set1(panel.d[size_t(i * nb + b)])), acc[i][v]);
        if constexpr (Decode::kHasMin) {
          // The m * sum(x) term: s = d_a * sum(a) per activation block.
          const P::F sav = P::load(da[v] + (nb + b) * kGroupTokens);
          for (int i = 0; i < R; ++i) acc[i][v] = P::fma(P::set1(panel.m[size_t(i * nb + b)]), sav, acc[i][v]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v) P::store(out + (i * V + v) * kGroupTokens, acc[i][v]);
  }

  using MicroFn = void (*)(const Panel&, int64_t, const uint8_t*, size_t, float*);
  template <int R, size_t... V>
  static constexpr std::array<MicroFn, sizeof...(V)> micro_row(std::index_sequence<V...>) {
    return {&micro<R, int(V) + 1>...};
  }
  template <size_t... R>
  static constexpr std::array<std::array<MicroFn, kVecs>, sizeof...(R)> micro_table(std::index_sequence<R...>) {
    return {micro_row<int(R) + 1>(std::make_index_sequence<kVecs>{})...};
  }

  static void run(const Operands& op, int64_t r0, int64_t r1, int64_t T) {
    static constexpr auto table = micro_table(std::make_index_sequence<kPanelRows>{});
    const int64_t cols = op.cols, nb = cols / QK4_0, groups = token_groups(T);
    const size_t gbytes = group_bytes(nb);
    thread_local Panel panel;
    panel.levels.resize(size_t(kPanelRows * cols));
    panel.start.resize(size_t(kPanelRows * nb));
    panel.d.resize(size_t(kPanelRows * nb));
    panel.m.resize(size_t(kPanelRows * nb));
    alignas(64) float out[kPanelRows * kVecs * kGroupTokens];
    for (int64_t r = r0; r < r1; r += kPanelRows) {
      const int R = int(std::min<int64_t>(kPanelRows, r1 - r));
      for (int i = 0; i < R; ++i) {
        const auto* row = reinterpret_cast<const Block*>(op.w + size_t(r + i) * op.w_stride);
        const size_t at = size_t(i * nb);
        decode_row(row, nb, panel.levels.data() + i * cols, &panel.start[at], &panel.d[at], &panel.m[at]);
      }
      for (int64_t g = 0; g < groups; g += kVecs) {
        const int V = int(std::min<int64_t>(kVecs, groups - g));
        table[size_t(R - 1)][size_t(V - 1)](panel, cols, op.act + size_t(g) * gbytes, gbytes, out);
        // Token-major: each token's R outputs are adjacent in y.
        const int64_t t0 = g * kGroupTokens, n = std::min<int64_t>(V * kGroupTokens, T - t0);
        for (int64_t k = 0; k < n; ++k) {
          float* yk = op.y + size_t(t0 + k) * size_t(op.rows) + size_t(r);
          for (int i = 0; i < R; ++i) yk[i] = out[i * V * kGroupTokens + k];
        }
      }
    }
  }
};

template <class Decode>
constexpr Kernel int8_kernel{&int8_act_bytes, &int8_prepare, &Int8Gemm<Decode>::run, kPanelRows};

}  // namespace

const Kernel* simd_kernel_gemm_int8(TensorType type) {
  if constexpr (!kHaveVnni) return nullptr;  // without VNNI, Q8_0's pair sums would saturate
  switch (type) {
    case TensorType::Q4_0:
      return &int8_kernel<DecodeQ4_0>;
    case TensorType::Q4_1:
      return &int8_kernel<DecodeQ4_1>;
    case TensorType::Q5_0:
      return &int8_kernel<DecodeQ5_0>;
    case TensorType::Q5_1:
      return &int8_kernel<DecodeQ5_1>;
    case TensorType::Q8_0:
      return &int8_kernel<DecodeQ8_0>;
    default:
      return nullptr;
  }
}

}  // namespace rwkv::matmul_detail

#endif  // __AVX2__ && __FMA__ && __F16C__
