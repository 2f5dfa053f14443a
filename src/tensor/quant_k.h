// Internal to src/tensor: the k-quant block converters behind quant.h's dispatch, and the
// Q4_K/Q5_K scale unpacking (matmul_k_avx2.cpp does the same word arithmetic in SIMD).
// `nblocks` counts whole 256-element super-blocks.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace rwkv::quant_detail {

// v rounded to the nearest integer (ties to even, like the SIMD activation quantisers)
// and clamped to [lo, hi] before conversion, so huge values and NaN (-> lo) stay defined.
inline int round_clamped(float v, int lo, int hi) {
  const float r = std::nearbyint(v);
  return r >= float(hi) ? hi : r > float(lo) ? int(r) : lo;
}

// The 8 six-bit scales and 8 six-bit mins of a Q4_K/Q5_K block (spec §4.3 get_scale_min),
// unpacked from its 12 packed bytes: out[0..8) = scales, out[8..16) = mins. Works on the
// three little-endian words A0 = bytes 0-3, A1 = 4-7, A2 = 8-11, one byte lane per index:
//   scales 0-3 = A0 & 63, mins 0-3 = A1 & 63,
//   scales 4-7 = (A2 & 0xF) | (A0 >> 6) << 4, mins 4-7 = (A2 >> 4) | (A1 >> 6) << 4.
inline void unpack_k_scales(const uint8_t packed[12], uint8_t out[16]) {
  uint32_t a[3];
  memcpy(a, packed, 12);
  const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, low2 = 0x03030303u;
  const uint32_t words[4] = {a[0] & low6, (a[2] & low4) | (((a[0] >> 6) & low2) << 4), a[1] & low6,
                             ((a[2] >> 4) & low4) | (((a[1] >> 6) & low2) << 4)};
  memcpy(out, words, 16);
}

void dequantize_q2_k(const void* src, float* dst, int64_t nblocks);
void dequantize_q3_k(const void* src, float* dst, int64_t nblocks);
void dequantize_q4_k(const void* src, float* dst, int64_t nblocks);
void dequantize_q5_k(const void* src, float* dst, int64_t nblocks);
void dequantize_q6_k(const void* src, float* dst, int64_t nblocks);
void dequantize_q8_k(const void* src, float* dst, int64_t nblocks);

void quantize_q4_k(const float* src, void* dst, int64_t nblocks);
void quantize_q5_k(const float* src, void* dst, int64_t nblocks);
void quantize_q6_k(const float* src, void* dst, int64_t nblocks);
void quantize_q8_k(const float* src, void* dst, int64_t nblocks);

}  // namespace rwkv::quant_detail
