// Kernel launches with programmatic dependent launch (PDL) where the device supports it
// (compute capability >= 9.0): the next kernel's launch overlaps this one's tail.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "backend/cuda/common.cuh"
#include "backend/cuda/ops.h"

namespace rwkv::cuda {

bool pdl_enabled();

// Raises a kernel's dynamic shared-memory limit when `bytes` exceeds the 48 KiB default.
template <typename K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
          "cudaFuncSetAttribute");
}

// Sets the shared-memory carveout (percent of the SM's unified L1 / shared memory) that the
// kernel's name and grid call for (device.cpp), where it differs from what the kernel has.
void configure_kernel(const void* kernel, const char* name, int64_t blocks);

// True where thread-block clusters exist (compute capability >= 9.0).
bool clusters_supported();

// cluster_x > 0: the grid's x runs in clusters of that many blocks (sm_90 and later).
template <typename... KArgs, typename... Args>
void launch_clustered(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, int cluster_x,
                      Stream stream, Args&&... args) {
  configure_kernel(reinterpret_cast<const void*>(kernel), name, int64_t(grid.x) * grid.y * grid.z);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {unsigned(cluster_x), 1, 1};
  }
  cfg.attrs = attr;
  cfg.numAttrs = unsigned(n);
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name);
}

template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Stream stream,
            Args&&... args) {
  launch_clustered(name, kernel, grid, block, smem, 0, stream, std::forward<Args>(args)...);
}

// Host-side dispatch from a run-time type to a kernel instantiation: calls
// f(std::integral_constant<TensorType, T>{}) for the T among Ts that equals t. Returns false
// when t is none of them, so that the caller can name its op in the error.
template <TensorType... Ts, typename F>
bool with_type(TensorType t, F&& f) {
  return ((t == Ts && (f(std::integral_constant<TensorType, Ts>{}), true)) || ...);
}

}  // namespace rwkv::cuda
