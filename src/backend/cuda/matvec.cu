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

constexpr int kStageBatch = 8;               // float4 loads in flight per thread while staging
constexpr size_t kFloatStageBytes = 64 << 10;  // float weights: stage fp32 x up to this size

// Row t, column c of the job's activations (4 floats, or 0 past the rows). Aligned jobs
// use one 16-byte load.
__device__ __forceinline__ float4 load_x4(const MatvecJob& job, int64_t e, int64_t cols, bool aligned) {
  const int64_t t = e / cols, c = e - t * cols;
  const float* p = job.x + t * job.x_stride + c;
  if (aligned) return *reinterpret_cast<const float4*>(p);
  return make_float4(p[0], p[1], p[2], p[3]);
}

// Quantises T rows of x (cols a multiple of 32) into shared memory as two int8 terms (XQ).
// Thread i takes float4 chunks i, i + 256, ...; the 8 chunks of one block of 32 are 8
// neighbouring lanes. All loads of a batch are issued before the first is used.
__device__ void stage_quant(const MatvecJob& job, int T, uint8_t* smem, XQ (&xq)[2]) {
  const int cols = int(job.W.cols), nb = cols / 32;
  const int64_t n4 = int64_t(T) * cols / 4;
  int8_t* q0 = reinterpret_cast<int8_t*>(smem);
  int8_t* q1 = q0 + size_t(T) * cols;
  float* d0 = reinterpret_cast<float*>(q1 + size_t(T) * cols);
  float* d1 = d0 + T * nb;
  int* s0 = reinterpret_cast<int*>(d1 + T * nb);
  int* s1 = s0 + T * nb;
  const bool aligned = ((reinterpret_cast<uintptr_t>(job.x) | uintptr_t(job.x_stride * 4)) & 15) == 0;
  for (int64_t b0 = 0; b0 < n4; b0 += int64_t(kThreads) * kStageBatch) {
    float4 v[kStageBatch];
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int64_t idx = b0 + int64_t(k) * kThreads + threadIdx.x;
      v[k] = idx < n4 ? load_x4(job, idx * 4, cols, aligned) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int64_t idx = b0 + int64_t(k) * kThreads + threadIdx.x;
      float f[4] = {apply_in(job.in_op, v[k].x), apply_in(job.in_op, v[k].y), apply_in(job.in_op, v[k].z),
                    apply_in(job.in_op, v[k].w)};
      float amax = fmaxf(fmaxf(fabsf(f[0]), fabsf(f[1])), fmaxf(fabsf(f[2]), fabsf(f[3])));
      for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const float dq0 = amax / 127.f, inv0 = amax > 0.f ? 127.f / amax : 0.f;
      int qa[4];
      float r[4], ramax = 0.f;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        qa[e] = __float2int_rn(f[e] * inv0);
        r[e] = f[e] - float(qa[e]) * dq0;
        ramax = fmaxf(ramax, fabsf(r[e]));
      }
      for (int o = 1; o < 8; o <<= 1) ramax = fmaxf(ramax, __shfl_xor_sync(0xffffffffu, ramax, o));
      const float dq1 = ramax / 127.f, inv1 = ramax > 0.f ? 127.f / ramax : 0.f;
      int qb[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) qb[e] = __float2int_rn(r[e] * inv1);
      int sa = qa[0] + qa[1] + qa[2] + qa[3], sb = qb[0] + qb[1] + qb[2] + qb[3];
      for (int o = 1; o < 8; o <<= 1) {
        sa += __shfl_xor_sync(0xffffffffu, sa, o);
        sb += __shfl_xor_sync(0xffffffffu, sb, o);
      }
      if (idx < n4) {
        auto pack = [](const int(&q)[4]) {
          return int((q[0] & 0xff) | ((q[1] & 0xff) << 8) | ((q[2] & 0xff) << 16) | (uint32_t(q[3]) << 24));
        };
        reinterpret_cast<int*>(q0)[idx] = pack(qa);
        reinterpret_cast<int*>(q1)[idx] = pack(qb);
        if ((threadIdx.x & 7) == 0) {
          const int64_t blk = idx / 8;  // = t * nb + c / 32
          d0[blk] = dq0;
          d1[blk] = dq1;
          s0[blk] = sa;
          s1[blk] = sb;
        }
      }
    }
  }
  xq[0] = XQ{q0, d0, s0, cols, nb};
  xq[1] = XQ{q1, d1, s1, cols, nb};
}

// Copies T rows of x (with the input transform) to shared memory as fp32, row stride cols.
__device__ void stage_float(const MatvecJob& job, int T, float* xs) {
  const int64_t cols = job.W.cols, n = int64_t(T) * cols;
  for (int64_t b0 = 0; b0 < n; b0 += int64_t(kThreads) * kStageBatch) {
    float v[kStageBatch];
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int64_t e = b0 + int64_t(k) * kThreads + threadIdx.x;
      const int64_t t = e / cols;
      v[k] = e < n ? job.x[t * job.x_stride + (e - t * cols)] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < kStageBatch; ++k) {
      const int64_t e = b0 + int64_t(k) * kThreads + threadIdx.x;
      if (e < n) xs[e] = apply_in(job.in_op, v[k]);
    }
  }
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

