#include "tensor/transpose.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "tensor/blocks.h"

namespace rwkv {

void q8_0_transpose_quants(const uint8_t* src, uint64_t rows, uint32_t cols, uint64_t col0, uint64_t n, uint8_t* dst) {
  // Tiles of 32 source rows, so that the rows read stay in cache while each output row
  // gets its 32 bytes.
  constexpr uint64_t kTile = 32;
  const uint64_t in_row = uint64_t(cols / 32) * sizeof(BlockQ8_0);
  for (uint64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (uint64_t c = col0; c < col0 + n; ++c) {
      const uint8_t* q = src + (c / 32) * sizeof(BlockQ8_0) + offsetof(BlockQ8_0, qs) + c % 32;
      for (uint64_t r = r0; r < std::min(r0 + kTile, rows); ++r) dst[(c - col0) * rows + r] = q[r * in_row];
    }
  }
}

void q8_0_transpose_scales(const uint8_t* src, uint64_t rows, uint32_t cols, uint64_t b0, uint64_t n, uint8_t* dst) {
  const uint64_t in_row = uint64_t(cols / 32) * sizeof(BlockQ8_0);
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t b = b0; b < b0 + n; ++b) {
      std::memcpy(dst + ((b - b0) * rows + r) * 2, src + r * in_row + b * sizeof(BlockQ8_0) + offsetof(BlockQ8_0, d),
                  2);
    }
  }
}

}  // namespace rwkv
