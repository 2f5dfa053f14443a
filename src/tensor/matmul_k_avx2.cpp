// SIMD matmul kernels (AVX2, or AVX-512 where built for it; see matmul_avx2.h) for the
// k-quant weight types (Q4_K, Q5_K, Q6_K): activations are quantised to Q8_K (spec §4.4)
// once per call and each super-block's dot product is summed in int32 with the 6-/8-bit
// sub-block scales applied by madd, then scaled once in float.

#include "tensor/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "tensor/blocks.h"
#include "tensor/matmul_avx2.h"

namespace rwkv::matmul_detail {
namespace {

// One token's Q8_K activations: [cols int8 levels][nb floats d][nb x 16 int16 bsums],
// where bsums[16 b + i] = sum of levels 256 b + 16 i .. + 16.
size_t q8k_act_bytes(int64_t cols) {
  const size_t nb = size_t(cols / QK_K);
  return size_t(cols) + nb * (sizeof(float) + 16 * sizeof(int16_t));
}

void q8k_prepare(const float* x, int64_t cols, uint8_t* act) {
  const int64_t nb = cols / QK_K;
  auto* levels = reinterpret_cast<int8_t*>(act);
  float* d_out = reinterpret_cast<float*>(act + cols);
  auto* bsums = reinterpret_cast<int16_t*>(d_out + nb);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * QK_K;
    __m256 vmax = _mm256_loadu_ps(xb), vmin = vmax;
    for (int k = 8; k < QK_K; k += 8) {
      const __m256 v = _mm256_loadu_ps(xb + k);
      vmax = _mm256_max_ps(vmax, v);
      vmin = _mm256_min_ps(vmin, v);
    }
    float lanes_max[8], lanes_min[8];
    _mm256_storeu_ps(lanes_max, vmax);
    _mm256_storeu_ps(lanes_min, vmin);
    const float hi = *std::max_element(lanes_max, lanes_max + 8), lo = *std::min_element(lanes_min, lanes_min + 8);
    // The element of largest magnitude with its sign; iscale = -127 / xm (spec §4.4).
    const float xm = hi >= -lo ? hi : lo;
    if (xm == 0.0f) {
      memset(levels + b * QK_K, 0, QK_K);
      memset(bsums + 16 * b, 0, 16 * sizeof(int16_t));
      d_out[b] = 0.0f;
      continue;
    }
    const float iscale = -127.0f / xm;
    const __m256 scale = _mm256_set1_ps(iscale);
    for (int g = 0; g < QK_K / 32; ++g) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * g + 8 * k), scale));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(levels + b * QK_K + 32 * g),
                          pack_i32_to_i8(q[0], q[1], q[2], q[3]));
    }
    for (int i = 0; i < 16; ++i) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += levels[b * QK_K + 16 * i + j];
      bsums[16 * b + i] = int16_t(sum);
    }
    d_out[b] = 1.0f / iscale;
  }
}

// Pointers into token t's Q8_K activations.
struct ActQ8K {
  const int8_t* levels;
  const float* d;
  const int16_t* bsums;
};