template <typename It, int TM, int U>
__device__ __forceinline__ void compute_round(const It (&w)[U], int64_t base, int64_t items, int tpr, int T,
                                              const XQ (&xq)[2], const float* xf, int64_t xf_stride, int64_t cols,
                                              float (&acc)[TM]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t it = base + int64_t(tpr) * u;
    if (it >= items) break;
#pragma unroll
    for (int t = 0; t < TM; ++t) {
      if (t >= T) break;
      if constexpr (It::kQuant) {
        acc[t] += w[u].dot(xq[0], t, it) + w[u].dot(xq[1], t, it);
      } else {
        acc[t] += w[u].dot_f(xf + t * xf_stride, cols, it);
      }
    }
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
  const int64_t items = job.W.items, step = int64_t(tpr) * U, cols = job.W.cols;

  // The first round of weights is requested before waiting on the previous kernel.
  It wa[U], wb[U];
  int64_t base = g_lane;
  load_round(wa, job.W, row, row_ok, base, tpr);

  pdl_wait();
  pdl_trigger();
  XQ xq[2] = {};
  const float* xf = job.x;  // float weights: fp32 activations, row t at xf + t * xf_stride
  int64_t xf_stride = job.x_stride;
  if constexpr (It::kQuant) {
    stage_quant(job, T, smem, xq);
  } else if (size_t(T) * size_t(cols) * sizeof(float) <= kFloatStageBytes) {
    stage_float(job, T, reinterpret_cast<float*>(smem));
    xf = reinterpret_cast<const float*>(smem);
    xf_stride = cols;
  }
  __syncthreads();

  // Two register buffers: the next round's loads are in flight while this one computes.
  float acc[TM];
#pragma unroll
  for (int t = 0; t < TM; ++t) acc[t] = 0.f;
  while (row_ok) {
    load_round(wb, job.W, row, row_ok, base + step, tpr);
    compute_round<It, TM, U>(wa, base, items, tpr, T, xq, xf, xf_stride, cols, acc);
    base += step;
    if (base >= items) break;
    load_round(wa, job.W, row, row_ok, base + step, tpr);
    compute_round<It, TM, U>(wb, base, items, tpr, T, xq, xf, xf_stride, cols, acc);
    base += step;
    if (base >= items) break;
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

// Shared memory a job needs for T rows (0: reads x from global memory).
size_t job_smem(const MatvecJob& j, int T) {
  const size_t tc = size_t(T) * size_t(j.W.cols);
  if (type_info(j.W.type).block_size > 1) return 2 * tc + tc / 32 * 16;  // q0, q1, d0, d1, s0, s1
  if (tc * sizeof(float) <= kFloatStageBytes) return tc * sizeof(float);
  if (j.in_op != InOp::none) fail(ErrorCode::argument, "cuda matvec: input transform on too wide a float matrix");
  return 0;
}

constexpr size_t kMaxSmem = 160 << 10;

}  // namespace

void matvec(const MatvecJob* jobs, int n_jobs, int T, Stream stream) {
  if (n_jobs < 1 || n_jobs > kMatvecMaxJobs || T < 1 || T > kMatvecMaxRows)
    fail(ErrorCode::argument, "cuda matvec: bad job count " + std::to_string(n_jobs) + " or rows " + std::to_string(T));
  size_t smem = 0;
  for (int i = 0; i < n_jobs; ++i) smem = std::max(smem, job_smem(jobs[i], T));
  if (smem > kMaxSmem) {  // too many wide rows at once: two launches over halves of the rows
    if (T == 1) fail(ErrorCode::argument, "cuda matvec: activation row too wide for shared memory");
    const int T1 = T / 2;
    MatvecJob second[kMatvecMaxJobs];
    for (int i = 0; i < n_jobs; ++i) {
      second[i] = jobs[i];
      second[i].x += T1 * jobs[i].x_stride;
      second[i].y += T1 * jobs[i].y_stride;
      if (second[i].y_raw) second[i].y_raw += T1 * jobs[i].y_stride;
    }
    matvec(jobs, n_jobs, T1, stream);
    matvec(second, n_jobs, T - T1, stream);
    return;
  }
  Batch batch{};
  batch.n_jobs = n_jobs;
  batch.T = T;
  int blocks = 0;
  for (int i = 0; i < n_jobs; ++i) {
    const MatvecJob& j = jobs[i];
    const int tpr = choose_tpr(j.W.items);
    batch.jobs[i].job = j;
    batch.jobs[i].tpr = tpr;
    batch.jobs[i].block_begin = blocks;
    const int64_t rows_per_block = kThreads / tpr;
    blocks += int((j.W.rows + rows_per_block - 1) / rows_per_block);
  }
  smem = (smem + 15) / 16 * 16;
  if (T == 1) launch_tm<1>(batch, blocks, smem, stream);
  else if (T == 2) launch_tm<2>(batch, blocks, smem, stream);
  else if (T <= 4) launch_tm<4>(batch, blocks, smem, stream);
  else launch_tm<8>(batch, blocks, smem, stream);
}

}  // namespace rwkv::cuda
