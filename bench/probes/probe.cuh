// Helpers shared by the standalone CUDA probes of this folder: error checks, PDL launches,
// and the time of a graph replayed after a warm-up. The device side (pdl_wait, pdl_trigger,
// ld_stream16) is the backend's own (src/backend/cuda/common.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "backend/cuda/common.cuh"

using rwkv::cuda::ld_stream16;
using rwkv::cuda::pdl_trigger;
using rwkv::cuda::pdl_wait;

#define CK(x)                                        \
  do {                                               \
    cudaError_t e = (x);                             \
    if (e != cudaSuccess) {                          \
      printf("%s: %s\n", #x, cudaGetErrorString(e)); \
      exit(1);                                       \
    }                                                \
  } while (0)

// A launch of 256 threads per block that may start before the previous kernel ends (PDL).
template <typename K, typename... Args>
void pdl_launch(cudaStream_t st, dim3 grid, size_t smem, K kernel, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(256);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, kernel, args...));
}

// Milliseconds per replay of what `record` enqueues on st (captured into a graph), over ten
// replays after three untimed ones.
template <typename F>
float graph_ms(cudaStream_t st, F record) {
  cudaGraph_t g;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  record();
  CK(cudaStreamEndCapture(st, &g));
  cudaGraphExec_t ge;
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int r = 0; r < 3; ++r) CK(cudaGraphLaunch(ge, st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const int reps = 10;
  CK(cudaEventRecord(e0, st));
  for (int r = 0; r < reps; ++r) CK(cudaGraphLaunch(ge, st));
  CK(cudaEventRecord(e1, st));
  CK(cudaEventSynchronize(e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  return ms / reps;
}