inline ActQ8K act_q8k(const Operands& op, int64_t t) {
  const uint8_t* base = op.act + size_t(t) * q8k_act_bytes(op.cols);
  const int64_t nb = op.cols / QK_K;
  const auto* d = reinterpret_cast<const float*>(base + op.cols);
  return {reinterpret_cast<const int8_t*>(base), d, reinterpret_cast<const int16_t*>(d + nb)};
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// A super-block format supplies, per policy P: Row<P> (a weight row's decoded super-block
// header), levels() (the unsigned levels of chunk ch: P::kBytes elements in order),
// scales() (int16 multipliers for the maddubs pair sums of that chunk), start() (the int32
// sum to begin from, given the token's bsums) and, where kHasMin, min_sums() (the int32
// lanes of sum(min * bsums) that dmin scales).

// ------------------------------------------------------------------ Q4_K and Q5_K

// 8 sub-blocks of 32 levels with 6-bit scale and min; value = d * scale * level - dmin *
// min. Levels of sub-blocks 2c and 2c + 1 share qs[32c..32c+32) (low, high nibbles); Q5_K
// adds bit j of qh[l] as the fifth bit of element l of sub-block j.
template <bool kFifthBit>
struct AffineK {
  using Block = std::conditional_t<kFifthBit, BlockQ5_K, BlockQ4_K>;
  static constexpr bool kHasMin = true;

  template <class P>
  struct Row {
    typename P::I scales;  // the 16 unpacked bytes (8 scales, 8 mins) in every 128-bit lane
    typename P::I qh;      // Q5_K: the 32 qh bytes in every 256-bit half
  };

  // The 8 scales and 8 mins unpacked as in quant_k.h's unpack_k_scales, on the words
  // A0, A1, A2 of the 12 packed bytes (the 16-byte load also reads 4 qs bytes, unused).
  static __m128i unpack_scales(const Block& blk) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales));
    const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // A0 A2 A1 A2
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // A0 A0 A1 A1
    // low bits: A0 & 63, A2 & 15, A1 & 63, (A2 >> 4) & 15; bits 4-5 from the top bits of A0/A1
    const __m128i low = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i high = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(low, high);
  }

  template <class P>
  static Row<P> begin(const Block& blk) {
    Row<P> row{P::broadcast16(unpack_scales(blk)), P::izero()};
    if constexpr (kFifthBit) {
      if constexpr (P::kBytes == 32) row.qh = load256(blk.qh);
#if defined(RWKV_MATMUL_AVX512)
      else
        row.qh = _mm512_broadcast_i64x4(load256(blk.qh));
#endif
    }
    return row;
  }

  template <class P>
  static typename P::I levels(const Block& blk, const Row<P>& row, int ch) {
    const typename P::I nibble = P::set1_8(0x0F);
    typename P::I q;
    if constexpr (P::kBytes == 32) {  // chunk = sub-block ch
      const __m256i raw = load256(blk.qs + 32 * (ch / 2));
      q = _mm256_and_si256(ch % 2 ? _mm256_srli_epi16(raw, 4) : raw, nibble);
      if constexpr (kFifthBit)
        q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(row.qh, ch), P::set1_8(1)), 4));
    }
#if defined(RWKV_MATMUL_AVX512)
    else {  // chunk = sub-blocks 2ch (low nibbles) and 2ch + 1 (high nibbles)
      const __m512i raw = _mm512_broadcast_i64x4(load256(blk.qs + 32 * ch));
      const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
      q = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), nibble);
      if constexpr (kFifthBit) {
        const __m512i bit =
            _mm512_inserti64x4(_mm512_set1_epi16(int16_t(2 * ch)), _mm256_set1_epi16(int16_t(2 * ch + 1)), 1);
        q = _mm512_or_si512(q, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(row.qh, bit), P::set1_8(1)), 4));
      }
    }
#endif
    return q;
  }

  template <class P>
  static typename P::I scales(const Row<P>& row, int ch) {
    if constexpr (P::kBytes == 32)
      return P::shuffle(row.scales, P::i16_from_byte({ch, ch}));
    else
      return P::shuffle(row.scales, P::i16_from_byte({2 * ch, 2 * ch, 2 * ch + 1, 2 * ch + 1}));
  }

  template <class P>
  static typename P::I start(const Row<P>&, const int16_t*) {
    return P::izero();
  }

  // int32 lanes summing min(j) * (bsums 2j + 2j + 1) over the 8 sub-blocks j.
  template <class P>
  static __m256i min_sums(const Row<P>& row, const int16_t* bsums) {
    // int16 lane k (of 16) takes min k / 2, stored at byte 8 + k / 2 of each 128-bit lane.
    const __m256i control = _mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1,  //
                                             12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1);
    __m256i scales;
    if constexpr (P::kBytes == 32)
      scales = row.scales;
    else
      scales = _mm512_castsi512_si256(row.scales);
    return _mm256_madd_epi16(_mm256_shuffle_epi8(scales, control), load256(bsums));
  }
};

// ------------------------------------------------------------------ Q6_K

