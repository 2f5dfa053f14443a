// Probe (src/backend/cuda/NOTES.md run 79): a 7 or 28 MB "matvec" behind a tiny kernel in a
// chain of PDL launches in a CUDA graph, us per pair. S1: blocks of 256 threads that load
// one round of 16-byte weight pieces before the PDL wait and reduce them against x after it;
// S1R: the same with Q8_0-like items (two 16-byte quant loads and a 2-byte scale per 32
// weights, x as two int8 terms with float scales, as the decode matvec). "2/SM": 96 KB of
// dynamic shared memory reserved per block (less L1).
//   nvcc -O3 -arch=sm_90 -std=c++17 -Isrc -o wave_probe bench/probes/wave_probe.cu
#include <cuda_fp16.h>

#include "probe.cuh"

__device__ __forceinline__ int dot4(int4 w, int4 x, int s) {
  s = __dp4a(w.x, x.x, s);
  s = __dp4a(w.y, x.y, s);
  s = __dp4a(w.z, x.z, s);
  return __dp4a(w.w, x.w, s);
}

// Tiny stage: 10 blocks read x and write y (LayerNorm-like latency).
__global__ void tiny_kernel(const int* x, int* y) {
  pdl_wait();
  pdl_trigger();
  __shared__ int s;
  if (threadIdx.x == 0) s = 0;
  __syncthreads();
  atomicAdd(&s, x[threadIdx.x] & 1);
  __syncthreads();
  if (threadIdx.x < 64) y[blockIdx.x * 64 + threadIdx.x] = s + threadIdx.x;
}

// S1: block b owns int4s [b*per_block, (b+1)*per_block), R per thread, all in one round.
template <int R>
__global__ void __launch_bounds__(256, 2) s1_kernel(const int4* w, const int* xin, int* out) {
  const int4* p = w + size_t(blockIdx.x) * 256 * R;
  int4 v[R];
#pragma unroll
  for (int k = 0; k < R; ++k) v[k] = ld_stream16(p + k * 256 + threadIdx.x);
  pdl_wait();
  pdl_trigger();
  const int4 x = reinterpret_cast<const int4*>(xin)[threadIdx.x & 63];
  int s = 0;
#pragma unroll
  for (int k = 0; k < R; ++k) s = dot4(v[k], x, s);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) out[blockIdx.x * 8 + (threadIdx.x >> 5)] = s;
}

// S1R: Q8_0-like items (two int4 of quants + a 2-byte scale per 32 weights), x as two int8
// terms with float scales (the decode matvec's Item<Q8_0>::dot twice), R items per thread.
template <int R>
__global__ void __launch_bounds__(256, 2)
    s1r_kernel(const int4* w, const unsigned short* sc, const int* xin, const float* xs, int* out) {
  const size_t base = size_t(blockIdx.x) * 256 * R;
  int4 q0[R], q1[R];
  unsigned short d[R];
#pragma unroll
  for (int k = 0; k < R; ++k) {
    const size_t it = base + k * 256 + threadIdx.x;
    q0[k] = ld_stream16(w + 2 * it);
    q1[k] = ld_stream16(w + 2 * it + 1);
    d[k] = sc[it];
  }
  pdl_wait();
  pdl_trigger();
  const int4* x0 = reinterpret_cast<const int4*>(xin);
  const int4* x1 = x0 + 1024;
  float acc = 0.f;
#pragma unroll
  for (int k = 0; k < R; ++k) {
    const int b = (threadIdx.x + k * 7) & 255;
    const int s0 = dot4(q1[k], x0[2 * b + 1], dot4(q0[k], x0[2 * b], 0));
    const int s1 = dot4(q1[k], x1[2 * b + 1], dot4(q0[k], x1[2 * b], 0));
    const float dd = __half2float(__ushort_as_half(d[k]));
    acc += dd * xs[b] * float(s0) + dd * xs[256 + b] * float(s1);
  }
  for (int o = 8; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 15) == 0) out[blockIdx.x * 16 + (threadIdx.x >> 4)] = int(acc);
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  int *x, *out;
  CK(cudaMalloc(&x, 1 << 20));
  CK(cudaMalloc(&out, 1 << 22));
  CK(cudaMemset(x, 1, 1 << 20));
  CK(cudaFuncSetAttribute(s1_kernel<10>, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
  CK(cudaFuncSetAttribute(s1r_kernel<5>, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
  CK(cudaFuncSetAttribute(s1r_kernel<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
  const int nbuf = 6;
  for (size_t mb : {size_t(7), size_t(28)}) {
    const size_t bytes = mb << 20;
    const size_t n4 = bytes / 16;
    int4* w;
    CK(cudaMalloc(&w, bytes * nbuf));
    CK(cudaMemset(w, 1, bytes * nbuf));
    char* scales;
    CK(cudaMalloc(&scales, (n4 / 16 + 1) * 16 * nbuf));
    CK(cudaMemset(scales, 0, (n4 / 16 + 1) * 16 * nbuf));
    const int pairs = 96;
    for (int variant = 0; variant < 6; ++variant) {
      const size_t big = 96 << 10;  // dynamic shared memory that leaves room for two blocks per SM
      const double us =
          1e3 *
          graph_ms(st,
                   [&] {
                     for (int i = 0; i < pairs; ++i) {
                       const int4* wi = w + (i % nbuf) * n4;
                       pdl_launch(st, dim3(10), 0, tiny_kernel, (const int*)x, out + 4096);
                       const unsigned items = unsigned(n4 / 2);  // 32-weight items (scales beside)
                       const auto* sc =
                           reinterpret_cast<const unsigned short*>(scales + (i % nbuf) * (n4 / 16 + 1) * 16);
                       const size_t smem = variant % 2 ? big : 0;
                       if (variant < 2) {
                         pdl_launch(st, dim3(unsigned(n4 / (256 * 10))), smem, s1_kernel<10>, wi, (const int*)x, out);
                       } else if (variant < 4) {
                         pdl_launch(st, dim3(items / (256 * 5)), smem, s1r_kernel<5>, wi, sc, (const int*)x,
                                    (const float*)x, out);
                       } else {
                         pdl_launch(st, dim3(items / (256 * 3)), smem, s1r_kernel<3>, wi, sc, (const int*)x,
                                    (const float*)x, out);
                       }
                     }
                   }) /
          pairs;
      const char* names[] = {"S1 10 int4",        "S1 10 int4, 2 blocks/SM",
                             "Q8_0-like 5 items", "Q8_0-like 5 items, 2/SM",
                             "Q8_0-like 3 items", "Q8_0-like 3 items, 2/SM"};
      printf("%2zu MB: %-30s tiny+matvec %6.2f us  (%5.0f GB/s over the pair)\n", mb, names[variant], us,
             bytes / 1e3 / us);
    }
    CK(cudaFree(w));
    CK(cudaFree(scales));
  }
  return 0;
}
