// Internal to src/tensor: the contract between matmul.cpp (validation, threading, scratch)
// and the SIMD kernel files (matmul_avx2.cpp for float and legacy types, matmul_k_avx2.cpp
// for k-quants).
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/types.h"

namespace rwkv::matmul_detail {

// One matmul's operands as a kernel sees them.
struct Operands {
  const uint8_t* w;    // `rows` weight rows of w_stride bytes (row_bytes(type, cols))
  size_t w_stride;
  int64_t rows, cols;
  const uint8_t* act;  // token t's prepared activations at act + t * act_stride
  size_t act_stride;
  float* y;            // T x rows, row-major
};

// A SIMD kernel for one weight type.
struct Kernel {
  // Bytes of one token's prepared activations, for `cols` inputs; 0 = the kernel reads
  // the float32 input rows directly (act = x, act_stride = cols * 4).
  size_t (*act_bytes)(int64_t cols);
  // Converts one token's cols floats into act_bytes(cols) bytes (null when act_bytes is 0).
  void (*prepare)(const float* x, int64_t cols, uint8_t* act);
  // Writes y[t][r] for r in [r0, r1) and every t < T.
  void (*run)(const Operands& op, int64_t r0, int64_t r1, int64_t T);
  // Row counts handed to `run` should be multiples of this (except at the end).
  int64_t row_grain;
};

// The SIMD kernel for `type`, or nullptr where the generic path must be used.
const Kernel* simd_kernel(TensorType type);
// The k-quant kernels (matmul_k_avx2.cpp); nullptr for other types.
const Kernel* simd_kernel_k(TensorType type);

}  // namespace rwkv::matmul_detail
