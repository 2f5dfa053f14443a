// Matrix-vector products for decode (spec §2.2 steps 3-8, 14, §2.4): y = W x for T <= 8
// activation rows, several matrices per launch. A group of `tpr` threads owns one output
// row and walks its work items (packed.h) with streaming 16-byte loads; the first round of
// weight loads is issued before the PDL wait, so it overlaps the previous kernel's tail.
// Quantised weights: x is quantised per block of 32 to int8 in shared memory and the dot
// products use __dp4a. Float weights: x is read as fp32 (L1-cached).
#include <algorithm>

#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kThreads = 256;

struct JobDev {
  MatvecJob job;
  int tpr;          // threads per output row (power of two <= 32)
  int block_begin;  // first block of this job in the grid
};
struct Batch {
  JobDev jobs[kMatvecMaxJobs];
  int n_jobs;
  int T;
};

__device__ __forceinline__ float apply_in(InOp op, float v) {
  switch (op) {
    case InOp::tanh: return tanhf(v);
    case InOp::sigmoid: return sigmoidf_(v);
    default: return v;
  }
}

// Quantises T rows of x (cols a multiple of 32) into shared memory: one warp per block.
__device__ void stage_x(const MatvecJob& job, int T, uint8_t* smem, XQ& xq) {
  const int cols = int(job.W.cols), nb = cols / 32;
  int8_t* q = reinterpret_cast<int8_t*>(smem);
  float* d = reinterpret_cast<float*>(smem + size_t(T) * cols);
  int* s = reinterpret_cast<int*>(d + T * nb);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  for (int bi = warp; bi < T * nb; bi += n_warps) {
    const int t = bi / nb, b = bi - t * nb;
    const float v = apply_in(job.in_op, job.x[t * job.x_stride + 32 * b + lane]);
    const float amax = warp_max(fabsf(v));
    const float scale = amax / 127.f;
    const int qi = amax > 0.f ? __float2int_rn(v / scale) : 0;
    q[size_t(t) * cols + 32 * b + lane] = int8_t(qi);
    const int sum = warp_sum_int(qi);
    if (lane == 0) {
      d[bi] = scale;
      s[bi] = sum;
    }
  }
  xq.q = q;
  xq.d = d;
  xq.s = s;
  xq.cols = cols;
  xq.nb = nb;
}

__device__ __forceinline__ void store_out(const MatvecJob& job, int t, int64_t row, float v) {
  float* y = job.y + t * job.y_stride + row;
  switch (job.out_op) {
    case OutOp::store: *y = v; break;
    case OutOp::add:
      *y += v;
      if (job.y_raw) job.y_raw[t * job.y_stride + row] = v;
      break;
    case OutOp::decay: *y = decay_from_logit(job.bias[row] + v); break;
    case OutOp::sigmoid: *y = sigmoidf_(job.bias[row] + v); break;
    case OutOp::relu_sq: {
      const float r = fmaxf(v, 0.f);
      *y = r * r;
      break;
    }
  }
}

// Loads the U items base, base + tpr, ... of `row` (those that exist) into registers.
template <typename It, int U>
__device__ __forceinline__ void load_round(It (&w)[U], const PackedView& W, int64_t row, bool row_ok, int64_t base,
                                           int tpr) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t it = base + int64_t(tpr) * u;
    if (row_ok && it < W.items) w[u].load(W, row, it);
  }
}

template <TensorType TY, int TM>
__device__ __forceinline__ void run_job(const JobDev& jd, int blk, int T, uint8_t* smem) {
  using It = Item<TY>;
  constexpr int U = It::kUnroll;
  const MatvecJob& job = jd.job;
  const int tpr = jd.tpr;
  const int g_lane = threadIdx.x & (tpr - 1);
  const int64_t row = int64_t(blk) * (kThreads / tpr) + threadIdx.x / tpr;
  const bool row_ok = row < job.W.rows;
  const int64_t items = job.W.items;

  // The first round of weights is requested before waiting on the previous kernel.
  It w[U];
  int64_t base = g_lane;
  load_round(w, job.W, row, row_ok, base, tpr);

  pdl_wait();
  pdl_trigger();
  XQ xq{};
  const float* xf = job.x;  // float weights: fp32 activations, row t at xf + t * xf_stride
  int64_t xf_stride = job.x_stride;
  if constexpr (It::kQuant) {
    stage_x(job, T, smem, xq);
  } else if (job.in_op != InOp::none) {
    float* xs = reinterpret_cast<float*>(smem);
    const int64_t cols = job.W.cols;
    for (int64_t e = threadIdx.x; e < T * cols; e += blockDim.x) {
      const int64_t t = e / cols;
      xs[e] = apply_in(job.in_op, job.x[t * job.x_stride + (e - t * cols)]);
    }
    xf = xs;
    xf_stride = cols;
  }
  __syncthreads();

  float acc[TM];
#pragma unroll
  for (int t = 0; t < TM; ++t) acc[t] = 0.f;
  while (row_ok && base < items) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t it = base + int64_t(tpr) * u;
      if (it >= items) break;
#pragma unroll
      for (int t = 0; t < TM; ++t) {
        if (t >= T) break;
        if constexpr (It::kQuant) {
          acc[t] += w[u].dot(xq, t, it);
        } else {
          acc[t] += w[u].dot_f(xf + t * xf_stride, job.W.cols, it);
        }
      }
    }
    base += int64_t(tpr) * U;
    load_round(w, job.W, row, row_ok, base, tpr);
  }
