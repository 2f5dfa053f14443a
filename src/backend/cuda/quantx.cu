// QuantX buffers (ops.h) and the standalone quantisation kernel, used where the producer
// of an activation cannot quantise it itself (the relu^2 output of the FFN key matvec).
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quantx.cuh"

namespace rwkv::cuda {
namespace {

// One warp per block of 32 values, eight per 256-thread block.
__global__ void __launch_bounds__(256)
    quantize_rows_kernel(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, QuantX out) {
  pdl_wait();
  pdl_trigger();
  // 32-bit indices (the host checks rows * cols < 2^31): a 64-bit division is ~60
  // instructions after the PDL wait.
  const int nb = int(cols / 32), blk = int(blockIdx.x) * 8 + int(threadIdx.x >> 5);
  if (blk >= rows * nb) return;
  const int t = blk / nb, c = (blk - t * nb) * 32 + int(threadIdx.x & 31);
  quantize32(out, apply_in(op, x[int64_t(t) * x_stride + c]), int64_t(t) * cols, c);
}

}  // namespace

size_t quant_x_bytes(int rows, int64_t cols) {
  const size_t n = size_t(rows) * size_t(cols);
  return 2 * n + n / 32 * 16 + 64;
}

QuantX quant_x_view(void* base, int rows, int64_t cols) {
  const size_t n = size_t(rows) * size_t(cols), nb = n / 32;
  auto* p = static_cast<uint8_t*>(base);
  QuantX q;
  q.q0 = reinterpret_cast<int8_t*>(p);
  q.q1 = q.q0 + n;
  q.d0 = reinterpret_cast<float*>(p + ((2 * n + 15) / 16) * 16);
  q.d1 = q.d0 + nb;
  q.s0 = reinterpret_cast<int32_t*>(q.d1 + nb);
  q.s1 = q.s0 + nb;
  q.cols = cols;
  return q;
}

void quantize_rows(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, const QuantX& out,
                   Stream stream) {
  if (cols % 32 != 0 || out.cols != cols) fail(ErrorCode::argument, "cuda quantize_rows: bad width");
  if (int64_t(rows) * cols >= (int64_t(1) << 31)) fail(ErrorCode::argument, "cuda quantize_rows: too many values");
  const int64_t blocks = (int64_t(rows) * (cols / 32) + 7) / 8;
  launch("quantize_rows", quantize_rows_kernel, dim3(unsigned(blocks)), dim3(256), 0, stream, x, x_stride, rows, cols,
         op, out);
}

}  // namespace rwkv::cuda
