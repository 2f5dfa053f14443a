// Decode matvec kernels: the f16-x variants of the one-row F16 and BF16 kernels.
#include "backend/cuda/matvec_kernel.cuh"

namespace rwkv::cuda::matvec_detail {

RWKV_MATVEC_DECLARE_X16()

}  // namespace rwkv::cuda::matvec_detail
