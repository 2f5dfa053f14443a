// Probe (src/backend/cuda/NOTES.md run 78): the cost of a stage boundary as a dependent
// kernel launch (PDL, in a CUDA graph) against a software grid barrier inside one
// persistent kernel, with 0-28 MB of weight bytes streamed per stage before the dependency
// (as a decode product loads its weights before its PDL wait). us per stage.
//   nvcc -O3 -arch=sm_90 -std=c++17 -Isrc -o sync_probe bench/probes/sync_probe.cu

#include "probe.cuh"

// Streams `per_block` bytes of w (16-byte loads), returns a sum so the loads are kept.
__device__ __forceinline__ int stream(const int4* w, size_t per_block_int4, int blk) {
  int s = 0;
  const int4* p = w + size_t(blk) * per_block_int4;
  for (size_t i = threadIdx.x; i < per_block_int4; i += blockDim.x * 4) {
    int4 a[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      size_t j = i + k * blockDim.x;
      a[k] = j < per_block_int4 ? __ldcs(p + j) : make_int4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) s += a[k].x ^ a[k].w;
  }
  return s;
}

// One stage: block reads x[blk] (written by the previous stage), writes y[blk].
__global__ void stage_kernel(const float* x, float* y, const int4* w, size_t per_block_int4, int* sink) {
  int s = per_block_int4 ? stream(w, per_block_int4, blockIdx.x) : 0;
  pdl_wait();
  pdl_trigger();
  __shared__ float v;
  if (threadIdx.x == 0) v = x[(blockIdx.x * 7) % gridDim.x] + 1.f;
  __syncthreads();
  if (threadIdx.x == 0) y[blockIdx.x] = v;
  if (s == 0x7fffffff) sink[0] = s;
}

__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned nblocks, unsigned& epoch) {
  __syncthreads();
  if (threadIdx.x == 0) {
    epoch += nblocks;
    __threadfence();
    atomicAdd(count, 1u);
    unsigned v;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(count) : "memory");
    } while (int(v - epoch) < 0);
  }
  __syncthreads();
}

__global__ void persistent_kernel(float* a, float* b, int stages, unsigned* count, const int4* w, size_t per_block_int4,
                                  size_t stage_int4, int* sink) {
  unsigned epoch = 0;
  int s = 0;
  __shared__ float v;
  for (int st = 0; st < stages; ++st) {
    const float* x = (st & 1) ? b : a;
    float* y = (st & 1) ? a : b;
    // next stage's weights first (as PDL would), then the barrier
    if (per_block_int4) s += stream(w + size_t(st % 8) * stage_int4, per_block_int4, blockIdx.x);
    grid_barrier(count, gridDim.x, epoch);
    if (threadIdx.x == 0) v = __ldcg(x + (blockIdx.x * 7) % gridDim.x) + 1.f;
    __syncthreads();
    if (threadIdx.x == 0) y[blockIdx.x] = v;
  }
  if (s == 0x7fffffff) sink[0] = s;
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  float *a, *b;
  int* sink;
  unsigned* count;
  CK(cudaMalloc(&a, 1 << 20));
  CK(cudaMalloc(&b, 1 << 20));
  CK(cudaMalloc(&sink, 64));
  CK(cudaMalloc(&count, 64));
  CK(cudaMemset(a, 0, 1 << 20));
  CK(cudaMemset(b, 0, 1 << 20));
  const size_t wbytes = size_t(8) * 32 << 20;  // 8 stage buffers of 32 MB (larger than L2 in all)
  int4* w;
  CK(cudaMalloc(&w, wbytes));
  CK(cudaMemset(w, 1, wbytes));
  const int stages = 256;
  for (size_t stage_mb : {size_t(0), size_t(1), size_t(7), size_t(28)}) {
    for (int G : {40, 2 * sms}) {
      const size_t stage_int4 = (stage_mb << 20) / 16;
      const size_t per_block = stage_int4 / G;
      // chain of dependent launches with PDL, captured in a graph
      const double us_launch = 1e3 *
                               graph_ms(st,
                                        [&] {
                                          for (int i = 0; i < stages; ++i) {
                                            const float* x = (i & 1) ? b : a;
                                            float* y = (i & 1) ? a : b;
                                            pdl_launch(st, dim3(G), 0, stage_kernel, x, y,
                                                       (const int4*)(w + (i % 8) * stage_int4), per_block, sink);
                                          }
                                        }) /
                               stages;
      cudaEvent_t e0, e1;
      CK(cudaEventCreate(&e0));
      CK(cudaEventCreate(&e1));
      const int reps = 10;
      float ms;
      // persistent kernel with software grid barriers
      CK(cudaMemset(count, 0, 64));
      for (int r = 0; r < 2; ++r) {
        persistent_kernel<<<G, 256, 0, st>>>(a, b, stages, count, w, per_block, stage_int4, sink);
        CK(cudaMemsetAsync(count, 0, 64, st));
      }
      CK(cudaEventRecord(e0, st));
      for (int r = 0; r < reps; ++r) {
        persistent_kernel<<<G, 256, 0, st>>>(a, b, stages, count, w, per_block, stage_int4, sink);
        CK(cudaMemsetAsync(count, 0, 64, st));
      }
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      CK(cudaGetLastError());
      CK(cudaEventElapsedTime(&ms, e0, e1));
      const double us_barrier = ms * 1e3 / (reps * stages);
      const double gbs = stage_mb ? (stage_mb << 20) / 1e3 : 0;  // bytes per us
      printf(
          "stage %3zu MB, %4d blocks: PDL launch chain %6.2f us/stage (%6.0f GB/s) | grid barrier %6.2f us/stage "
          "(%6.0f GB/s)\n",
          stage_mb, G, us_launch, gbs / us_launch, us_barrier, gbs / us_barrier);
      CK(cudaEventDestroy(e0));
      CK(cudaEventDestroy(e1));
    }
  }
  return 0;
}
