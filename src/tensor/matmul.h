// Fast CPU matrix kernels used by the `cpu` backend: SIMD dot products on the stored
// (possibly quantised) weight bytes, threaded over output rows.
#pragma once

#include <cstdint>

#include "common/threadpool.h"
#include "tensor/types.h"

namespace rwkv {

// y[t][r] = sum_c W[r][c] * x[t][c] for t < T, r < rows.
// W: `rows` rows of `cols` elements of `type`, row-major, row stride row_bytes(type, cols).
// x: T x cols float32, row-major. y: T x rows float32, row-major (overwritten).
// For quantised W the activations are quantised per row (Q8_0 for legacy types, Q8_K for
// k-quants) as llama.cpp does; T > 1 reuses each weight block across all T rows.
void matmul(ThreadPool& pool, TensorType type, const void* W, int64_t rows, int64_t cols, const float* x, int64_t T,
            float* y);

// The number of consecutive inputs that matmul quantises to 8 bits together (one scale)
// for `type` at T tokens: 32 or 256 (Q8_K, spec §4.4), or 0 where it multiplies the float
// inputs. The choice follows the kernel: k-quants take 256 from one token and 32 in the
// many-token kernel of CPUs with VNNI.
int64_t matmul_activation_block(TensorType type, int64_t T);

// sum_i a[i] b[i] in float32, as eight independent partial sums (the compiler keeps them in
// one vector register).
float dot(const float* a, const float* b, int64_t n);

}  // namespace rwkv
