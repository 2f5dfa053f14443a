// Packed weights -> f16 row-major (the prefill path feeds them to cuBLAS). One thread
// per work item; the item's values are written as 16-byte stores of 8 halves where the
// column run allows (every type's runs are 8-aligned when ld is a multiple of 8).
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"

namespace rwkv::cuda {
namespace {

template <TensorType TY>
__global__ void __launch_bounds__(256) dequant_f16_kernel(PackedView W, __half* dst, int64_t ld, bool vec) {
  using It = Item<TY>;
  pdl_wait();
  pdl_trigger();
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= W.rows * W.items) return;
  const int64_t row = idx / W.items, it = idx - row * W.items;
  It item;
  item.load(W, row, it);
  float v[It::kElems];
  item_values(item, it, v);
  __half* out = dst + row * ld;
#pragma unroll
  for (int k = 0; k < It::kElems; k += 8) {
    const int64_t c = It::col(it, k);  // runs of 8 consecutive columns
    if (vec && c + 8 <= W.cols) {
      __align__(16) __half h[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) h[e] = __float2half_rn(v[k + e]);
      *reinterpret_cast<int4*>(out + c) = *reinterpret_cast<const int4*>(h);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (c + e < W.cols) out[c + e] = __float2half_rn(v[k + e]);
    }
  }
}

}  // namespace

void dequant_to_f16(const PackedView& W, void* dst, int64_t ld, Stream stream) {
  const int64_t n = W.rows * W.items;
  const dim3 grid(unsigned((n + 255) / 256)), block(256);
  const bool vec = ld % 8 == 0 && (reinterpret_cast<uintptr_t>(dst) & 15) == 0;
  auto* out = static_cast<__half*>(dst);
#define RWKV_GO(TY) launch("dequant_f16", dequant_f16_kernel<TY>, grid, block, 0, stream, W, out, ld, vec)
  switch (W.type) {
    RWKV_CUDA_TYPE_CASES(RWKV_GO)
    default:
      fail(ErrorCode::unsupported, "cuda dequant_to_f16: unsupported type");
  }
#undef RWKV_GO
}

}  // namespace rwkv::cuda
