// Reference conversions for the float types and the legacy 32-element block types
// (spec §4.3), and the dispatch of quant.h. k-quants live in quant_k.cpp.
#include "tensor/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/half.h"
#include "tensor/blocks.h"
#include "tensor/quant_k.h"

namespace rwkv {
namespace {

// ---- dequantisation of legacy blocks: each writes 32 floats per block ----

void dequantize_q4_0(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ4_0*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK4_0) {
    const float d = f16_to_f32(blocks[b].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = float((blocks[b].qs[j] & 0xF) - 8) * d;
      y[j + 16] = float((blocks[b].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ4_1*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK4_0) {
    const float d = f16_to_f32(blocks[b].d), m = f16_to_f32(blocks[b].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = float(blocks[b].qs[j] & 0xF) * d + m;
      y[j + 16] = float(blocks[b].qs[j] >> 4) * d + m;
    }
  }
}

// The 5-bit values of a Q5_0/Q5_1 block: low nibbles from qs, fifth bits from qh.
void unpack_q5(const uint8_t qh_bytes[4], const uint8_t qs[16], int q[32]) {
  uint32_t qh;
  memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = (qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
    q[j + 16] = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
  }
}

void dequantize_q5_0(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ5_0*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK4_0) {
    const float d = f16_to_f32(blocks[b].d);
    int q[32];
    unpack_q5(blocks[b].qh, blocks[b].qs, q);
    for (int j = 0; j < 32; ++j) y[j] = float(q[j] - 16) * d;
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ5_1*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK4_0) {
    const float d = f16_to_f32(blocks[b].d), m = f16_to_f32(blocks[b].m);
    int q[32];
    unpack_q5(blocks[b].qh, blocks[b].qs, q);
    for (int j = 0; j < 32; ++j) y[j] = float(q[j]) * d + m;
  }
}

template <class Block>
void dequantize_q8(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const Block*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK4_0) {
    const float d = f16_to_f32(blocks[b].d);
    for (int j = 0; j < 32; ++j) y[j] = float(blocks[b].qs[j]) * d;
  }
}

// ---- quantisation of legacy blocks (round to nearest, llama.cpp reference style) ----

// The element of largest magnitude, keeping its sign; 0 for an all-zero block.
float signed_absmax(const float* x, int n) {
  float best = 0.0f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > std::fabs(best)) best = x[j];
  return best;
}

// Quantises x to round(x / d) + offset clamped to [0, qmax], with d the f16-rounded scale.
int quantize_level(float x, float inv_d, int offset, int qmax) {
  return quant_detail::round_clamped(x * inv_d + float(offset), 0, qmax);
}

// Packs 32 levels (< 32) into the nibbles of qs (elements j and j + 16 share byte j) and
// returns their fifth bits as qh (bit j = element j).
uint32_t pack_levels(const int q[32], uint8_t qs[16]) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= uint32_t(q[j] >> 4) << j;
    qh |= uint32_t(q[j + 16] >> 4) << (j + 16);
  }
  return qh;
}

// Symmetric 4/5-bit: d = -absmax / 2^(bits-1) so the extreme value lands on level 0.
template <class Block, int kHalf>
void quantize_symmetric(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<Block*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK4_0) {
    Block& out = blocks[b];
    out.d = f32_to_f16(signed_absmax(x, 32) / -float(kHalf));
    const float d = f16_to_f32(out.d);
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = quantize_level(x[j], inv_d, kHalf, 2 * kHalf - 1);
    const uint32_t qh = pack_levels(q, out.qs);
    if constexpr (kHalf == 16) memcpy(out.qh, &qh, 4);
  }
}

// Asymmetric 4/5-bit: y = q * d + m with m = min(x), d = (max - min) / qmax.
template <class Block, int kMax>
void quantize_affine(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<Block*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK4_0) {
    Block& out = blocks[b];
    const auto [lo, hi] = std::minmax_element(x, x + 32);
    out.d = f32_to_f16((*hi - *lo) / float(kMax));
    out.m = f32_to_f16(*lo);
    const float d = f16_to_f32(out.d), m = f16_to_f32(out.m);
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = quantize_level(x[j] - m, inv_d, 0, kMax);
    const uint32_t qh = pack_levels(q, out.qs);
    if constexpr (kMax == 31) memcpy(out.qh, &qh, 4);
  }
}

// Q8_0 / Q8_1: d = absmax / 127, q = round(x / d); Q8_1 also stores s = d * sum(q).
template <class Block>
void quantize_q8(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<Block*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK4_0) {
    Block& out = blocks[b];
    const float amax = std::fabs(signed_absmax(x, 32));
    const float d = amax / 127.0f;
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      out.qs[j] = int8_t(quant_detail::round_clamped(x[j] * inv_d, -127, 127));
      sum += out.qs[j];
    }
    out.d = f32_to_f16(d);
    if constexpr (sizeof(Block) == sizeof(BlockQ8_1)) out.s = f32_to_f16(d * float(sum));
  }
}

