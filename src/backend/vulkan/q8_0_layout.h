// Q8_0 as the Vulkan shaders read it ("grouped"), made at upload from the stored blocks: a row
// is cut into groups of up to 8 blocks (256 elements); a group holds 16 bytes of float16
// scales (block j of the group at byte 2j, zero where the group has fewer blocks) and then the
// 32 int8 quants of each of its blocks. Full groups are 272 bytes (8 blocks of 34, so a row of
// whole groups keeps its size), a row's last group may have fewer blocks (16 + 32 per block).
// Rows and groups are multiples of 16 bytes, so with 16-byte aligned rows every 8 quants of an
// element group sit in one aligned 8-byte word (16 in one 16-byte word): no 34-byte stride.
// Lossless: every byte of every block only moves (padding is zero).
#pragma once

#include <cstdint>

namespace rwkv::vk {

constexpr uint32_t kQ8GroupBlocks = 8;                                        // blocks per full group
constexpr uint32_t kQ8GroupScaleBytes = 16;                                   // scales at the group start
constexpr uint32_t kQ8GroupBytes = kQ8GroupScaleBytes + kQ8GroupBlocks * 32;  // a full group

// Bytes of one grouped row of `cols` elements (a multiple of 32).
uint32_t q8_0_grouped_row_bytes(uint32_t cols);
// `rows` rows of stored Q8_0 blocks (cols / 32 blocks each, back to back) into grouped rows
// of q8_0_grouped_row_bytes(cols) bytes each at dst.
void q8_0_to_grouped(const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols);

}  // namespace rwkv::vk
