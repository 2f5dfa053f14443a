#include "tensor/transpose.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/half.h"
#include "tensor/blocks.h"
#include "tensor/quant_k.h"

namespace rwkv {

void transpose_elements(const uint8_t* src, uint64_t rows, uint64_t cols, size_t bytes, uint64_t col0, uint64_t n,
                        uint8_t* dst) {
  // 32 x 32 tiles, so that the rows read and the rows written stay in cache.
  constexpr uint64_t kTile = 32;
  for (uint64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (uint64_t c0 = 0; c0 < n; c0 += kTile) {
      for (uint64_t r = r0; r < std::min(r0 + kTile, rows); ++r) {
        for (uint64_t c = c0; c < std::min(c0 + kTile, n); ++c)
          std::memcpy(dst + (c * rows + r) * bytes, src + (r * cols + col0 + c) * bytes, bytes);
      }
    }
  }
}

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

namespace {

// Walks `rows` rows of cols / 256 super-blocks in tiles of 64 rows (the rows read stay in
// cache): decode(r, b, q) unpacks super-block b of row r into its 256 quants q[0..256), one
// byte each, and stores that block's scales itself; then column j of the tile goes to row j
// of `quants`, a byte a source row, or with `nibbles` two source rows a byte (the even row in
// the low nibble).
template <class Decode>
void transpose_super_blocks(uint64_t rows, uint32_t cols, bool nibbles, uint8_t* quants, Decode decode) {
  constexpr uint64_t kTile = 64;
  const uint64_t blocks = cols / 256, row_out = nibbles ? rows / 2 : rows;
  std::vector<uint8_t> q(kTile * 256);
  for (uint64_t r0 = 0; r0 < rows; r0 += kTile) {
    const uint64_t n = std::min(kTile, rows - r0);
    for (uint64_t b = 0; b < blocks; ++b) {
      for (uint64_t r = 0; r < n; ++r) decode(r0 + r, b, q.data() + r * 256);
      for (uint64_t j = 0; j < 256; ++j) {
        uint8_t* row = quants + (b * 256 + j) * row_out + (nibbles ? r0 / 2 : r0);
        if (nibbles) {
          for (uint64_t r = 0; r + 1 < n; r += 2) row[r / 2] = uint8_t(q[r * 256 + j] | (q[(r + 1) * 256 + j] << 4));
        } else {
          for (uint64_t r = 0; r < n; ++r) row[r] = q[r * 256 + j];
        }
      }
    }
  }
}

// Q4_K (kFive false: nibbles, two rows a byte) and Q5_K (bytes): the quants in
// q4_k_transpose's layout; store_scales(r, b, d, dmin, sm) gets each super-block's float16
// d and dmin as stored and its unpacked six-bit scales sm[0, 8) and mins sm[8, 16).
template <bool kFive, class StoreScales>
void k45_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, StoreScales store_scales) {
  using Block = std::conditional_t<kFive, BlockQ5_K, BlockQ4_K>;
  const uint64_t blocks = cols / 256;
  transpose_super_blocks(rows, cols, !kFive, quants, [&](uint64_t r, uint64_t b, uint8_t* q) {
    Block blk;
    std::memcpy(&blk, src + (r * blocks + b) * sizeof(Block), sizeof blk);
    uint8_t sm[16];
    quant_detail::unpack_k_scales(blk.scales, sm);
    store_scales(r, b, blk.d, blk.dmin, sm);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = blk.qs[32 * c + l];
        uint8_t lo = byte & 0xF, hi = byte >> 4;
        if constexpr (kFive) {
          lo |= uint8_t(((blk.qh[l] >> (2 * c)) & 1) << 4);
          hi |= uint8_t(((blk.qh[l] >> (2 * c + 1)) & 1) << 4);
        }
        q[64 * c + l] = lo;
        q[64 * c + 32 + l] = hi;
      }
    }
  });
}

