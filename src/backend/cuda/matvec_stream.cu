// One-row Q8_0 matvec that streams its weights through shared memory (decode; NOTES.md
// run 58). One block per SM takes chunks of R whole rows (chunk c = rows [cR, cR + R));
// thread 0 copies each chunk's quant bytes and scales into a ring of kSlots slots with bulk
// copies (cp.async.bulk, completion on an mbarrier per slot). The first kSlots chunks are
// requested before the PDL wait, and the kernel lets the next one launch at once: with one
// block per SM and a small footprint, the next launch's blocks sit beside this one's and
// fill their rings while it finishes, so that the memory streams across the boundary.
// x comes quantised by its producer (two int8 terms per value, QuantX); each thread's
// 16-byte pieces of a row are the same columns in every chunk, so its x stays in registers.
#include <cstdlib>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/ops.h"
#include "backend/cuda/quant_dev.cuh"

namespace rwkv::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSlots = 4;
constexpr uint32_t kMaxSlotBytes = 24 << 10;  // quant bytes of one chunk at most
constexpr uint32_t kMinChunkBytes = 4 << 10;
constexpr int kMaxPieces = 6;  // 16-byte pieces of a row per thread

// Experiment knobs (NOTES.md run 58): slot bytes, blocks per SM, early triggers.
struct Knobs {
  uint32_t slot_bytes = kMaxSlotBytes;
  int blocks_per_sm = 1;
  int mode = 2;  // 0 off, 1 streamed, 2 streamed with early triggers before it
};
const Knobs& knobs() {
  static const Knobs k = [] {
    Knobs v;
    if (const char* e = std::getenv("RWKV_CUDA_STREAM_MATVEC")) v.mode = std::atoi(e);
    if (const char* e = std::getenv("RWKV_CUDA_STREAM_CHUNK")) v.slot_bytes = uint32_t(std::atoi(e)) / 256 * 256;
    if (const char* e = std::getenv("RWKV_CUDA_STREAM_BPS")) v.blocks_per_sm = std::atoi(e);
    return v;
  }();
  return k;
}
size_t smem_bytes(uint32_t slot_bytes) {
  return size_t(kSlots) * (slot_bytes + slot_bytes / 16) + (kThreads / 32) * 4 + kSlots * 8;
}

struct StreamArgs {
  MatvecJob job;
  int rows_per_chunk;  // R, a power of two
  int tpr;             // threads per row: kThreads / R
  int n_chunks;
  uint32_t slot_bytes;
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void bar_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void bar_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "STREAM_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra STREAM_WAIT;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void copy_in(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}

__global__ void __launch_bounds__(kThreads, 2) matvec_stream_kernel(const __grid_constant__ StreamArgs a) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* ring_q = smem;
  const uint32_t kSlotBytes = a.slot_bytes;
  uint8_t* ring_d = smem + kSlots * kSlotBytes;
  float* red = reinterpret_cast<float*>(ring_d + kSlots * (kSlotBytes / 16));
  uint64_t* bar = reinterpret_cast<uint64_t*>(red + kThreads / 32);
  const MatvecJob& job = a.job;
  const PackedView& W = job.W;
  const int R = a.rows_per_chunk, tpr = a.tpr;
  const uint32_t q_row = uint32_t(W.stride[0]), d_row = uint32_t(W.stride[1]);
  const int mine = (a.n_chunks - int(blockIdx.x) + int(gridDim.x) - 1) / int(gridDim.x);

  // Chunk k of this block (global chunk blockIdx.x + k * gridDim.x) into slot k % kSlots.
  const auto request = [&](int k) {
    const int64_t r0 = int64_t(blockIdx.x + int64_t(k) * gridDim.x) * R;
    const uint32_t rows = uint32_t(min(int64_t(R), W.rows - r0));
    const int slot = k % kSlots;
    bar_expect(&bar[slot], rows * (q_row + d_row));
    copy_in(ring_q + slot * kSlotBytes, W.plane[0] + r0 * q_row, rows * q_row, &bar[slot]);
    copy_in(ring_d + slot * (kSlotBytes / 16), W.plane[1] + r0 * d_row, rows * d_row, &bar[slot]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kSlots; ++s) bar_init(&bar[s]);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    for (int k = 0; k < min(kSlots, mine); ++k) request(k);  // weights: written by no kernel
  }
  pdl_trigger();
  pdl_wait();
  __syncthreads();  // the barriers' initialisation

  // This thread's pieces p = g + tpr * i of every row (16 quants, half a block each).
  const int g = int(threadIdx.x) % tpr, lr = int(threadIdx.x) / tpr;
  const int ppr = int(W.cols / 16);
  int4 x0[kMaxPieces], x1[kMaxPieces];
  float xd0[kMaxPieces], xd1[kMaxPieces];
#pragma unroll
  for (int i = 0; i < kMaxPieces; ++i) {
    const int p = g + tpr * i;
    if (p < ppr) {
      x0[i] = *reinterpret_cast<const int4*>(job.xq.q0 + 16 * p);
      x1[i] = *reinterpret_cast<const int4*>(job.xq.q1 + 16 * p);
      xd0[i] = job.xq.d0[p / 2];
      xd1[i] = job.xq.d1[p / 2];
    } else {
      x0[i] = x1[i] = make_int4(0, 0, 0, 0);
      xd0[i] = xd1[i] = 0.f;
    }
  }

