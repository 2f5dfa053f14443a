// The Vulkan adapters of this machine, for `rwkv devices` and for picking one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rwkv {

struct VulkanDeviceInfo {
  int index = 0;               // the value BackendOptions::device takes to pick it
  std::string name;            // "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)"
  std::string type;            // "discrete", "integrated", "virtual", "cpu" or "other"
  uint64_t memory_bytes = 0;   // largest device-local heap
  std::string driver;          // driver name and info, e.g. "NVIDIA 580.159.04", "llvmpipe Mesa 22.3.6"
  std::string api_version;     // "1.3.230"
  uint32_t subgroup_size = 0;  // threads of one subgroup (warp / wave)
  bool fp16 = false;           // shaderFloat16
  bool int8 = false;           // shaderInt8
  bool coopmat = false;        // has the tensor-core products the prefill matmul uses
                               // (VK_NV_cooperative_matrix, float16 16x8x16 fragments, float32
                               // accumulators, subgroups of 32; RWKV_VULKAN_COOPMAT=0: not used)
  bool usable = false;         // has every feature the backend needs
  std::string missing;         // when not usable: the missing features, e.g. "VK_KHR_push_descriptor"
};

// Every adapter, in the loader's order. Throws Error(backend) with a one-line reason when
// there is no Vulkan loader or no instance can be created; an empty list means no adapters.
std::vector<VulkanDeviceInfo> list_vulkan_devices();

}  // namespace rwkv
