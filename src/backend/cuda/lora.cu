// The elementwise steps between and after the batched LoRA GEMMs (ops.h: LoraArgs): one
// launch each for all four problems of a layer, instead of one per problem.
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"

namespace rwkv::cuda {
namespace {

// Grid (column blocks, rows, problems).
__global__ void lora_mid_kernel(const __grid_constant__ LoraArgs a) {
  pdl_wait();
  pdl_trigger();
  const int p = blockIdx.z, r = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= a.D) return;
  const int64_t at = int64_t(r) * a.D + j;
  // Past the rank the padded weights are zero, and so is this input (never NaN).
  const float v = j < a.rank[p] ? apply_in(a.mid_op[p], a.lo[p * a.lo_step + at]) : 0.f;
  static_cast<__half*>(a.mid)[p * a.mid_step + at] = __float2half_rn(v);
}

__global__ void lora_epilogue_kernel(const __grid_constant__ LoraArgs a) {
  pdl_wait();
  pdl_trigger();
  const int p = blockIdx.z, r = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= a.C || a.out_op[p] == OutOp::store) return;
  float* y = a.out + p * a.out_step + int64_t(r) * a.C + c;
  *y = apply_out(a.out_op[p], *y, a.bias[p] ? a.bias[p][c] : 0.f, 0.f);
}

}  // namespace

void lora_mid(const LoraArgs& a, Stream stream) {
  launch("lora_mid", lora_mid_kernel, dim3(unsigned((a.D + 127) / 128), unsigned(a.R), unsigned(a.n)), dim3(128), 0,
         stream, a);
}

void lora_epilogue(const LoraArgs& a, Stream stream) {
  launch("lora_epilogue", lora_epilogue_kernel, dim3(unsigned((a.C + 255) / 256), unsigned(a.R), unsigned(a.n)),
         dim3(256), 0, stream, a);
}

}  // namespace rwkv::cuda