// 16 sub-blocks of 16 levels 0..63 (value = d * scale * (level - 32)) with int8 scales.
// Group g of 32 elements (half n = g / 4, k = g % 4) takes nibble k / 2 of
// ql[64n + 32 (k % 2) + l] and bits 2k..2k+1 of qh[32n + l]; its scales are 2g and 2g + 1.
struct Q6K {
  using Block = BlockQ6_K;
  static constexpr bool kHasMin = false;

  template <class P>
  struct Row {
    __m256i scales16;         // the 16 scales as int16
    typename P::I source[2];  // what scales() shuffles from
  };

  template <class P>
  static Row<P> begin(const Block& blk) {
    Row<P> row;
    row.scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales)));
    if constexpr (P::kBytes == 32) {
      // scales 8n..8n+7 in both 128-bit lanes, for half n
      row.source[0] = _mm256_permute2x128_si256(row.scales16, row.scales16, 0x00);
      row.source[1] = _mm256_permute2x128_si256(row.scales16, row.scales16, 0x11);
    } else {
      row.source[0] = row.source[1] = P::widen(row.scales16);
    }
    return row;
  }

  template <class P>
  static typename P::I levels(const Block& blk, const Row<P>&, int ch) {
    const typename P::I nibble = P::set1_8(0x0F), two_bits = P::set1_8(0x30);
    if constexpr (P::kBytes == 32) {  // chunk = group ch
      const int n = ch / 4, k = ch % 4;
      const __m256i ql = load256(blk.ql + 64 * n + 32 * (k % 2));
      const __m256i qh = load256(blk.qh + 32 * n);
      const __m256i low = _mm256_and_si256(k / 2 ? _mm256_srli_epi16(ql, 4) : ql, nibble);
      // bits 2k..2k+1 of qh moved to bits 4..5
      const __m256i high =
          _mm256_and_si256(k < 2 ? _mm256_slli_epi16(qh, 4 - 2 * k) : _mm256_srli_epi16(qh, 2 * k - 4), two_bits);
      return _mm256_or_si256(low, high);
    }
#if defined(RWKV_MATMUL_AVX512)
    else {  // chunk = groups 2ch (k even) and 2ch + 1 of half ch / 2
      const int n = ch / 2, k = 2 * (ch % 2);
      const __m512i ql = _mm512_loadu_si512(blk.ql + 64 * n);
      const __m512i low = _mm512_and_si512(k ? _mm512_srli_epi16(ql, 4) : ql, nibble);
      const __m512i qh = _mm512_broadcast_i64x4(load256(blk.qh + 32 * n));
      // group k: bits 2k..2k+1 to 4..5; group k + 1: bits 2k+2..2k+3 to 4..5
      const __m512i high =
          k == 0 ? _mm512_sllv_epi16(qh, _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1))
                 : _mm512_srlv_epi16(qh, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1));
      return _mm512_or_si512(low, _mm512_and_si512(high, two_bits));
    }
#endif
  }

  template <class P>
  static typename P::I scales(const Row<P>& row, int ch) {
    if constexpr (P::kBytes == 32) {
      // int16 lanes of the low 128 bits take scale 2k of half n, the high ones 2k + 1.
      const int k = ch % 4;
      return _mm256_shuffle_epi8(
          row.source[ch / 4],
          _mm256_setr_epi8(4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1,
                           4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 2,
                           4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2,
                           4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3));
    }
#if defined(RWKV_MATMUL_AVX512)
    else {
      // 128-bit lane m covers elements 64ch + 16m.. : scale 4ch + m
      const __m512i index = _mm512_inserti64x4(
          _mm512_castsi256_si512(
              _mm256_setr_m128i(_mm_set1_epi16(int16_t(4 * ch)), _mm_set1_epi16(int16_t(4 * ch + 1)))),
          _mm256_setr_m128i(_mm_set1_epi16(int16_t(4 * ch + 2)), _mm_set1_epi16(int16_t(4 * ch + 3))), 1);
      return _mm512_permutexvar_epi16(index, row.source[0]);
    }
#endif
  }

  // Levels are stored + 32: begin from -32 * sum(scale * bsum) to cancel that.
  template <class P>
  static typename P::I start(const Row<P>& row, const int16_t* bsums) {
    const __m256i bias = _mm256_madd_epi16(row.scales16, load256(bsums));
    return P::widen(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(bias, 5)));
  }
};

