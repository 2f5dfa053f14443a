// AVX2 matmul kernels for the k-quant weight types (Q4_K, Q5_K, Q6_K): activations are
// quantised to Q8_K (spec §4.4) once per call and each super-block's dot product is summed
// in int32 with the 6-/8-bit sub-block scales applied by madd, then scaled once in float.
#include "tensor/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "tensor/blocks.h"
#include "tensor/matmul_avx2.h"
#include "tensor/quant_k.h"

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
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(levels + b * QK_K + 32 * g), pack_i32_to_i8(q[0], q[1], q[2], q[3]));
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
  const uint8_t* base = op.act + size_t(t) * op.act_stride;
  const int64_t nb = op.cols / QK_K;
  const auto* d = reinterpret_cast<const float*>(base + op.cols);
  return {reinterpret_cast<const int8_t*>(base), d, reinterpret_cast<const int16_t*>(d + nb)};
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Byte-shuffle control giving every int16 lane the zero-extended byte `index` (< 16) of
// its 128-bit half: control bytes (index, 0x80), and 0x80 selects zero.
inline __m256i broadcast_byte_as_i16(int index) { return _mm256_set1_epi16(int16_t(0x8000 | index)); }

// ------------------------------------------------------------------ Q4_K and Q5_K

// Q4_K and Q5_K: 8 sub-blocks of 32 levels with 6-bit scale and min; value =
// d * scale * level - dmin * min. Level bytes of sub-blocks 2c and 2c + 1 share qs[32c..).
template <bool kFifthBit>
struct AffineKFamily {
  using Block = std::conditional_t<kFifthBit, BlockQ5_K, BlockQ4_K>;
  static constexpr int kRows = kVectorRegisters == 32 ? 2 : 1;
  static constexpr int kTokens = kVectorRegisters == 32 ? 4 : 3;

  template <int R, int TT>
  static void tile(const Operands& op, int64_t r, int64_t t) {
    const int64_t nb = op.cols / QK_K;
    const Block* w[R];
    ActQ8K a[TT];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const Block*>(op.w + size_t(r + i) * op.w_stride);
    for (int j = 0; j < TT; ++j) a[j] = act_q8k(op, t + j);
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    // int16 lane k of either 128-bit half gets min k / 2 (byte 8 + k / 2) in the low half
    // and min 4 + k / 2 in the high half: the mins matching bsums 0..7 and 8..15.
    const __m256i min_control = _mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1,  //
                                                 12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1);
    __m256 acc[R][TT];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < TT; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i scales[R];  // the 16 unpacked bytes (8 scales, 8 mins) in both halves
      __m256i isum[R][TT];
      for (int i = 0; i < R; ++i) {
        alignas(16) uint8_t sm[16];
        quant_detail::unpack_k_scales(w[i][b].scales, sm);
        scales[i] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(sm)));
        for (int j = 0; j < TT; ++j) isum[i][j] = _mm256_setzero_si256();
      }
      for (int c = 0; c < 4; ++c) {
        __m256i q_lo[R], q_hi[R], s_lo[R], s_hi[R];
        for (int i = 0; i < R; ++i) {
          const __m256i raw = load256(w[i][b].qs + 32 * c);
          q_lo[i] = _mm256_and_si256(raw, nibble);
          q_hi[i] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
          if constexpr (kFifthBit) {
            // Fifth bit of sub-block j is bit j of qh[l]; move it to bit 4 of each byte.
            const __m256i qh = load256(w[i][b].qh), one = _mm256_set1_epi8(1);
            const __m256i h_lo = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
            const __m256i h_hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
            q_lo[i] = _mm256_or_si256(q_lo[i], _mm256_slli_epi16(h_lo, 4));
            q_hi[i] = _mm256_or_si256(q_hi[i], _mm256_slli_epi16(h_hi, 4));
          }
          s_lo[i] = _mm256_shuffle_epi8(scales[i], broadcast_byte_as_i16(2 * c));
          s_hi[i] = _mm256_shuffle_epi8(scales[i], broadcast_byte_as_i16(2 * c + 1));
        }
        for (int j = 0; j < TT; ++j) {
          const __m256i a_lo = load256(a[j].levels + b * QK_K + 64 * c);
          const __m256i a_hi = load256(a[j].levels + b * QK_K + 64 * c + 32);
          for (int i = 0; i < R; ++i) {
            const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(q_lo[i], a_lo), s_lo[i]);
            const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(q_hi[i], a_hi), s_hi[i]);
            isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_add_epi32(p_lo, p_hi));
          }
        }
      }
      for (int i = 0; i < R; ++i) {
        const float d = f16_scalar(w[i][b].d), dmin = f16_scalar(w[i][b].dmin);
        const __m256i mins = _mm256_shuffle_epi8(scales[i], min_control);
        for (int j = 0; j < TT; ++j) {
          const float da = a[j].d[b];
          const __m256i msum = _mm256_madd_epi16(mins, load256(a[j].bsums + 16 * b));
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), _mm256_set1_ps(d * da), acc[i][j]);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(-dmin * da), acc[i][j]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < TT; ++j) op.y[size_t(t + j) * size_t(op.rows) + size_t(r + i)] = hsum(acc[i][j]);
  }
};

