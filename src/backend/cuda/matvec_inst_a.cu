// Decode matvec kernels for the float-only launches, BF16, and the 8-bit and 4-bit legacy types.
#include "backend/cuda/matvec_kernel.cuh"

namespace rwkv::cuda::matvec_detail {

RWKV_MATVEC_DECLARE(, TensorType::F16, true)
RWKV_MATVEC_DECLARE_ALIGNED()
RWKV_MATVEC_INSTANTIATE(TensorType::BF16)
RWKV_MATVEC_DECLARE_ALIGNED_BF16()
RWKV_MATVEC_DECLARE_WIDE()
RWKV_MATVEC_INSTANTIATE(TensorType::Q8_0)
RWKV_MATVEC_INSTANTIATE(TensorType::Q4_0)
RWKV_MATVEC_INSTANTIATE(TensorType::Q4_1)

}  // namespace rwkv::cuda::matvec_detail
