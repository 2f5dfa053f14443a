// SIMD matmul kernels (AVX2, or AVX-512 where built for it; see matmul_avx2.h) for float
// weights (F32, F16, BF16: dot products of converted weights with the float inputs) and the
// legacy 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: integer dot products
// against activations quantised to 8 bits per 32-element block). Also picks the kernel
// for every type and token count (simd_kernel).

#include "tensor/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <cstring>

#include "tensor/blocks.h"
#include "tensor/matmul_avx2.h"
#include "tensor/matmul_legacy_avx2.h"

namespace rwkv::matmul_detail {

size_t q8_act_bytes(int64_t cols) { return size_t(cols) + size_t(cols / QK4_0) * 2 * sizeof(float); }

void q8_prepare(const float* x, int64_t cols, uint8_t* act) {
  const int64_t nb = cols / QK4_0;
  float* d_out = reinterpret_cast<float*>(act + cols);
  float* s_out = d_out + nb;
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * QK4_0;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[k]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    const float max_abs = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    // d = amax / 127; levels round(x * 127 / amax) to nearest even; amax = 0 gives zeros.
    const float d = max_abs / 127.0f;
    const __m256 inv = _mm256_set1_ps(max_abs > 0.0f ? 127.0f / max_abs : 0.0f);
    __m256i q[4];
    __m256i sum = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], inv));
      sum = _mm256_add_epi32(sum, q[k]);
    }
    const __m256i levels = pack_i32_to_i8(q[0], q[1], q[2], q[3]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(act + b * QK4_0),
                        _mm256_xor_si256(levels, _mm256_set1_epi8(char(0x80))));
    const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    const __m128i s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    const int total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
    d_out[b] = d;
    s_out[b] = d * float(total);
  }
}

namespace {

// ------------------------------------------------------------------ float weights

struct LoadF32 {
  using Elem = float;
  template <class P>
  static typename P::F vec(const float* p) {
    return P::load(p);
  }
  static float scalar(const float* p) { return *p; }
};
struct LoadF16 {
  using Elem = uint16_t;
  template <class P>
  static typename P::F vec(const uint16_t* p) {
    return P::load_f16(p);
  }
  static float scalar(const uint16_t* p) { return f16_scalar(*p); }
};
struct LoadBF16 {
  using Elem = uint16_t;
  template <class P>
  static typename P::F vec(const uint16_t* p) {
    return P::load_bf16(p);
  }
  static float scalar(const uint16_t* p) {
    const uint32_t bits = uint32_t(*p) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
  }
};

// y = W x with W converted to float P::kFloats columns at a time; x is the float input.
template <class P, class Load>
struct FloatFamily {
  static constexpr int kRows = 4;
  static constexpr int kTokens = kVectorRegisters == 32 ? 4 : 2;

  template <int R, int TT>
  static void tile(const Operands& op, int64_t r, int64_t t) {
    using Elem = typename Load::Elem;
    const int64_t cols = op.cols;
    const Elem* w[R];
    const float* x[TT];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const Elem*>(op.w + size_t(r + i) * op.w_stride);
    for (int j = 0; j < TT; ++j) x[j] = reinterpret_cast<const float*>(op.act) + (t + j) * cols;
    typename P::F acc[R][TT];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < TT; ++j) acc[i][j] = P::fzero();
    int64_t c = 0;
    for (; c + P::kFloats <= cols; c += P::kFloats) {
      typename P::F wv[R];
      for (int i = 0; i < R; ++i) {
        if (op.prefetch) prefetch_ahead(w[i] + c);
        wv[i] = Load::template vec<P>(w[i] + c);
      }
      for (int j = 0; j < TT; ++j) {
        const typename P::F xv = P::load(x[j] + c);
        for (int i = 0; i < R; ++i) acc[i][j] = P::fma(wv[i], xv, acc[i][j]);
      }
    }
    for (int j = 0; j < TT; ++j) {
      for (int i = 0; i < R; ++i) {
        float sum = P::hsum(acc[i][j]);
        for (int64_t k = c; k < cols; ++k) sum += Load::scalar(w[i] + k) * x[j][k];
        op.y[size_t(t + j) * size_t(op.rows) + size_t(r + i)] = sum;
      }
    }
  }
};

// ------------------------------------------------------------------ legacy blocks

template <class Decode>
struct LegacyFamily {
  using Block = typename Decode::Block;
  // Without VNNI, full-range Q8_0 levels would saturate the int16 pair sums against
  // biased activations: those use the sign trick on signed activations instead.
  static constexpr bool kSignTrick = Decode::kWide && !kHaveVnni;
  static constexpr int kRows = kVectorRegisters == 32 ? 4 : 2;
  static constexpr int kTokens = kVectorRegisters == 32 ? 4 : 2;

