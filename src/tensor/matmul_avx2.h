// Internal to src/tensor: SIMD policies shared by the matmul kernels, and the tile driver
// that walks a row range in (rows x tokens) tiles. Include only where __AVX2__, __FMA__
// and __F16C__ are defined.
//
// Kernels are written once against a policy P: Avx2 (256-bit) always, Avx512 (512-bit;
// needs AVX-512 F/BW/DQ/VL and VNNI) where the build targets it. `Wide` is the widest one.
#pragma once

// GCC 12's AVX-512 intrinsic headers build "undefined" vectors by self-initialisation, which
// -Wuninitialized flags once inlined into the kernels; the pragma must precede <immintrin.h>
// and holds for the rest of each file that includes this one.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "tensor/matmul_kernels.h"

namespace rwkv::matmul_detail {

// With AVX-512VL the compiler can use 32 vector registers; tiles grow to use them.
#if defined(__AVX512VL__)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif

// Whether u8 x s8 dot products accumulate in int32 without int16 saturation (VNNI).
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#define RWKV_MATMUL_VNNI 1
constexpr bool kHaveVnni = true;
#else
constexpr bool kHaveVnni = false;
#endif

inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

struct Avx2 {
  using F = __m256;   // 8 floats
  using I = __m256i;  // 32 bytes
  static constexpr int kBytes = 32, kFloats = 8;

