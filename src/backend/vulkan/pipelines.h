// Compute pipelines built from the SPIR-V embedded at build time (spirv_blobs.cpp, generated
// from shaders/*.comp), created on first use and kept for the life of the device. Every
// pipeline uses one push-descriptor set of storage buffers and one push-constant block.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/vulkan/loader.h"

namespace rwkv::vk {

class Context;

struct SpirvBlob {
  const char* name;  // the shader's variant name, e.g. "matvec_q8_0"
  const uint32_t* words;
  size_t n_words;
};
// The embedded SPIR-V of `name`, or nullptr (defined in the generated spirv_blobs.cpp).
const SpirvBlob* find_spirv(std::string_view name);

// A shader's resources: binding b (0, 1, ...) is an array of binding_counts[b] storage
// buffers; push_bytes of push constants.
struct ShaderInterface {
  std::vector<uint32_t> binding_counts;
  uint32_t push_bytes = 0;
};

// A compute pipeline of `spirv` (entry point main) in `layout`, with specialisation constants
// 0, 1, ... = `spec`, through the context's pipeline cache; with RWKV_VULKAN_PIPELINE_STATS
// the driver's statistics are printed under `name`. Throws Error(backend) naming it.
VkPipeline create_compute_pipeline(Context& ctx, std::span<const uint32_t> spirv, VkPipelineLayout layout,
                                   std::span<const uint32_t> spec, const std::string& name);

struct Pipeline {
  VkPipeline pipeline = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
};

class Pipelines {
 public:
  explicit Pipelines(Context& ctx) : ctx_(ctx) {}
  ~Pipelines();
  Pipelines(const Pipelines&) = delete;
  Pipelines& operator=(const Pipelines&) = delete;

  // The pipeline of embedded shader `name` with specialisation constants 0, 1, ... = `spec`.
  const Pipeline& get(const std::string& name, const ShaderInterface& iface, std::span<const uint32_t> spec);
  bool created_any() const { return !pipelines_.empty(); }

 private:
  struct Layout {
    VkDescriptorSetLayout set = VK_NULL_HANDLE;
    VkPipelineLayout pipeline = VK_NULL_HANDLE;
  };
  const Layout& layout(const ShaderInterface& iface);

  Context& ctx_;
  std::map<std::string, Layout> layouts_;
  std::map<std::string, Pipeline> pipelines_;
};

}  // namespace rwkv::vk
