// Internal to src/tensor: the contract between matmul.cpp (validation, threading, scratch)
// and the SIMD kernel files: matmul_avx2.cpp (float and legacy types, dot products),
// matmul_k_avx2.cpp (k-quants), matmul_gemm_avx2.cpp (float weights, many tokens) and
// matmul_gemm_int8_avx2.cpp (block-quantised types, many tokens).
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/types.h"

namespace rwkv::matmul_detail {

// One matmul's operands as a kernel sees them.
struct Operands {
  const uint8_t* w;  // `rows` weight rows of w_stride bytes (row_bytes(type, cols))
  size_t w_stride;
  int64_t rows, cols;
  const uint8_t* act;     // the prepared activations (layout private to the kernel)
  float* y;               // T x rows, row-major
  bool prefetch = false;  // weights are read once (few tokens): prefetch ahead of the rows
};

// A SIMD kernel for one weight type.
struct Kernel {
  // Bytes of prepared activations for T tokens of `cols` inputs; 0 = the kernel reads the
  // float32 input rows directly (act = x).
  size_t (*act_bytes)(int64_t cols, int64_t T);
  // Prepares tokens [t0, t1) of the T input rows x into act (null when act_bytes is 0).
  // Disjoint token ranges may be prepared concurrently.
  void (*prepare)(const float* x, int64_t cols, int64_t T, int64_t t0, int64_t t1, uint8_t* act);
  // Writes y[t][r] for r in [r0, r1) and every t < T.
  void (*run)(const Operands& op, int64_t r0, int64_t r1, int64_t T);
  // Row counts handed to `run` should be multiples of this (except at the end).
  int64_t row_grain;
  // Inputs are quantised to 8 bits per this many elements (0: float inputs).
  int64_t act_block;
};

// The SIMD kernel for `type` at T tokens, or nullptr where the generic path must be used.
const Kernel* simd_kernel(TensorType type, int64_t T);
// The k-quant kernels (matmul_k_avx2.cpp); nullptr for other types.
const Kernel* simd_kernel_k(TensorType type);
// Float weights when T is large (matmul_gemm_avx2.cpp); nullptr for other types.
const Kernel* simd_kernel_gemm(TensorType type);
// Block-quantised types when T is large, on CPUs with VNNI (matmul_gemm_int8_avx2.cpp);
// nullptr for other types and CPUs.
const Kernel* simd_kernel_gemm_int8(TensorType type);

}  // namespace rwkv::matmul_detail
