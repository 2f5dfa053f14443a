// Internal to src/tensor: the legacy 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0) as the SIMD kernels see them: activations quantised to 8 bits per block, and
// decoders that give a block's signed levels. Shared by the dot-product kernels
// (matmul_avx2.cpp) and the many-token int8 kernel (matmul_gemm_int8_avx2.cpp). Include
// only where __AVX2__, __FMA__ and __F16C__ are defined.
#pragma once

#include <cstring>

#include "tensor/blocks.h"
#include "tensor/matmul_avx2.h"

namespace rwkv::matmul_detail {

// Activations of one token, per 32-element block b: level a + 128 as a byte (so it can be
// the unsigned operand of u8 x s8 products), the scale d and s = d * sum(a) (for types
// with a min). Layout: [cols bytes of levels][nb floats d][nb floats s].
size_t q8_act_bytes(int64_t cols);
void q8_prepare(const float* x, int64_t cols, uint8_t* act);

// Decoders give the levels of P::kBytes / 32 consecutive blocks (32 bytes each, in element
// order) as signed bytes: |level| <= 16 except for Q8_0.

inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// The nibbles of each block: low nibbles are elements 0..15, high nibbles 16..31.
template <class P, class Block>
typename P::I unpack_nibbles(const Block* b) {
  if constexpr (P::kBytes == 32) {
    // qs in both halves; the high half shifted by 4 within each dword, then masked
    const __m256i both = _mm256_broadcastsi128_si256(load128(b[0].qs));
    return _mm256_and_si256(_mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), P::set1_8(0x0F));
  }
#if defined(RWKV_MATMUL_AVX512)
  else {
    // 128-bit lanes qs0 qs0 qs1 qs1; lanes 1 and 3 (int16 lanes 8..15, 24..31) shifted by 4
    const __m512i pair = _mm512_zextsi256_si512(_mm256_setr_m128i(load128(b[0].qs), load128(b[1].qs)));
    const __m512i lanes = _mm512_shuffle_i64x2(pair, pair, _MM_SHUFFLE(1, 1, 0, 0));
    return _mm512_and_si512(_mm512_mask_srli_epi16(lanes, 0xFF00FF00u, lanes, 4), P::set1_8(0x0F));
  }
#endif
}

// 0x10 in byte j of each block where bit j of its little-endian qh is set, else 0.
template <class P, class Block>
typename P::I unpack_fifth_bits(const Block* b) {
  if constexpr (P::kBytes == 32) {
    uint32_t qh;
    memcpy(&qh, b[0].qh, 4);
    // Byte j takes byte j / 8 of qh, then tests its bit j % 8.
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(int(qh)), _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, P::set1_8(0x10));
  }
#if defined(RWKV_MATMUL_AVX512)
  else {
    uint32_t qh0, qh1;
    memcpy(&qh0, b[0].qh, 4);
    memcpy(&qh1, b[1].qh, 4);
    return _mm512_maskz_mov_epi8(uint64_t(qh0) | uint64_t(qh1) << 32, P::set1_8(0x10));
  }
#endif
}

template <class P>
typename P::I load_q8_levels(const BlockQ8_0* b) {
  if constexpr (P::kBytes == 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
#if defined(RWKV_MATMUL_AVX512)
  else
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs))),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)), 1);
#endif
}

// Besides levels, each block has a scale d and, for the `_1` types, a min m: value = d *
// level + m.
struct DecodeQ4_0 {
  using Block = BlockQ4_0;
  static constexpr bool kHasMin = false, kWide = false;
  template <class P>
  static typename P::I levels(const Block* b) {
    return P::sub8(unpack_nibbles<P>(b), P::set1_8(8));
  }
};
struct DecodeQ4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kHasMin = true, kWide = false;
  template <class P>
  static typename P::I levels(const Block* b) {
    return unpack_nibbles<P>(b);
  }
};
struct DecodeQ5_0 {
  using Block = BlockQ5_0;
  static constexpr bool kHasMin = false, kWide = false;
  template <class P>
  static typename P::I levels(const Block* b) {
    return P::sub8(P::or_(unpack_nibbles<P>(b), unpack_fifth_bits<P>(b)), P::set1_8(16));
  }
};
struct DecodeQ5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kHasMin = true, kWide = false;
  template <class P>
  static typename P::I levels(const Block* b) {
    return P::or_(unpack_nibbles<P>(b), unpack_fifth_bits<P>(b));
  }
};
struct DecodeQ8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kHasMin = false, kWide = true;  // levels span -128..127
  template <class P>
  static typename P::I levels(const Block* b) {
    return load_q8_levels<P>(b);
  }
};

}  // namespace rwkv::matmul_detail
