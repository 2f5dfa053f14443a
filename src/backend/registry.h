// Factories of the backends compiled into this build (registry.cpp picks among them).
#pragma once

#include <memory>

#include "backend/backend.h"

namespace rwkv {

std::unique_ptr<Backend> make_cpu_ref_backend(const BackendOptions& options);
std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options);
#if defined(RWKV_HAVE_CUDA)
// Throws Error(backend) with a one-line reason when no usable CUDA device exists.
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);
#endif
#if defined(RWKV_HAVE_VULKAN)
// allow_cpu_devices: accept a CPU-type adapter (lavapipe) when picking automatically.
std::unique_ptr<Backend> make_vulkan_backend(const BackendOptions& options, bool allow_cpu_devices);
#endif

}  // namespace rwkv