// Writes the float pairs (d * scale, dmin * min) of q4_k_transpose's `dm`.
auto float_scales(uint64_t rows, float* dm) {
  return [=](uint64_t r, uint64_t b, uint16_t d16, uint16_t dmin16, const uint8_t* sm) {
    const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
    for (int sub = 0; sub < 8; ++sub) {
      float* out = dm + 2 * ((b * 8 + uint64_t(sub)) * rows + r);
      out[0] = d * float(sm[sub]);
      out[1] = dmin * float(sm[8 + sub]);
    }
  };
}

// Writes q4_k_transpose_compact's planes.
auto compact_scales(uint64_t rows, uint16_t* d, uint16_t* dmin, uint8_t* scales, uint8_t* mins) {
  return [=](uint64_t r, uint64_t b, uint16_t d16, uint16_t dmin16, const uint8_t* sm) {
    d[b * rows + r] = d16;
    dmin[b * rows + r] = dmin16;
    for (uint64_t sub = 0; sub < 8; ++sub) {
      scales[(b * 8 + sub) * rows + r] = sm[sub];
      mins[(b * 8 + sub) * rows + r] = sm[8 + sub];
    }
  };
}

// Q6_K super-block b of row r: its 256 signed quants q - 32 into q (one byte each), its
// float16 d and int8 group scales into store_scales(r, b, d, scales).
template <class StoreScales>
void q6_k_transpose_with(const uint8_t* src, uint64_t rows, uint32_t cols, int8_t* quants, StoreScales store_scales) {
  const uint64_t blocks = cols / 256;
  auto* bytes = reinterpret_cast<uint8_t*>(quants);  // the int8 quants move as bytes
  transpose_super_blocks(rows, cols, false, bytes, [&](uint64_t r, uint64_t b, uint8_t* q) {
    BlockQ6_K blk;
    std::memcpy(&blk, src + (r * blocks + b) * sizeof(BlockQ6_K), sizeof blk);
    store_scales(r, b, blk.d, blk.scales);
    for (int h = 0; h < 2; ++h) {  // spec §4.3: halves of 128, four runs of 32 each
      const uint8_t* ql = blk.ql + 64 * h;
      const uint8_t* qh = blk.qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        q[128 * h + l] = uint8_t(int8_t(((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32));
        q[128 * h + l + 32] = uint8_t(int8_t(((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32));
        q[128 * h + l + 64] = uint8_t(int8_t(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32));
        q[128 * h + l + 96] = uint8_t(int8_t(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32));
      }
    }
  });
}

}  // namespace

void q4_k_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, float* dm) {
  k45_transpose<false>(src, rows, cols, quants, float_scales(rows, dm));
}
void q5_k_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, float* dm) {
  k45_transpose<true>(src, rows, cols, quants, float_scales(rows, dm));
}
void q4_k_transpose_compact(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, uint16_t* d,
                            uint16_t* dmin, uint8_t* scales, uint8_t* mins) {
  k45_transpose<false>(src, rows, cols, quants, compact_scales(rows, d, dmin, scales, mins));
}
void q5_k_transpose_compact(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, uint16_t* d,
                            uint16_t* dmin, uint8_t* scales, uint8_t* mins) {
  k45_transpose<true>(src, rows, cols, quants, compact_scales(rows, d, dmin, scales, mins));
}

void q6_k_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, int8_t* quants, float* scales) {
  q6_k_transpose_with(src, rows, cols, quants, [&](uint64_t r, uint64_t b, uint16_t d16, const int8_t* group_scales) {
    const float d = f16_to_f32(d16);
    for (int g = 0; g < 16; ++g) scales[(b * 16 + uint64_t(g)) * rows + r] = d * float(group_scales[g]);
  });
}
void q6_k_transpose_compact(const uint8_t* src, uint64_t rows, uint32_t cols, int8_t* quants, uint16_t* d,
                            int8_t* scales) {
  q6_k_transpose_with(src, rows, cols, quants, [&](uint64_t r, uint64_t b, uint16_t d16, const int8_t* group_scales) {
    d[b * rows + r] = d16;
    for (int g = 0; g < 16; ++g) scales[(b * 16 + uint64_t(g)) * rows + r] = group_scales[g];
  });
}

}  // namespace rwkv
