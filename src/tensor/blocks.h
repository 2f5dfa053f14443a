// Quantised block layouts of the GGUF tensor types (spec §4.2). This header is the single
// source of truth for every backend: CPU code and CUDA kernels include it; the Vulkan
// shaders read the byte offsets generated from it (a test checks the two agree).
// All multi-byte fields are little-endian; f16 fields are stored as raw uint16_t bits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rwkv {

constexpr int QK4_0 = 32;  // elements per legacy block
constexpr int QK_K = 256;  // elements per k-quant super-block
constexpr int K_SCALE_SIZE = 12;

struct BlockQ4_0 {
  uint16_t d;             // scale (f16)
  uint8_t qs[QK4_0 / 2];  // low nibbles: elements 0..15, high nibbles: 16..31
};
struct BlockQ4_1 {
  uint16_t d, m;  // scale and minimum (f16)
  uint8_t qs[QK4_0 / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // fifth bits, a little-endian u32: bit j for element j
  uint8_t qs[QK4_0 / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK4_0 / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK4_0];
};
struct BlockQ8_1 {
  uint16_t d, s;  // scale and d * sum(qs) (f16)
  int8_t qs[QK4_0];
};
struct BlockQ2_K {
  uint8_t scales[QK_K / 16];
  uint8_t qs[QK_K / 4];
  uint16_t d, dmin;
};
struct BlockQ3_K {
  uint8_t hmask[QK_K / 8];
  uint8_t qs[QK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];  // 8 six-bit scales and 8 six-bit mins, packed (spec §4.3)
  uint8_t qs[QK_K / 2];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;
};
struct BlockQ8_K {
  float d;  // may be negative
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

}  // namespace rwkv