#pragma unroll
  for (int t = 0; t < TM; ++t) {
    for (int o = tpr >> 1; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if (row_ok && g_lane == 0) {
#pragma unroll
    for (int t = 0; t < TM; ++t)
      if (t < T) store_out(job, t, row, acc[t]);
  }
}

template <int TM>
__global__ void __launch_bounds__(kThreads, 2) matvec_kernel(const __grid_constant__ Batch batch) {
  extern __shared__ __align__(16) uint8_t smem[];
  int j = 0;
  while (j + 1 < batch.n_jobs && int(blockIdx.x) >= batch.jobs[j + 1].block_begin) ++j;
  const JobDev& jd = batch.jobs[j];
  const int blk = int(blockIdx.x) - jd.block_begin;
#define RWKV_RUN_JOB(TY) run_job<TY, TM>(jd, blk, batch.T, smem)
  switch (jd.job.W.type) {
    RWKV_CUDA_TYPE_CASES(RWKV_RUN_JOB)
    default: break;
  }
#undef RWKV_RUN_JOB
}

// Threads per row: prefer few idle lanes, then wide groups (coalescing).
int choose_tpr(int64_t items) {
  int best = 1;
  double best_cost = 1e30;
  for (int t = 32; t >= 1; t /= 2) {
    const int64_t rounds = (items + t - 1) / t;
    const double waste = double(rounds * t - items) / double(items);
    const double cost = waste + (t < 4 ? 0.3 : 0.0) + (t < 8 ? 0.1 : 0.0);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = t;
    }
  }
  return best;
}

template <int TM>
void launch_tm(const Batch& batch, int blocks, size_t smem, Stream stream) {
  allow_smem(matvec_kernel<TM>, smem);
  launch("matvec", matvec_kernel<TM>, dim3(blocks), dim3(kThreads), smem, stream, batch);
}

}  // namespace

void matvec(const MatvecJob* jobs, int n_jobs, int T, Stream stream) {
  if (n_jobs < 1 || n_jobs > kMatvecMaxJobs || T < 1 || T > kMatvecMaxRows)
    fail(ErrorCode::argument, "cuda matvec: bad job count " + std::to_string(n_jobs) + " or rows " + std::to_string(T));
  Batch batch{};
  batch.n_jobs = n_jobs;
  batch.T = T;
  int blocks = 0;
  size_t smem = 0;
  for (int i = 0; i < n_jobs; ++i) {
    const MatvecJob& j = jobs[i];
    const int tpr = choose_tpr(j.W.items);
    batch.jobs[i].job = j;
    batch.jobs[i].tpr = tpr;
    batch.jobs[i].block_begin = blocks;
    const int64_t rows_per_block = kThreads / tpr;
    blocks += int((j.W.rows + rows_per_block - 1) / rows_per_block);
    const bool quant = type_info(j.W.type).block_size > 1;
    if (quant) {
      smem = std::max(smem, size_t(T) * size_t(j.W.cols) / 32 * (32 + 8));  // q + scale + sum
    } else if (j.in_op != InOp::none) {
      smem = std::max(smem, size_t(T) * size_t(j.W.cols) * sizeof(float));  // transformed fp32 x
    }
  }
  smem = (smem + 15) / 16 * 16;
  if (smem > 200 * 1024) fail(ErrorCode::argument, "cuda matvec: activation rows too wide for shared memory");
  if (T == 1) launch_tm<1>(batch, blocks, smem, stream);
  else if (T == 2) launch_tm<2>(batch, blocks, smem, stream);
  else if (T <= 4) launch_tm<4>(batch, blocks, smem, stream);
  else launch_tm<8>(batch, blocks, smem, stream);
}

}  // namespace rwkv::cuda
