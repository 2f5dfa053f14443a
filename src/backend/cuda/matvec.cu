// Decode matvec, host side: job layout, threads per row, shared memory, and which
// instantiation (matvec_kernel.cuh) runs a launch.
#include <algorithm>
#include <cstdint>

#include "backend/cuda/matvec_kernel.cuh"

namespace rwkv::cuda {
namespace matvec_detail {

RWKV_MATVEC_DECLARE(extern, TensorType::F16, true)
RWKV_MATVEC_DECLARE_ALIGNED(extern)
RWKV_MATVEC_EXTERN(TensorType::BF16)
RWKV_MATVEC_DECLARE_ALIGNED_BF16(extern)
RWKV_MATVEC_DECLARE_WIDE(extern)
RWKV_MATVEC_DECLARE_X16(extern)
RWKV_MATVEC_EXTERN(TensorType::Q8_0)
RWKV_MATVEC_EXTERN(TensorType::Q4_0)
RWKV_MATVEC_EXTERN(TensorType::Q4_1)
RWKV_MATVEC_EXTERN(TensorType::Q5_0)
RWKV_MATVEC_EXTERN(TensorType::Q5_1)
RWKV_MATVEC_EXTERN(TensorType::Q4_K)
RWKV_MATVEC_EXTERN(TensorType::Q5_K)
RWKV_MATVEC_EXTERN(TensorType::Q6_K)

}  // namespace matvec_detail

namespace {

using namespace matvec_detail;

// Items a thread of a launch with T activation rows requests in one memory round; many: a
// one-row launch of a four-block kernel (many_blocks).
int round_items(TensorType type, int T, bool many) {
  using Type = TensorType;
  int items = 0;
  const auto of = [&](auto ty) {
    constexpr TensorType TY = decltype(ty)::value;
    items = T != 1 ? kRoundItems<TY, 4, false> : many ? kRoundItems<TY, 1, true> : kRoundItems<TY, 1, false>;
  };
  if (!with_type<Type::F32, Type::F16, Type::BF16, Type::Q8_0, Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1,
                 Type::Q4_K, Type::Q5_K, Type::Q6_K>(type, of))
    fail(ErrorCode::unsupported, "cuda matvec: unsupported type");
  return items;
}

// Threads per row for a matrix of `type` with rows of `items` work items, `per_round` of
// which a thread requests at once. Among the choices that leave at most a quarter of the
// lanes' item slots idle, as few memory rounds per row as possible: only the first round is
// requested before the PDL wait, and each further one is a dependent round trip (2.9B Q4_K,
// Q5_K and Q6_K rows of 40 items took two or three rounds at 8 threads; one or two at 16:
// +11-14%, NOTES.md run 51; one round at 32 threads, with 60% idle slots, was slower).
// Then few idle lanes, then wide groups (coalescing, and smaller blocks: a block's bytes set
// the grid's tail). Rows over two warps for quantised types (2.9B Q8_0 decode +3%, run 47)
// and in the four-block one-row F16/BF16 kernels (two_warps: five items a thread; run 103),
// not in the other float kernels (2.9B F16 -3.5% at two blocks per SM, run 47).
int choose_tpr(TensorType type, int64_t items, int per_round, bool two_warps) {
  int best = 1;
  bool best_idle = true;  // more than a quarter of the item slots idle
  int64_t best_rounds = INT64_MAX;
  double best_cost = 1e30;
  for (int t = type_info(type).block_size > 1 || two_warps ? kMaxTpr : 32; t >= 1; t /= 2) {
    const int64_t per_thread = (items + t - 1) / t;
    const int64_t rounds = (per_thread + per_round - 1) / per_round;
    const double waste = double(per_thread * t - items) / double(items);
    const double cost = waste + (t < 4 ? 0.3 : 0.0) + (t < 8 ? 0.1 : 0.0);
    const bool idle = waste > 0.25;
    const bool better = idle != best_idle       ? !idle
                        : rounds != best_rounds ? rounds < best_rounds
                                                : cost < best_cost - 1e-9;
    if (better) {
      best_idle = idle;
      best_rounds = rounds;
      best_cost = cost;
      best = t;
    }
  }
  return best;
}

// Threads per block (a multiple of 32 and of every job's tpr, 64..256) for a one-row launch
// small enough to keep 256-thread blocks (fewer than four a SM): the one that puts the fewest
// rows on the busiest SM (blocks spread evenly, ceil(blocks / SMs) on it), the largest on
// ties. The 2.9B W_o product takes 256 blocks of 160 threads instead of 160 of 256, 28 SMs of
// which held two: H100 decode 0.1B Q8_0 +1.2%, 2.9B Q4_K +0.5%, Q8_0 and F16 +0.3% (NOTES.md
// run 110).
int balanced_threads(const MatvecJob* jobs, const int* tprs, int n_jobs) {
  const int64_t sms = device_sms();
  const int max_tpr = *std::max_element(tprs, tprs + n_jobs);
  int best = kThreads;
  int64_t best_load = INT64_MAX;
  for (int threads = kThreads; threads >= 64; threads -= 32) {
    if (threads % max_tpr != 0) continue;
    int64_t blocks = 0;
    for (int i = 0; i < n_jobs; ++i) {
      const int64_t rows_per_block = threads / tprs[i];
      blocks += (jobs[i].W.rows + rows_per_block - 1) / rows_per_block;
    }
    const int64_t load = (blocks + sms - 1) / sms * threads;  // thread-rows on the busiest SM
    if (load < best_load) {
      best_load = load;
      best = threads;
    }
  }
  return best;
}

// Whether a job takes the four-block kernel's items: in a launch of that kernel (many), or as an
// F32 row of the wide one (wide: its F32 rows keep the four-block items, as matvec_kernel does).
bool job_many(const MatvecJob& j, bool many, bool wide) { return many || (wide && j.W.type == TensorType::F32); }

// Threads per row of a job in a launch of T rows whose kernel is the four-block one (many), the
// wide one (wide) or neither.
int job_tpr(const MatvecJob& j, int T, bool many, bool wide) {
  const bool m = job_many(j, many, wide);
  return choose_tpr(j.W.type, j.W.items, round_items(j.W.type, T, m), m);
}

// Whether a one-row launch of 16-bit float weights (ty F16 or BF16, x rows aligned) takes the
// wide kernel (matvec_kernel.cuh, kWide): where the four-block kernel would need more than one
// wave of resident blocks and the wide one needs one, so that every block's weights are
// requested before the PDL wait. At 2.9B that is W_o (2,560 rows: 1,280 blocks of 128 threads,
// 1,056 resident, against 320 blocks of 256 threads, all resident): H100 decode F16 +2.8%,
// BF16 +2.5% (NOTES.md run 128).
bool wide_launch(const MatvecJob* jobs, int n, TensorType ty, bool aligned) {
  if (!many_blocks(ty) || !aligned) return false;
  int64_t many = 0, wide = 0;  // threads of the launch in either kernel
  for (int i = 0; i < n; ++i) {
    many += jobs[i].W.rows * job_tpr(jobs[i], 1, true, false);
    wide += jobs[i].W.rows * job_tpr(jobs[i], 1, false, true);
  }
  const int64_t sms = device_sms();
  return many > sms * 4 * kThreads && wide <= sms * 3 * kThreads;
}

// Whether every round of a one-row job's threads is full (tpr * per_round items divide the
// row), the only jobs given f16 x: where rounds are part empty, its flat form also computes
// the clamped items. With every job on f16 x (NOTES.md run 135) 0.1B F16 decode (768 columns:
// three items of five a thread) lost 4.7%, part of it the fp32 path's slowdown in the shared
// kernel (runs 137-138); f16 x in its own kernel at such widths is not measured.
bool full_rounds(const PackedView& W, int tpr, int per_round) { return W.items % (int64_t(tpr) * per_round) == 0; }

// aligned_x: the launch's float jobs (F16-only or BF16 launches) all have 16-byte aligned x
// rows (x_aligned).
template <int TM, bool kFloat>
void launch_tm(TensorType ty, bool aligned_x, const Batch& batch, int blocks, size_t smem, Stream stream) {
  using Type = TensorType;
  if (ty == Type::F16) {  // float jobs only: the float paths are the kernel
    if (aligned_x) {
      launch_matvec_kernel<Type::F16, TM, true, true>(batch, blocks, smem, stream);
    } else {
      launch_matvec_kernel<Type::F16, TM, true>(batch, blocks, smem, stream);
    }
  } else if (ty == Type::BF16 && aligned_x) {
    launch_matvec_kernel<Type::BF16, TM, kFloat, true>(batch, blocks, smem, stream);
  } else if (!with_type<Type::BF16, Type::Q8_0, Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1, Type::Q4_K, Type::Q5_K,
                        Type::Q6_K>(ty, [&](auto k) {
               launch_matvec_kernel<decltype(k)::value, TM, kFloat>(batch, blocks, smem, stream);
             })) {
    fail(ErrorCode::unsupported, "cuda matvec: unsupported type");
  }
}

// A one-row aligned launch of F16 (float jobs only) or BF16 (with float jobs: floats) weights
// in which a job reads f16 x: the kX16 kernels, wide or four-block.
void launch_x16(TensorType ty, bool wide, bool floats, const Batch& batch, int blocks, size_t smem, Stream stream) {
  using Type = TensorType;
  if (ty == Type::F16 && wide) {
    launch_matvec_kernel<Type::F16, 1, true, true, true, true>(batch, blocks, smem, stream);
  } else if (ty == Type::F16) {
    launch_matvec_kernel<Type::F16, 1, true, true, false, true>(batch, blocks, smem, stream);
  } else if (floats && wide) {
    launch_matvec_kernel<Type::BF16, 1, true, true, true, true>(batch, blocks, smem, stream);
  } else if (floats) {
    launch_matvec_kernel<Type::BF16, 1, true, true, false, true>(batch, blocks, smem, stream);
  } else if (wide) {
    launch_matvec_kernel<Type::BF16, 1, false, true, true, true>(batch, blocks, smem, stream);
  } else {
    launch_matvec_kernel<Type::BF16, 1, false, true, false, true>(batch, blocks, smem, stream);
  }
}

// The instantiation for a job: its own type, or the float-only one for F32/F16.
TensorType kernel_type(TensorType t) { return t == TensorType::F32 ? TensorType::F16 : t; }

// Whether every x row the job's float products read is 16-byte aligned with whole 8-float
// items: x itself and its row stride, or the shared-memory copy (row stride cols) that an
// input transform reads instead.
bool x_aligned(const MatvecJob& j) {
  if (j.W.cols % 8 != 0) return false;
  if (j.in_op != InOp::none) return true;
  return (reinterpret_cast<uintptr_t>(j.x) % 16 == 0) && j.x_stride % 4 == 0;
}

// Shared memory a job needs for T rows (0: reads x from global memory).
size_t job_smem(const MatvecJob& j, int T) {
  const size_t tc = size_t(T) * size_t(j.W.cols);
  if (type_info(j.W.type).block_size > 1) {
    if (j.xq.q0) {
      if (j.xq.cols != j.W.cols || j.in_op != InOp::none)
        fail(ErrorCode::argument, "cuda matvec: quantised x does not match the matrix");
      if (j.xq.split && !quant_x_split_reader(j.W.type))
        fail(ErrorCode::argument, "cuda matvec: " + std::string(type_name(j.W.type)) + " reads x in column order only");
      return 0;
    }
    return 2 * tc + tc / 32 * 16;  // q0, q1, d0, d1, s0, s1
  }
  if (j.in_op == InOp::none) return 0;
  if (tc * sizeof(float) > kFloatStageBytes)
    fail(ErrorCode::argument, "cuda matvec: input transform on too wide a float matrix");
  return tc * sizeof(float);
}

constexpr size_t kMaxSmem = 160 << 10;

// The rows of q from row t on.
QuantX from_row(QuantX q, int t) {
  const int64_t nb = q.cols / 32;
  q.q0 += t * q.cols;
  q.q1 += t * q.cols;
  q.d0 += t * nb;
  q.d1 += t * nb;
  q.s0 += t * nb;
  q.s1 += t * nb;
  return q;
}

}  // namespace

bool matvec_reads_f16(const PackedView& W) {
  if (!many_blocks(W.type)) return false;
  MatvecJob j;
  j.W = W;
  return full_rounds(W, job_tpr(j, 1, true, false), round_items(W.type, 1, true));
}

void matvec(const MatvecJob* jobs, int n_jobs, int T, Stream stream) {
  if (n_jobs < 1 || n_jobs > kMatvecMaxJobs || T < 1 || T > kMatvecMaxRows)
    fail(ErrorCode::argument, "cuda matvec: bad job count " + std::to_string(n_jobs) + " or rows " + std::to_string(T));
  for (int i = 0; i < n_jobs; ++i)
    if (reinterpret_cast<uintptr_t>(jobs[i].x16) % 16 != 0) fail(ErrorCode::argument, "cuda matvec: f16 x not aligned");
  // One kernel instantiation per launch: jobs of a second non-float type go separately.
  TensorType ty = TensorType::F16;
  for (int i = 0; i < n_jobs; ++i)
    if (kernel_type(jobs[i].W.type) != TensorType::F16) ty = kernel_type(jobs[i].W.type);
  MatvecJob now[kMatvecMaxJobs], later[kMatvecMaxJobs];
  int n_now = 0, n_later = 0;
  for (int i = 0; i < n_jobs; ++i) {
    const TensorType k = kernel_type(jobs[i].W.type);
    if (k == ty || k == TensorType::F16)
      now[n_now++] = jobs[i];
    else
      later[n_later++] = jobs[i];
  }
  // Rows go kMaxRowsPerLaunch to a block (grid rows); shared memory is per block.
  const int T_block = std::min(T, kMaxRowsPerLaunch);
  size_t smem = 0;
  for (int i = 0; i < n_now; ++i) smem = std::max(smem, job_smem(now[i], T_block));
  if (smem > kMaxSmem) {  // two launches over halves of the rows
    if (T == 1) fail(ErrorCode::argument, "cuda matvec: activation row too wide for shared memory");
    const int T1 = T / 2;
    MatvecJob second[kMatvecMaxJobs];
    for (int i = 0; i < n_now; ++i) {
      second[i] = now[i];
      second[i].x += T1 * now[i].x_stride;
      second[i].y += T1 * now[i].y_stride;
      if (second[i].y_raw) second[i].y_raw += T1 * now[i].y_stride;
      if (second[i].xq.q0) second[i].xq = from_row(second[i].xq, T1);
    }
    matvec(now, n_now, T1, stream);
    matvec(second, n_now, T - T1, stream);
  } else {
    Batch batch{};
    batch.n_jobs = n_now;
    batch.T = T;
    const bool aligned = std::all_of(now, now + n_now, x_aligned);
    const bool wide = T == 1 && wide_launch(now, n_now, ty, aligned);
    const bool many = T == 1 && many_blocks(ty) && !wide;
    int tprs[kMatvecMaxJobs] = {}, blocks = 0;
    for (int i = 0; i < n_now; ++i) {
      tprs[i] = job_tpr(now[i], T, many, wide);
      blocks += int((now[i].W.rows + kThreads / tprs[i] - 1) / (kThreads / tprs[i]));
      const int per_round = round_items(now[i].W.type, 1, job_many(now[i], many, wide));
      if (T != 1 || !full_rounds(now[i].W, tprs[i], per_round)) now[i].x16 = nullptr;
    }
    // Launches of at least two full waves of 256-thread blocks take blocks of 128 (four per
    // SM): blocks retire, and the next kernel's start, at a finer grain. H100, against 256
    // everywhere: 2.9B Q8_0 +1.3%, Q4_K +2%, F16 and 0.1B unchanged; 128 everywhere lost 4%
    // at 0.1B and 1% at 2.9B F16 (NOTES.md runs 77, 85).
    batch.threads = blocks >= 4 * device_sms() ? kThreads / 2 : kThreads;
    if (T == 1 && batch.threads == kThreads && !wide) batch.threads = balanced_threads(now, tprs, n_now);
    blocks = 0;
    for (int i = 0; i < n_now; ++i) {
      batch.jobs[i].job = now[i];
      batch.jobs[i].tpr = tprs[i];
      batch.jobs[i].block_begin = blocks;
      const int64_t rows_per_block = batch.threads / tprs[i];
      blocks += int((now[i].W.rows + rows_per_block - 1) / rows_per_block);
    }
    smem = (smem + 15) / 16 * 16;
    // The warp sums of two-warp rows, only where a job needs them (TM floats per warp).
    const size_t tm = T == 1 ? 1 : 4;
    batch.red_smem = int(smem);
    if (std::any_of(batch.jobs, batch.jobs + n_now, [](const JobDev& d) { return d.tpr > 32; }))
      smem += tm * size_t(batch.threads / 32) * sizeof(float);
    // Launches with float jobs beside a quantised type take the kernel with their paths.
    const bool floats = ty != TensorType::F16 && std::any_of(now, now + n_now, [](const MatvecJob& j) {
                          return kernel_type(j.W.type) == TensorType::F16;
                        });
    const bool x16 = T == 1 && aligned && (ty == TensorType::F16 || ty == TensorType::BF16) &&
                     std::any_of(now, now + n_now, [](const MatvecJob& j) { return j.x16 != nullptr; });
    if (x16) {
      launch_x16(ty, wide, floats, batch, blocks, smem, stream);
    } else if (wide && ty == TensorType::F16) {
      launch_matvec_kernel<TensorType::F16, 1, true, true, true>(batch, blocks, smem, stream);
    } else if (wide && floats) {
      launch_matvec_kernel<TensorType::BF16, 1, true, true, true>(batch, blocks, smem, stream);
    } else if (wide) {
      launch_matvec_kernel<TensorType::BF16, 1, false, true, true>(batch, blocks, smem, stream);
    } else if (T == 1 && floats) {
      launch_tm<1, true>(ty, aligned, batch, blocks, smem, stream);
    } else if (T == 1) {
      launch_tm<1, false>(ty, aligned, batch, blocks, smem, stream);
    } else if (floats) {
      launch_tm<4, true>(ty, aligned, batch, blocks, smem, stream);
    } else {
      launch_tm<4, false>(ty, aligned, batch, blocks, smem, stream);
    }
  }
  if (n_later > 0) matvec(later, n_later, T, stream);
}

}  // namespace rwkv::cuda