  // Adds blocks [b, b + P::kBytes / 32) of rows w[] against tokens a[] to acc.
  template <class P, int R, int TT>
  static void accumulate(const Block* const* w, const uint8_t* const* a, const float* const* ad, int64_t b,
                         bool prefetch, typename P::F (&acc)[R][TT]) {
    constexpr int kBlocks = P::kBytes / QK4_0;
    typename P::I wq[R], start[R];
    typename P::F dw[R];
    for (int i = 0; i < R; ++i) {
      if (prefetch) prefetch_ahead(w[i] + b, kBlocks * sizeof(Block));
      wq[i] = Decode::template levels<P>(w[i] + b);
      float d[kBlocks];
      for (int k = 0; k < kBlocks; ++k) d[k] = f16_scalar(w[i][b + k].d);
      dw[i] = P::per_block_floats(d);
      // Activations carry +128: start each dot at -128 * sum(levels) to cancel it.
      start[i] = kSignTrick ? P::izero() : P::sub32(P::izero(), P::dot_u8s8(P::izero(), P::set1_8(char(0x80)), wq[i]));
    }
    for (int j = 0; j < TT; ++j) {
      const typename P::I av = P::load(a[j] + b * QK4_0);
      const typename P::F da = P::per_block_floats(ad[j] + b);
      for (int i = 0; i < R; ++i) {
        typename P::I p;
        if constexpr (kSignTrick) {
          const __m256i signed_a = _mm256_xor_si256(av, _mm256_set1_epi8(char(0x80)));
          p = P::dot_u8s8(start[i], _mm256_sign_epi8(wq[i], wq[i]), _mm256_sign_epi8(signed_a, wq[i]));
        } else {
          p = P::dot_u8s8(start[i], av, wq[i]);
        }
        acc[i][j] = P::fma(P::cvt(p), P::mul(dw[i], da), acc[i][j]);
      }
    }
  }

  template <int R, int TT>
  static void tile(const Operands& op, int64_t r, int64_t t) {
    const int64_t nb = op.cols / QK4_0;
    const Block* w[R];
    const uint8_t* a[TT];
    const float* ad[TT];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const Block*>(op.w + size_t(r + i) * op.w_stride);
    for (int j = 0; j < TT; ++j) {
      a[j] = op.act + size_t(t + j) * q8_act_bytes(op.cols);
      ad[j] = reinterpret_cast<const float*>(a[j] + op.cols);
    }
    // Whole groups of Wide::kBytes / 32 blocks, then single blocks at 256 bits.
    constexpr int64_t kGroup = Wide::kBytes / QK4_0;
    typename Wide::F acc[R][TT];
    Avx2::F tail[R][TT];
    for (int i = 0; i < R; ++i) {
      for (int j = 0; j < TT; ++j) {
        acc[i][j] = Wide::fzero();
        tail[i][j] = Avx2::fzero();
      }
    }
    int64_t b = 0;
    for (; b + kGroup <= nb; b += kGroup) accumulate<Wide, R, TT>(w, a, ad, b, op.prefetch, acc);
    for (; b < nb; ++b) accumulate<Avx2, R, TT>(w, a, ad, b, op.prefetch, tail);
    for (int j = 0; j < TT; ++j) {
      for (int i = 0; i < R; ++i) {
        float sum = Wide::hsum(acc[i][j]) + Avx2::hsum(tail[i][j]);
        if constexpr (Decode::kHasMin) {
          // The m * sum(x) term: s = d_a * sum(a) per activation block.
          const float* as = ad[j] + nb;
          for (int64_t k = 0; k < nb; ++k) sum += f16_scalar(w[i][k].m) * as[k];
        }
        op.y[size_t(t + j) * size_t(op.rows) + size_t(r + i)] = sum;
      }
    }
  }
};

template <class Family>
constexpr Kernel float_kernel{[](int64_t, int64_t) { return size_t(0); }, nullptr, &run_tiles<Family>, Family::kRows,
                              0};
using Q8Activations = PerTokenActivations<&q8_act_bytes, &q8_prepare>;
template <class Family>
constexpr Kernel legacy_kernel{&Q8Activations::bytes, &Q8Activations::prepare, &run_tiles<Family>, Family::kRows,
                               QK4_0};

// From this many tokens, float weights use the blocked outer-product kernel, and legacy
// block types the int8 one (where the CPU has VNNI).
constexpr int64_t kGemmMinTokens = 24;
constexpr int64_t kInt8GemmMinTokens = 12;

}  // namespace

const Kernel* simd_kernel(TensorType type, int64_t T) {
  if (T >= kGemmMinTokens) {
    if (const Kernel* gemm = simd_kernel_gemm(type)) return gemm;
  }
  if (T >= kInt8GemmMinTokens) {
    if (const Kernel* gemm = simd_kernel_gemm_int8(type)) return gemm;
  }
  switch (type) {
    case TensorType::F32:
      return &float_kernel<FloatFamily<Wide, LoadF32>>;
    case TensorType::F16:
      return &float_kernel<FloatFamily<Wide, LoadF16>>;
    case TensorType::BF16:
      return &float_kernel<FloatFamily<Wide, LoadBF16>>;
    case TensorType::Q4_0:
      return &legacy_kernel<LegacyFamily<DecodeQ4_0>>;
    case TensorType::Q4_1:
      return &legacy_kernel<LegacyFamily<DecodeQ4_1>>;
    case TensorType::Q5_0:
      return &legacy_kernel<LegacyFamily<DecodeQ5_0>>;
    case TensorType::Q5_1:
      return &legacy_kernel<LegacyFamily<DecodeQ5_1>>;
    case TensorType::Q8_0:
      return &legacy_kernel<LegacyFamily<DecodeQ8_0>>;
    default:
      return simd_kernel_k(type);
  }
}

}  // namespace rwkv::matmul_detail

#endif  // __AVX2__ && __FMA__ && __F16C__
