// Reference conversions between float32 and every tensor type (spec §4.3, §4.4).
// These are the plain, readable versions: cpu-ref and every test build on them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/types.h"

namespace rwkv {

// Converts n elements (a multiple of the block size) of `type` at src to float32.
// Defined for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K, Q8_K.
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

// True where quantize_row can produce `type`.
bool can_quantize(TensorType type);

// Encodes n float32 values (a multiple of the block size) as `type`; returns bytes written
// (= row_bytes(type, n)). Round-to-nearest quantisers in the manner of llama.cpp's
// reference ones; k-quants search scales to minimise squared error.
size_t quantize_row(TensorType type, const float* src, void* dst, int64_t n);

}  // namespace rwkv