std::string describe(TensorType type) { return std::string(type_name(type)); }

// Blocks in a row of n elements of `type`; throws for an unknown type id or a ragged n.
int64_t whole_blocks(const char* what, TensorType type, int64_t n) {
  const std::optional<TypeInfo> info = type_info(uint32_t(type));
  if (!info) fail(ErrorCode::unsupported, std::string(what) + ": unknown type id " + std::to_string(uint32_t(type)));
  if (n < 0 || n % info->block_size != 0)
    fail(ErrorCode::argument, std::string(what) + ": " + std::to_string(n) + " elements is not a multiple of the " +
                                  describe(type) + " block size " + std::to_string(info->block_size));
  return n / info->block_size;
}

}  // namespace

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  const int64_t nb = whole_blocks("dequantize_row", type, n);
  const auto* half = static_cast<const uint16_t*>(src);
  switch (type) {
    case TensorType::F32:
      memcpy(dst, src, size_t(n) * sizeof(float));
      return;
    case TensorType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(half[i]);
      return;
    case TensorType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(half[i]);
      return;
    case TensorType::Q4_0:
      dequantize_q4_0(src, dst, nb);
      return;
    case TensorType::Q4_1:
      dequantize_q4_1(src, dst, nb);
      return;
    case TensorType::Q5_0:
      dequantize_q5_0(src, dst, nb);
      return;
    case TensorType::Q5_1:
      dequantize_q5_1(src, dst, nb);
      return;
    case TensorType::Q8_0:
      dequantize_q8<BlockQ8_0>(src, dst, nb);
      return;
    case TensorType::Q8_1:
      dequantize_q8<BlockQ8_1>(src, dst, nb);
      return;
    case TensorType::Q2_K:
      quant_detail::dequantize_q2_k(src, dst, nb);
      return;
    case TensorType::Q3_K:
      quant_detail::dequantize_q3_k(src, dst, nb);
      return;
    case TensorType::Q4_K:
      quant_detail::dequantize_q4_k(src, dst, nb);
      return;
    case TensorType::Q5_K:
      quant_detail::dequantize_q5_k(src, dst, nb);
      return;
    case TensorType::Q6_K:
      quant_detail::dequantize_q6_k(src, dst, nb);
      return;
    case TensorType::Q8_K:
      quant_detail::dequantize_q8_k(src, dst, nb);
      return;
  }
}

bool can_quantize(TensorType type) {
  switch (type) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q5_0:
    case TensorType::Q5_1:
    case TensorType::Q8_0:
    case TensorType::Q8_1:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
    case TensorType::Q8_K:
      return true;
    case TensorType::Q2_K:
    case TensorType::Q3_K:
      return false;
  }
  return false;
}

size_t quantize_row(TensorType type, const float* src, void* dst, int64_t n) {
  const int64_t nb = whole_blocks("quantize_row", type, n);
  if (!can_quantize(type)) fail(ErrorCode::unsupported, "quantize_row: cannot encode " + describe(type));
  auto* half = static_cast<uint16_t*>(dst);
  switch (type) {
    case TensorType::F32:
      memcpy(dst, src, size_t(n) * sizeof(float));
      break;
    case TensorType::F16:
      for (int64_t i = 0; i < n; ++i) half[i] = f32_to_f16(src[i]);
      break;
    case TensorType::BF16:
      for (int64_t i = 0; i < n; ++i) half[i] = f32_to_bf16(src[i]);
      break;
    case TensorType::Q4_0:
      quantize_symmetric<BlockQ4_0, 8>(src, dst, nb);
      break;
    case TensorType::Q4_1:
      quantize_affine<BlockQ4_1, 15>(src, dst, nb);
      break;
    case TensorType::Q5_0:
      quantize_symmetric<BlockQ5_0, 16>(src, dst, nb);
      break;
    case TensorType::Q5_1:
      quantize_affine<BlockQ5_1, 31>(src, dst, nb);
      break;
    case TensorType::Q8_0:
      quantize_q8<BlockQ8_0>(src, dst, nb);
      break;
    case TensorType::Q8_1:
      quantize_q8<BlockQ8_1>(src, dst, nb);
      break;
    case TensorType::Q4_K:
      quant_detail::quantize_q4_k(src, dst, nb);
      break;
    case TensorType::Q5_K:
      quant_detail::quantize_q5_k(src, dst, nb);
      break;
    case TensorType::Q6_K:
      quant_detail::quantize_q6_k(src, dst, nb);
      break;
    case TensorType::Q8_K:
      quant_detail::quantize_q8_k(src, dst, nb);
      break;
    case TensorType::Q2_K:
    case TensorType::Q3_K:
      break;  // rejected by can_quantize above
  }
  return row_bytes(type, n);
}

}  // namespace rwkv
