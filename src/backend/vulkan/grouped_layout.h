// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K as the Vulkan shaders read them
// ("grouped"), made at upload from the stored blocks, so that quants sit at 16-byte aligned
// offsets (stored blocks are 34, 18, 20, 22, 24 and 210 bytes) and, for Q4_K and Q5_K (144 and
// 176 bytes), the packed 6-bit scales are unpacked. Lossless: every byte of every block only moves (padding
// is zero), except those scales, which are unpacked bit for bit.
//
// Q8_0: a row is cut into groups of up to 8 blocks (256 elements); a group holds 16 bytes of
// float16 scales (block j of the group at byte 2j, zero where the group has fewer blocks) and
// then the 32 int8 quants of each of its blocks. Full groups are 272 bytes (8 blocks of 34, so
// a row of whole groups keeps its size), a row's last group may have fewer blocks (16 + 32 per
// block). Rows and groups are multiples of 16 bytes, so with 16-byte aligned rows every 8
// quants of an element group sit in one aligned 8-byte word (16 in one 16-byte word).
//
// Q4_0, Q4_1, Q5_0, Q5_1: groups of up to 8 blocks (256 elements) holding each field of the
// blocks as an array: d (16 bytes, block j at 2j), m (16 bytes, Q4_1 and Q5_1), qh (32 bytes,
// Q5_0 and Q5_1, block j at 4j), then the 16 quant bytes of each block. A full group is the
// size of its 8 blocks; a row's last group keeps whole field arrays (zero past its blocks)
// and 16 quant bytes per block. Rows are multiples of 16 bytes.
//
// Q4_K, Q5_K: groups of up to 8 super-blocks (2,048 elements); a group starts with 8 headers
// of 20 bytes (super-block j at 20j: d, dmin, then the pairs (scale i, min i) of its 8
// sub-blocks, one byte each: the 12 bytes of packed 6-bit values unpacked, so that a reader
// takes its sub-block's pair with one load instead of decoding them), then each super-block's
// qs[128] (and, Q5_K, qh[32] after them). Full groups are 160 + 8 x 128 = 1,184 bytes (Q4_K;
// 8 x 144 stored) and 160 + 8 x 160 = 1,440 (Q5_K; 8 x 176 stored); a row's last group keeps
// the 160 header bytes and has 128 or 160 per super-block. Lossless, 4 bytes more per
// super-block.
//
// Q6_K: groups of up to 8 super-blocks (2,048 elements); a group holds 16 bytes of float16
// scales d (super-block j at byte 2j) and then each super-block's ql[128], qh[64] and
// scales[16] (208 bytes). Full groups are 1,680 bytes (8 x 210: a row of whole groups keeps
// its size); a row's last group has 16 + 208 per super-block. Rows are multiples of 16 bytes.
//
// Transposed Q8_0 (the sparse FFN value product's copy, WeightStore::add_transposed):
// tensor/transpose.h. With R % 16 == 0 every 16 quants of a row and the plane's rows are
// 16-byte aligned.
#pragma once

#include <cstdint>

#include "tensor/types.h"

namespace rwkv::vk {

constexpr uint32_t kQ8GroupBlocks = 8;                                        // blocks per full group
constexpr uint32_t kQ8GroupScaleBytes = 16;                                   // scales at the group start
constexpr uint32_t kQ8GroupBytes = kQ8GroupScaleBytes + kQ8GroupBlocks * 32;  // a full group

constexpr uint32_t kQ6GroupBlocks = 8;        // super-blocks per full group
constexpr uint32_t kQ6GroupScaleBytes = 16;   // d of each, at the group start
constexpr uint32_t kQ6GroupBlockBytes = 208;  // ql, qh, scales of one
constexpr uint32_t kQ6GroupBytes = kQ6GroupScaleBytes + kQ6GroupBlocks * kQ6GroupBlockBytes;  // a full group

// Bytes of one grouped Q8_0 row of `cols` elements (a multiple of 32).
uint32_t q8_0_grouped_row_bytes(uint32_t cols);
// `rows` rows of stored Q8_0 blocks (cols / 32 blocks each, back to back) into grouped rows
// of q8_0_grouped_row_bytes(cols) bytes each at dst.
void q8_0_to_grouped(const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols);

// Byte offsets of the field arrays in a group of Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks (m_off and
// qh_off 0 where the type has no such field); full groups are qs_off + 128 bytes.
struct LegacyGroup {
  uint32_t m_off = 0, qh_off = 0, qs_off = 0;
};
// The layout for `type`; all zero for the other types.
constexpr LegacyGroup legacy_group(TensorType type) {
  switch (type) {
    case TensorType::Q4_0:
      return {0, 0, 16};
    case TensorType::Q4_1:
      return {16, 0, 32};
    case TensorType::Q5_0:
      return {0, 16, 48};
    case TensorType::Q5_1:
      return {16, 32, 64};
    default:
      return {};
  }
}
// Bytes of one grouped row of `cols` elements (a multiple of 32).
uint32_t legacy_grouped_row_bytes(TensorType type, uint32_t cols);
// `rows` rows of stored blocks of `type` into grouped rows at dst.
void legacy_to_grouped(TensorType type, const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols);

// Bytes of a grouped row of `cols` elements of `type`; 0 for the types stored as they are.
uint32_t grouped_row_bytes(TensorType type, uint32_t cols);

constexpr uint32_t kK4GroupBlocks = 8;         // super-blocks per full group
constexpr uint32_t kK4HeaderBytes = 20;        // one super-block's header
constexpr uint32_t kK4GroupHeaderBytes = 160;  // the 8 headers at the group start
// Bytes of a super-block's quants after the headers: qs (and qh for Q5_K).
constexpr uint32_t k4_block_bytes(TensorType type) { return type == TensorType::Q5_K ? 160 : 128; }
// Bytes of one grouped Q4_K / Q5_K row of `cols` elements (a multiple of 256).
uint32_t k4_grouped_row_bytes(TensorType type, uint32_t cols);
// `rows` rows of stored Q4_K / Q5_K super-blocks into grouped rows at dst.
void k4_to_grouped(TensorType type, const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols);

// Bytes of one grouped Q6_K row of `cols` elements (a multiple of 256).
uint32_t q6_k_grouped_row_bytes(uint32_t cols);
// `rows` rows of stored Q6_K super-blocks into grouped rows of q6_k_grouped_row_bytes(cols).
void q6_k_to_grouped(const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols);

}  // namespace rwkv::vk
