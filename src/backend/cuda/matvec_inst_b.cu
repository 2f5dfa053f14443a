// Decode matvec kernels for the 5-bit legacy types and the k-quants.
#include "backend/cuda/matvec_kernel.cuh"

namespace rwkv::cuda::matvec_detail {

RWKV_MATVEC_INSTANTIATE(TensorType::Q5_0)
RWKV_MATVEC_INSTANTIATE(TensorType::Q5_1)
RWKV_MATVEC_INSTANTIATE(TensorType::Q4_K)
RWKV_MATVEC_INSTANTIATE(TensorType::Q5_K)
RWKV_MATVEC_INSTANTIATE(TensorType::Q6_K)

}  // namespace rwkv::cuda::matvec_detail
