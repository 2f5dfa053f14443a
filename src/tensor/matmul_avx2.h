// Internal to src/tensor: AVX2 helpers shared by the SIMD matmul kernels, and the tile
// driver that walks a row range in (rows x tokens) tiles. Include only where __AVX2__,
// __FMA__ and __F16C__ are defined.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "tensor/matmul_kernels.h"

namespace rwkv::matmul_detail {

// With AVX-512VL the compiler can use 32 ymm registers; tiles grow to use them.
#if defined(__AVX512VL__)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif

// Whether u8 x s8 dot products accumulate in int32 without int16 saturation (VNNI).
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
constexpr bool kHaveVnni = true;
#else
constexpr bool kHaveVnni = false;
#endif

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

// acc + sum over each 4-byte group of u[i] * s[i] (u unsigned, s signed), per int32 lane.
// Without VNNI the pairwise int16 sums may saturate once |u * s| pairs exceed 32767, so
// callers keep u <= 255 with |s| <= 64, or u <= 128 with |s| <= 127.
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

// 32 int32 values (four vectors, in order) rounded into 32 int8 values, in order.
inline __m256i pack_i32_to_i8(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  // The two packs interleave 4-element groups per 128-bit lane; the permute restores order.
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// A tile computes y for rows [r, r + R) and tokens [t, t + TT).
using TileFn = void (*)(const Operands& op, int64_t r, int64_t t);

template <class Family, int R, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> tile_table(std::index_sequence<I...>) {
  return {&Family::template tile<R, int(I) + 1>...};
}

// Walks rows [r0, r1) in Family::kRows-row tiles (single rows at the end) and, for each,
// every token in Family::kTokens-token tiles: a tile's weight rows stay in L1 while the
// activations of all tokens stream past them.
template <class Family>
void run_tiles(const Operands& op, int64_t r0, int64_t r1, int64_t T) {
  static constexpr auto full = tile_table<Family, Family::kRows>(std::make_index_sequence<Family::kTokens>{});
  static constexpr auto single = tile_table<Family, 1>(std::make_index_sequence<Family::kTokens>{});
  int64_t r = r0;
  for (; r + Family::kRows <= r1; r += Family::kRows) {
    for (int64_t t = 0; t < T; t += Family::kTokens) full[std::min<int64_t>(Family::kTokens, T - t) - 1](op, r, t);
  }
  for (; r < r1; ++r) {
    for (int64_t t = 0; t < T; t += Family::kTokens) single[std::min<int64_t>(Family::kTokens, T - t) - 1](op, r, t);
  }
}

}  // namespace rwkv::matmul_detail