  for (int k = 0; k < mine; ++k) {
    const int slot = k % kSlots;
    const int64_t r0 = int64_t(blockIdx.x + int64_t(k) * gridDim.x) * R;
    const int rows = int(min(int64_t(R), W.rows - r0));
    bar_wait(&bar[slot], uint32_t(k / kSlots) & 1u);
    float acc = 0.f;
    if (lr < rows) {
      const uint8_t* wq = ring_q + slot * kSlotBytes + lr * q_row;
      const uint8_t* wd = ring_d + slot * (kSlotBytes / 16) + lr * d_row;
#pragma unroll
      for (int i = 0; i < kMaxPieces; ++i) {
        const int p = g + tpr * i;
        if (p >= ppr) break;
        const int4 w = ld16<true>(wq + 16 * p);
        const float d = h2f(ld2<true>(wd + 2 * (p / 2)));
        int s0 = __dp4a(w.x, x0[i].x, 0);
        s0 = __dp4a(w.y, x0[i].y, s0);
        s0 = __dp4a(w.z, x0[i].z, s0);
        s0 = __dp4a(w.w, x0[i].w, s0);
        int s1 = __dp4a(w.x, x1[i].x, 0);
        s1 = __dp4a(w.y, x1[i].y, s1);
        s1 = __dp4a(w.z, x1[i].z, s1);
        s1 = __dp4a(w.w, x1[i].w, s1);
        acc += d * (xd0[i] * float(s0) + xd1[i] * float(s1));
      }
    }
    for (int o = min(tpr, 32) >> 1; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (tpr > 32 && (threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();  // every read of the slot (and of red) is done
    if (threadIdx.x == 0 && k + kSlots < mine) request(k + kSlots);
    if (g == 0 && lr < rows) {
      if (tpr > 32) {
        acc = 0.f;
        for (int w = 0; w < tpr / 32; ++w) acc += red[lr * (tpr / 32) + w];
      }
      const int64_t row = r0 + lr;
      const float bias = job.bias ? job.bias[row] : 0.f;
      const float old = job.out_op == OutOp::add ? job.y[row] : 0.f;
      job.y[row] = apply_out(job.out_op, acc, bias, old);
      if (job.out_op == OutOp::add && job.y_raw) job.y_raw[row] = acc;
    }
    if (tpr > 32) __syncthreads();  // red is written again by the next chunk
  }
}
#else
__global__ void matvec_stream_kernel(const __grid_constant__ StreamArgs) {}
#endif

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return v;
  }();
  return n;
}

// Rows per chunk: the most that fit a slot, then fewer while the chunks would not give each
// SM about four (the last round's imbalance is one chunk), down to kMinChunkBytes.
StreamArgs plan(const MatvecJob& job) {
  StreamArgs a{};
  a.job = job;
  const int64_t q_row = int64_t(job.W.stride[0]);
  a.slot_bytes = knobs().slot_bytes;
  int R = 64;
  while (R > 1 && R * q_row > int64_t(a.slot_bytes)) R /= 2;
  const int64_t want = 4 * int64_t(sm_count());
  while (R > 1 && (job.W.rows + R - 1) / R < want && (R / 2) * q_row >= int64_t(kMinChunkBytes)) R /= 2;
  a.rows_per_chunk = R;
  a.tpr = kThreads / R;
  a.n_chunks = int((job.W.rows + R - 1) / R);
  return a;
}

}  // namespace

bool matvec_stream_pays(const MatvecJob& job, int T) {
  const bool on = knobs().mode != 0;
  // Matrices smaller than four full chunks per SM lose to matvec's grid (bench_matvec: the
  // 2.9B W_o, 7 MB, 4.4 -> 5.4 us; every 0.1B layer matrix).
  return on && matvec_stream_fits(job, T) &&
         job.W.rows * int64_t(job.W.stride[0]) >= 4 * int64_t(sm_count()) * int64_t(knobs().slot_bytes) * 5 / 6;
}

bool matvec_stream_early_triggers() { return knobs().mode == 2; }

bool matvec_stream_fits(const MatvecJob& job, int T) {
  const PackedView& W = job.W;
  if (T != 1 || W.type != TensorType::Q8_0 || !job.xq.q0 || job.in_op != InOp::none) return false;
  if (W.stride[0] % 16 != 0 || W.stride[1] % 16 != 0 || W.stride[0] > knobs().slot_bytes) return false;
  if ((reinterpret_cast<uintptr_t>(W.plane[0]) | reinterpret_cast<uintptr_t>(W.plane[1])) % 16 != 0) return false;
  if (reinterpret_cast<uintptr_t>(job.xq.q0) % 16 != 0 || reinterpret_cast<uintptr_t>(job.xq.q1) % 16 != 0)
    return false;
  const StreamArgs a = plan(job);
  return (W.cols / 16 + a.tpr - 1) / a.tpr <= kMaxPieces;
}

void matvec_stream(const MatvecJob& job, Stream stream) {
  if (!matvec_stream_fits(job, 1)) fail(ErrorCode::argument, "cuda matvec_stream: job does not fit the kernel");
  const StreamArgs a = plan(job);
  const size_t smem = smem_bytes(a.slot_bytes);
  allow_smem(matvec_stream_kernel, smem);
  launch("matvec_stream", matvec_stream_kernel, dim3(std::min(a.n_chunks, knobs().blocks_per_sm * sm_count())),
         dim3(kThreads), smem, stream, a);
}

}  // namespace rwkv::cuda