// ------------------------------------------------------------------ the tile

template <class P, class Format>
struct KQuantFamily {
  using Block = typename Format::Block;
  static constexpr int kRows = kVectorRegisters == 32 ? 2 : 1;
  static constexpr int kTokens = 3;
  static constexpr int kChunks = QK_K / P::kBytes;

  template <int R, int TT>
  static void tile(const Operands& op, int64_t r, int64_t t) {
    using I = typename P::I;
    const int64_t nb = op.cols / QK_K;
    const Block* w[R];
    ActQ8K a[TT];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const Block*>(op.w + size_t(r + i) * op.w_stride);
    for (int j = 0; j < TT; ++j) a[j] = act_q8k(op, t + j);
    typename P::F acc[R][TT];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < TT; ++j) acc[i][j] = P::fzero();
    for (int64_t b = 0; b < nb; ++b) {
      typename Format::template Row<P> row[R];
      I isum[R][TT];
      for (int i = 0; i < R; ++i) {
        if (op.prefetch) prefetch_ahead(w[i] + b, sizeof(Block));
        row[i] = Format::template begin<P>(w[i][b]);
        for (int j = 0; j < TT; ++j) isum[i][j] = Format::template start<P>(row[i], a[j].bsums + 16 * b);
      }
      for (int ch = 0; ch < kChunks; ++ch) {
        I q[R], s[R];
        for (int i = 0; i < R; ++i) {
          q[i] = Format::template levels<P>(w[i][b], row[i], ch);
          s[i] = Format::template scales<P>(row[i], ch);
        }
        for (int j = 0; j < TT; ++j) {
          const I av = P::load(a[j].levels + b * QK_K + ch * P::kBytes);
          for (int i = 0; i < R; ++i) isum[i][j] = P::add32(isum[i][j], P::madd(P::maddubs(q[i], av), s[i]));
        }
      }
      // acc += da * (d * isum - dmin * min_sums)
      typename P::F d[R], dmin[R];
      for (int i = 0; i < R; ++i) {
        d[i] = P::set1(f16_scalar(w[i][b].d));
        if constexpr (Format::kHasMin) dmin[i] = P::set1(f16_scalar(w[i][b].dmin));
      }
      for (int j = 0; j < TT; ++j) {
        const typename P::F da = P::set1(a[j].d[b]);
        for (int i = 0; i < R; ++i) {
          typename P::F v = P::mul(P::cvt(isum[i][j]), d[i]);
          if constexpr (Format::kHasMin)
            v = P::fnmadd(P::cvt(P::widen(Format::min_sums(row[i], a[j].bsums + 16 * b))), dmin[i], v);
          acc[i][j] = P::fma(v, da, acc[i][j]);
        }
      }
    }
    for (int j = 0; j < TT; ++j)
      for (int i = 0; i < R; ++i) op.y[size_t(t + j) * size_t(op.rows) + size_t(r + i)] = P::hsum(acc[i][j]);
  }
};

using Q8KActivations = PerTokenActivations<&q8k_act_bytes, &q8k_prepare>;
template <class Family>
constexpr Kernel k_kernel{&Q8KActivations::bytes, &Q8KActivations::prepare, &run_tiles<Family>, Family::kRows, QK_K};

}  // namespace

const Kernel* simd_kernel_k(TensorType type) {
  switch (type) {
    case TensorType::Q4_K:
      return &k_kernel<KQuantFamily<Wide, AffineK<false>>>;
    case TensorType::Q5_K:
      return &k_kernel<KQuantFamily<Wide, AffineK<true>>>;
    case TensorType::Q6_K:
      return &k_kernel<KQuantFamily<Wide, Q6K>>;
    default:
      return nullptr;
  }
}

}  // namespace rwkv::matmul_detail

#endif  // __AVX2__ && __FMA__ && __F16C__
