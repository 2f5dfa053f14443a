// Transposed quantised matrices, the layouts the GPU backends' ReLU^2-sparse FFN value
// products read (a hidden unit j that is zero skips row j).
//
// Q8_0, of a matrix [R x K] of stored blocks (R rows of K / 32 blocks): K rows of R int8
// quants (row j: quant j of every row), then the scale plane [K / 32 x R] float16 (row b: d
// of block b of every row). Lossless: every quant and scale byte only moves.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rwkv {

// Rows [col0, col0 + n) of the transpose of src [rows x cols] of elements of `bytes` bytes
// each (F32, F16, BF16): dst [n x rows], element c of row r at (c - col0) rows + r.
void transpose_elements(const uint8_t* src, uint64_t rows, uint64_t cols, size_t bytes, uint64_t col0, uint64_t n,
                        uint8_t* dst);

// Rows [col0, col0 + n) of the transposed quants of `rows` rows of stored Q8_0 blocks
// (cols / 32 each) at src: n x rows bytes at dst.
void q8_0_transpose_quants(const uint8_t* src, uint64_t rows, uint32_t cols, uint64_t col0, uint64_t n, uint8_t* dst);
// Rows [b0, b0 + n) of their scale plane: n x rows float16 at dst.
void q8_0_transpose_scales(const uint8_t* src, uint64_t rows, uint32_t cols, uint64_t b0, uint64_t n, uint8_t* dst);

// Q4_K, of `rows` (even) rows of cols / 256 stored blocks at src: `quants` gets cols rows of
// rows / 2 bytes (row j: the 4-bit quant of column j of every row, row i in the low nibble of
// byte i / 2 when i is even, else in the high one), `dm` the pairs [cols / 32 x rows] of
// floats (d * scale, dmin * min) of sub-block j / 32 of every row. Both products are exact
// (a float16 times a 6-bit integer), so a weight is D q - M as the dequantiser computes it.
void q4_k_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, float* dm);
// Q5_K, the same with the 5-bit quants as bytes: `quants` gets cols rows of `rows` bytes.
void q5_k_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, float* dm);

// Q6_K, of `rows` rows of cols / 256 stored blocks at src: `quants` gets cols rows of `rows`
// int8 (row j: the signed quant q - 32 of column j of every row), `scales` [cols / 16 x rows]
// the floats d * scale of group j / 16 of every row (exact: a float16 times an int8), so a
// weight is D q as the dequantiser computes it.
void q6_k_transpose(const uint8_t* src, uint64_t rows, uint32_t cols, int8_t* quants, float* scales);

// The same quants with compact scales as stored (the CPU backend's sparse product; a third of
// the bytes of the float planes above or less). Q4_K, Q5_K: `d`, `dmin` [cols / 256 x rows]
// float16 of each super-block, `scales`, `mins` [cols / 32 x rows] the six-bit values of each
// sub-block, so that a weight is d * scale * q - dmin * min. Q6_K: `d` [cols / 256 x rows]
// float16, `scales` [cols / 16 x rows] the int8 group scales: a weight is d * scale * q.
void q4_k_transpose_compact(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, uint16_t* d,
                            uint16_t* dmin, uint8_t* scales, uint8_t* mins);
void q5_k_transpose_compact(const uint8_t* src, uint64_t rows, uint32_t cols, uint8_t* quants, uint16_t* d,
                            uint16_t* dmin, uint8_t* scales, uint8_t* mins);
void q6_k_transpose_compact(const uint8_t* src, uint64_t rows, uint32_t cols, int8_t* quants, uint16_t* d,
                            int8_t* scales);

}  // namespace rwkv