// ------------------------------------------------------------------ Q6_K

// Q6_K: 16 sub-blocks of 16 levels 0..63 (value level - 32) with int8 scales. Group g of
// 32 elements (half n = g / 4, k = g % 4) takes nibble k / 2 of ql[64n + 32 (k % 2) + l]
// and bits 2k..2k+1 of qh[32n + l]; its two scales are 2g (first 16) and 2g + 1.
struct Q6KFamily {
  static constexpr int kRows = kVectorRegisters == 32 ? 2 : 1;
  static constexpr int kTokens = kVectorRegisters == 32 ? 4 : 3;

  template <int R, int TT>
  static void tile(const Operands& op, int64_t r, int64_t t) {
    const int64_t nb = op.cols / QK_K;
    const BlockQ6_K* w[R];
    ActQ8K a[TT];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const BlockQ6_K*>(op.w + size_t(r + i) * op.w_stride);
    for (int j = 0; j < TT; ++j) a[j] = act_q8k(op, t + j);
    const __m256i nibble = _mm256_set1_epi8(0x0F), two_bits = _mm256_set1_epi8(0x30);
    __m256 acc[R][TT];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < TT; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i isum[R][TT];
      __m256i scales_half[R][2];  // int16 scales 8n..8n+7 in both 128-bit halves
      for (int i = 0; i < R; ++i) {
        const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i][b].scales)));
        scales_half[i][0] = _mm256_permute2x128_si256(s16, s16, 0x00);
        scales_half[i][1] = _mm256_permute2x128_si256(s16, s16, 0x11);
        // Levels are stored + 32: start from -32 * sum(scale * bsum) to cancel that.
        for (int j = 0; j < TT; ++j) {
          const __m256i bias = _mm256_madd_epi16(s16, load256(a[j].bsums + 16 * b));
          isum[i][j] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(bias, 5));
        }
      }
      for (int n = 0; n < 2; ++n) {
        for (int k = 0; k < 4; ++k) {
          // int16 lanes of the low half take scale 2k (of this half's 8), high half 2k + 1.
          const __m256i control = _mm256_setr_epi8(4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k,
                                                   4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1,
                                                   4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,
                                                   4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,
                                                   4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3);
          __m256i q[R], sv[R];
          for (int i = 0; i < R; ++i) {
            const __m256i ql = load256(w[i][b].ql + 64 * n + 32 * (k % 2));
            const __m256i qh = load256(w[i][b].qh + 32 * n);
            const __m256i low = k / 2 ? _mm256_and_si256(_mm256_srli_epi16(ql, 4), nibble) : _mm256_and_si256(ql, nibble);
            // bits 2k..2k+1 of qh moved to bits 4..5
            const __m256i high = k < 2 ? _mm256_and_si256(_mm256_slli_epi16(qh, 4 - 2 * k), two_bits)
                                       : _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k - 4), two_bits);
            q[i] = _mm256_or_si256(low, high);
            sv[i] = _mm256_shuffle_epi8(scales_half[i][n], control);
          }
          for (int j = 0; j < TT; ++j) {
            const __m256i av = load256(a[j].levels + b * QK_K + 32 * (4 * n + k));
            for (int i = 0; i < R; ++i)
              isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_madd_epi16(_mm256_maddubs_epi16(q[i], av), sv[i]));
          }
        }
      }
      for (int i = 0; i < R; ++i) {
        const float d = f16_scalar(w[i][b].d);
        for (int j = 0; j < TT; ++j)
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), _mm256_set1_ps(d * a[j].d[b]), acc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < TT; ++j) op.y[size_t(t + j) * size_t(op.rows) + size_t(r + i)] = hsum(acc[i][j]);
  }
};

template <class Family>
constexpr Kernel k_kernel{&q8k_act_bytes, &q8k_prepare, &run_tiles<Family>, Family::kRows};

}  // namespace

const Kernel* simd_kernel_k(TensorType type) {
  switch (type) {
    case TensorType::Q4_K: return &k_kernel<AffineKFamily<false>>;
    case TensorType::Q5_K: return &k_kernel<AffineKFamily<true>>;
    case TensorType::Q6_K: return &k_kernel<Q6KFamily>;
    default: return nullptr;
  }
}

}  // namespace rwkv::matmul_detail

#endif  // __AVX2__ && __FMA__ && __F16C__