  static F fzero() { return _mm256_setzero_ps(); }
  static I izero() { return _mm256_setzero_si256(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a * b
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F cvt(I v) { return _mm256_cvtepi32_ps(v); }
  static float hsum(F v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static F load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }

  static I load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static I set1_8(char v) { return _mm256_set1_epi8(v); }
  static I set1_32(int32_t v) { return _mm256_set1_epi32(v); }
  static I add32(I a, I b) { return _mm256_add_epi32(a, b); }
  static I sub32(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I sub8(I a, I b) { return _mm256_sub_epi8(a, b); }
  static I and_(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_(I a, I b) { return _mm256_or_si256(a, b); }
  static I maddubs(I u, I s) { return _mm256_maddubs_epi16(u, s); }
  static I madd(I a, I b) { return _mm256_madd_epi16(a, b); }
  // acc + per-int32-lane sums of four u8 x s8 products. Without VNNI the int16 pair sums
  // saturate past 32767: callers keep u <= 255 with |s| <= 64, or u <= 128 with |s| <= 127.
  static I dot_u8s8(I acc, I u, I s) {
#if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
  }
  // v in every 128-bit lane.
  static I broadcast16(__m128i v) { return _mm256_broadcastsi128_si256(v); }
  static I shuffle(I v, I control) { return _mm256_shuffle_epi8(v, control); }
  static I widen(__m256i v) { return v; }
  // Control bytes for shuffle(): every int16 lane of 128-bit lane m takes byte index[m]
  // of its lane zero-extended.
  static I i16_from_byte(const std::array<int, 2>& index) {
    return _mm256_setr_m128i(_mm_set1_epi16(int16_t(0x8000 | index[0])), _mm_set1_epi16(int16_t(0x8000 | index[1])));
  }
  // 8 lanes per block, each block's lanes set to v[block].
  static F per_block_floats(const float* v) { return _mm256_set1_ps(v[0]); }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)
#define RWKV_MATMUL_AVX512 1
struct Avx512 {
  using F = __m512;   // 16 floats
  using I = __m512i;  // 64 bytes
  static constexpr int kBytes = 64, kFloats = 16;

  static F fzero() { return _mm512_setzero_ps(); }
  static I izero() { return _mm512_setzero_si512(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F cvt(I v) { return _mm512_cvtepi32_ps(v); }
  static float hsum(F v) { return Avx2::hsum(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1))); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }

  static I load(const void* p) { return _mm512_loadu_si512(p); }
  static I set1_8(char v) { return _mm512_set1_epi8(v); }
  static I set1_32(int32_t v) { return _mm512_set1_epi32(v); }
  static I add32(I a, I b) { return _mm512_add_epi32(a, b); }
  static I sub32(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I sub8(I a, I b) { return _mm512_sub_epi8(a, b); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I maddubs(I u, I s) { return _mm512_maddubs_epi16(u, s); }
  static I madd(I a, I b) { return _mm512_madd_epi16(a, b); }
  static I dot_u8s8(I acc, I u, I s) { return _mm512_dpbusd_epi32(acc, u, s); }
  static I broadcast16(__m128i v) { return _mm512_broadcast_i32x4(v); }
  static I shuffle(I v, I control) { return _mm512_shuffle_epi8(v, control); }
  static I widen(__m256i v) { return _mm512_zextsi256_si512(v); }
  static I i16_from_byte(const std::array<int, 4>& index) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(Avx2::i16_from_byte({index[0], index[1]})),
                              Avx2::i16_from_byte({index[2], index[3]}), 1);
  }
  static F per_block_floats(const float* v) {
    return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(v[0]), _mm512_set1_ps(v[1]));
  }
};
using Wide = Avx512;
#else
using Wide = Avx2;
#endif

// 32 int32 values (four vectors, in order) rounded into 32 int8 values, in order.
inline __m256i pack_i32_to_i8(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  // The two packs interleave 4-element groups per 128-bit lane; the permute restores order.
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Kernel activation hooks for formats of a fixed number of bytes per token, stored one
// token after another: token t at act + t * TokenBytes(cols).
template <size_t (*TokenBytes)(int64_t), void (*PrepareToken)(const float*, int64_t, uint8_t*)>
struct PerTokenActivations {
  static size_t bytes(int64_t cols, int64_t T) { return TokenBytes(cols) * size_t(T); }
  static void prepare(const float* x, int64_t cols, int64_t, int64_t t0, int64_t t1, uint8_t* act) {
    for (int64_t t = t0; t < t1; ++t) PrepareToken(x + t * cols, cols, act + size_t(t) * TokenBytes(cols));
  }
};

// When few tokens share the weights, decoding streams every weight byte once, mostly from
// DRAM. Hardware prefetchers lose track of the many short row streams when memory is busy,
// so the kernels also prefetch this far ahead of the bytes they read (rows are adjacent).
constexpr size_t kPrefetchBytes = 8192;

inline void prefetch_ahead(const void* p, size_t bytes = 64) {
  for (size_t offset = 0; offset < bytes; offset += 64)
    _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes + offset, _MM_HINT_T0);
}

// A tile computes y for rows [r, r + R) and tokens [t, t + TT).
using TileFn = void (*)(const Operands& op, int64_t r, int64_t t);

template <class Family, int R, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> tile_table(std::index_sequence<I...>) {
  return {&Family::template tile<R, int(I) + 1>...};
}

// The many-token kernels' micro-kernels for every (rows, token vectors) a ragged end can
// need: table[r - 1][v - 1] = &Gemm::micro<r, v> for r <= kRows, v <= kVecs.
template <class Gemm, int R, size_t... V>
constexpr auto micro_row(std::index_sequence<V...>) {
  return std::array{&Gemm::template micro<R, int(V) + 1>...};
}
template <class Gemm, int kRows, int kVecs>
constexpr auto micro_table() {
  return []<size_t... R>(std::index_sequence<R...>) {
    return std::array{micro_row<Gemm, int(R) + 1>(std::make_index_sequence<kVecs>{})...};
  }
  (std::make_index_sequence<kRows>{});
}

// Walks rows [r0, r1) in Family::kRows-row tiles (single rows at the end) and, for each,
// every token in Family::kTokens-token tiles: a tile's weight rows stay in L1 while the
// activations of all tokens stream past them.
template <class Family>
void run_tiles(const Operands& operands, int64_t r0, int64_t r1, int64_t T) {
  static constexpr auto full = tile_table<Family, Family::kRows>(std::make_index_sequence<Family::kTokens>{});
  static constexpr auto single = tile_table<Family, 1>(std::make_index_sequence<Family::kTokens>{});
  Operands op = operands;
  op.prefetch = T <= Family::kTokens;  // one token tile: each weight row is read once
  int64_t r = r0;
  for (; r + Family::kRows <= r1; r += Family::kRows) {
    for (int64_t t = 0; t < T; t += Family::kTokens) full[std::min<int64_t>(Family::kTokens, T - t) - 1](op, r, t);
  }
  for (; r < r1; ++r) {
    for (int64_t t = 0; t < T; t += Family::kTokens) single[std::min<int64_t>(Family::kTokens, T - t) - 1](op, r, t);
  }
}

}  // namespace rwkv::matmul_detail
