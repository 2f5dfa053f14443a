// matmul(): validation, activation preparation and threading around the SIMD kernels
// (matmul_avx2.cpp, matmul_k_avx2.cpp, matmul_gemm_avx2.cpp), plus the portable path used
// for types without a kernel and for builds without AVX2: dequantise a weight row, then
// float dot products.
#include "tensor/matmul.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "tensor/matmul_kernels.h"
#include "tensor/quant.h"

namespace rwkv {
namespace {

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
const matmul_detail::Kernel* find_kernel(TensorType type, int64_t T) { return matmul_detail::simd_kernel(type, T); }
#else
const matmul_detail::Kernel* find_kernel(TensorType, int64_t) { return nullptr; }
#endif

// Calls below this many multiply-adds (a few microseconds on one core) run on the calling
// thread: waking the pool's workers would cost about as much.
constexpr double kSerialMultiplyAdds = 65536;

// fn(begin, end, thread) over [0, n): split over the pool, or all on this thread.
template <class Fn>
void for_ranges(ThreadPool& pool, bool serial, int64_t n, const Fn& fn, int64_t grain) {
  if (serial)
    fn(0, n, 0);
  else
    pool.parallel_for(n, fn, grain);
}

// Rows handed to one thread at a time by the portable path.
constexpr int64_t kGenericRowGrain = 4;

void matmul_generic(ThreadPool& pool, bool serial, TensorType type, const uint8_t* w, size_t w_stride, int64_t rows,
                    int64_t cols, const float* x, int64_t T, float* y) {
  for_ranges(
      pool, serial, rows,
      [&](int64_t r0, int64_t r1, int) {
        thread_local std::vector<float> row;
        row.resize(size_t(cols));
        for (int64_t r = r0; r < r1; ++r) {
          dequantize_row(type, w + size_t(r) * w_stride, row.data(), cols);
          for (int64_t t = 0; t < T; ++t) y[size_t(t) * size_t(rows) + size_t(r)] = dot(row.data(), x + t * cols, cols);
        }
      },
      kGenericRowGrain);
}

// Tokens below this are prepared on the calling thread: a pool round trip costs more.
constexpr int64_t kParallelPrepareTokens = 8;
// Token ranges prepared by different threads start at multiples of this, so that kernels
// writing [column][token] layouts do not share cache lines between threads (16 floats).
constexpr int64_t kPrepareTokenGrain = 16;

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  float lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) lanes[k] += a[i + k] * b[i + k];
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

int64_t matmul_activation_block(TensorType type, int64_t T) {
  const matmul_detail::Kernel* kernel = find_kernel(type, T);
  return kernel != nullptr ? kernel->act_block : 0;
}

void matmul(ThreadPool& pool, TensorType type, const void* W, int64_t rows, int64_t cols, const float* x, int64_t T,
            float* y) {
  const std::optional<TypeInfo> info = type_info(uint32_t(type));
  if (!info) fail(ErrorCode::unsupported, "matmul: unknown weight type id " + std::to_string(uint32_t(type)));
  if (rows < 0 || cols < 0 || T < 0 || cols % info->block_size != 0)
    fail(ErrorCode::argument, "matmul: bad shape rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                                  " T=" + std::to_string(T) + " for " + std::string(info->name) +
                                  " (cols must be a multiple of " + std::to_string(info->block_size) + ")");
  if (rows == 0 || T == 0) return;
  if (cols == 0) {
    std::fill(y, y + rows * T, 0.0f);
    return;
  }
  const auto* w = static_cast<const uint8_t*>(W);
  const size_t w_stride = row_bytes(type, cols);
  const bool serial = double(rows) * double(cols) * double(T) < kSerialMultiplyAdds;
  const matmul_detail::Kernel* kernel = find_kernel(type, T);
  if (kernel == nullptr) {
    matmul_generic(pool, serial, type, w, w_stride, rows, cols, x, T, y);
    return;
  }

  matmul_detail::Operands op{w, w_stride, rows, cols, reinterpret_cast<const uint8_t*>(x), y};
  if (const size_t bytes = kernel->act_bytes(cols, T); bytes != 0) {
    // Reused across calls on this thread, so steady-state calls do not allocate.
    thread_local std::vector<uint8_t> activations;
    if (activations.size() < bytes) activations.resize(bytes);
    uint8_t* act = activations.data();
    const auto prepare = [&](int64_t t0, int64_t t1, int) { kernel->prepare(x, cols, T, t0, t1, act); };
    for_ranges(pool, serial || T < kParallelPrepareTokens, T, prepare, kPrepareTokenGrain);
    op.act = act;
  }
  for_ranges(
      pool, serial, rows, [&](int64_t r0, int64_t r1, int) { kernel->run(op, r0, r1, T); }, kernel->row_grain);
}

}  // namespace rwkv
