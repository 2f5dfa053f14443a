// cuBLAS GEMM for the prefill path: fp32 output, f16 inputs, fp32 accumulation.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "backend/cuda/ops.h"
#include "common/error.h"

namespace rwkv::cuda {
namespace {

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    fail(ErrorCode::backend, std::string("cuda: ") + what + ": " + cublasGetStatusString(st));
}

}  // namespace

Blas::Blas() {
  cublasHandle_t h = nullptr;
  check_blas(cublasCreate(&h), "cublasCreate");
  handle_ = h;
  if (cudaMalloc(&workspace_, Blas::kWorkspaceBytes) != cudaSuccess) {
    cublasDestroy(h);
    fail(ErrorCode::backend, "cuda: cannot allocate the cuBLAS workspace");
  }
}

Blas::~Blas() {
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
  if (workspace_) cudaFree(workspace_);
}

void Blas::gemm_f16(const void* W16, int64_t ldw, int64_t rows, int64_t cols, const void* X16, int R, float* Y,
                    int64_t ldy, float beta, Stream stream) {
  auto h = static_cast<cublasHandle_t>(handle_);
  check_blas(cublasSetStream(h, stream), "cublasSetStream");
  check_blas(cublasSetWorkspace(h, workspace_, kWorkspaceBytes), "cublasSetWorkspace");
  const float alpha = 1.f;
  // Column-major view: W16 is a cols x rows matrix (ld ldw); Y^T (rows x R) = W^T X^T.
  check_blas(
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), R, int(cols), &alpha, W16, CUDA_R_16F, int(ldw), X16,
                   CUDA_R_16F, int(cols), &beta, Y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}

void Blas::gemm_f16_strided(const void* W16, int64_t ldw, int64_t w_step, int64_t rows, int64_t cols, const void* X16,
                            int64_t x_step, int R, float* Y, int64_t ldy, int64_t y_step, int count, Stream stream) {
  auto h = static_cast<cublasHandle_t>(handle_);
  check_blas(cublasSetStream(h, stream), "cublasSetStream");
  check_blas(cublasSetWorkspace(h, workspace_, kWorkspaceBytes), "cublasSetWorkspace");
  const float alpha = 1.f, beta = 0.f;
  check_blas(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), R, int(cols), &alpha, W16, CUDA_R_16F,
                                        int(ldw), w_step, X16, CUDA_R_16F, int(cols), x_step, &beta, Y, CUDA_R_32F,
                                        int(ldy), y_step, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmStridedBatchedEx");
}

}  // namespace rwkv::cuda
