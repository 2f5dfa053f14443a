// IEEE binary16 and bfloat16 conversions, usable from host C++ and CUDA device code.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RWKV_HD __host__ __device__
#else
#define RWKV_HD
#endif

namespace rwkv {

RWKV_HD inline float bits_to_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
RWKV_HD inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

// binary16 -> binary32, exact for every input including subnormals, inf and NaN.
RWKV_HD inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  if (exp == 0) {
    // zero or subnormal: man * 2^-24
    float v = float(man) * (1.0f / 16777216.0f);
    return (h & 0x8000) ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

// binary32 -> binary16, round to nearest even; overflow gives inf, NaN stays NaN.
RWKV_HD inline uint16_t f32_to_f16(float f) {
  const uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00);   // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // result is subnormal or zero: value / 2^-24 rounded to nearest even
    const float v = bits_to_f32(abs) * 16777216.0f;
    float r = v;
    // round half to even without relying on the FP environment
    const float fl = float(int32_t(v));
    const float diff = v - fl;
    if (diff > 0.5f || (diff == 0.5f && (int32_t(fl) & 1)))
      r = fl + 1.0f;
    else
      r = fl;
    return uint16_t(sign | uint32_t(r));
  }
  uint32_t mant = abs & 0x7fffff;
  uint32_t exp = (abs >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h += 1;  // may carry into exponent: correct
  return uint16_t(sign | h);
}

RWKV_HD inline float bf16_to_f32(uint16_t b) { return bits_to_f32(uint32_t(b) << 16); }

// binary32 -> bfloat16, round to nearest even; NaN stays NaN.
RWKV_HD inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

}  // namespace rwkv
