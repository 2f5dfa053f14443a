#include "backend/vulkan/pipelines.h"

#include <cstdio>

#include "backend/vulkan/context.h"
#include "common/error.h"

namespace rwkv::vk {
namespace {

// One line per executable of `pipeline` on stderr: "vulkan pipeline KEY [EXECUTABLE]: name
// value, ...", as the driver reports them (RWKV_VULKAN_PIPELINE_STATS).
void print_statistics(const Functions& fn, VkDevice device, VkPipeline pipeline, const std::string& key) {
  VkPipelineInfoKHR info{};
  info.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR;
  info.pipeline = pipeline;
  uint32_t n = 0;
  if (fn.vkGetPipelineExecutablePropertiesKHR(device, &info, &n, nullptr) != VK_SUCCESS) return;
  std::vector<VkPipelineExecutablePropertiesKHR> execs(n);
  for (auto& e : execs) e.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR;
  if (fn.vkGetPipelineExecutablePropertiesKHR(device, &info, &n, execs.data()) != VK_SUCCESS) return;
  for (uint32_t i = 0; i < n; ++i) {
    VkPipelineExecutableInfoKHR ei{};
    ei.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR;
    ei.pipeline = pipeline;
    ei.executableIndex = i;
    uint32_t m = 0;
    if (fn.vkGetPipelineExecutableStatisticsKHR(device, &ei, &m, nullptr) != VK_SUCCESS) continue;
    std::vector<VkPipelineExecutableStatisticKHR> stats(m);
    for (auto& st : stats) st.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
    if (fn.vkGetPipelineExecutableStatisticsKHR(device, &ei, &m, stats.data()) != VK_SUCCESS) continue;
    std::string line =
        "vulkan pipeline " + key + " [" + execs[i].name + ", subgroup " + std::to_string(execs[i].subgroupSize) + "]:";
    for (uint32_t k = 0; k < m; ++k) {
      const VkPipelineExecutableStatisticKHR& st = stats[k];
      std::string value;
      switch (st.format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          value = st.value.b32 ? "true" : "false";
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          value = std::to_string(st.value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          value = std::to_string(st.value.u64);
          break;
        default:
          value = std::to_string(st.value.f64);
          break;
      }
      line += std::string(k == 0 ? " " : ", ") + st.name + " " + value;
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

}  // namespace

VkPipeline create_compute_pipeline(Context& ctx, std::span<const uint32_t> spirv, VkPipelineLayout layout,
                                   std::span<const uint32_t> spec, const std::string& name) {
  const Functions& fn = ctx.fn();
  VkShaderModuleCreateInfo mci{};
  mci.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  mci.codeSize = spirv.size() * 4;
  mci.pCode = spirv.data();
  VkShaderModule module = VK_NULL_HANDLE;
  check(fn.vkCreateShaderModule(ctx.device(), &mci, nullptr, &module), ("vkCreateShaderModule of " + name).c_str());

  std::vector<VkSpecializationMapEntry> entries;
  for (uint32_t i = 0; i < spec.size(); ++i) entries.push_back({i, i * 4, 4});
  VkSpecializationInfo si{};
  si.mapEntryCount = uint32_t(entries.size());
  si.pMapEntries = entries.data();
  si.dataSize = spec.size() * 4;
  si.pData = spec.data();

  VkComputePipelineCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  ci.stage.module = module;
  ci.stage.pName = "main";
  ci.stage.pSpecializationInfo = spec.empty() ? nullptr : &si;
  ci.layout = layout;
  if (ctx.pipeline_stats()) ci.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  VkPipeline pipeline = VK_NULL_HANDLE;
  const VkResult r = fn.vkCreateComputePipelines(ctx.device(), ctx.pipeline_cache(), 1, &ci, nullptr, &pipeline);
  fn.vkDestroyShaderModule(ctx.device(), module, nullptr);
  check(r, ("vkCreateComputePipelines of " + name).c_str());
  if (ctx.pipeline_stats()) print_statistics(fn, ctx.device(), pipeline, name);
  return pipeline;
}

Pipelines::~Pipelines() {
  const Functions& fn = ctx_.fn();
  for (auto& [key, p] : pipelines_) fn.vkDestroyPipeline(ctx_.device(), p.pipeline, nullptr);
  for (auto& [key, l] : layouts_) {
    fn.vkDestroyPipelineLayout(ctx_.device(), l.pipeline, nullptr);
    fn.vkDestroyDescriptorSetLayout(ctx_.device(), l.set, nullptr);
  }
}

const Pipelines::Layout& Pipelines::layout(const ShaderInterface& iface) {
  std::string key = std::to_string(iface.push_bytes);
  for (uint32_t c : iface.binding_counts) key.append(",").append(std::to_string(c));
  auto it = layouts_.find(key);
  if (it != layouts_.end()) return it->second;

  const Functions& fn = ctx_.fn();
  std::vector<VkDescriptorSetLayoutBinding> bindings;
  for (uint32_t b = 0; b < iface.binding_counts.size(); ++b) {
    VkDescriptorSetLayoutBinding lb{};
    lb.binding = b;
    lb.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    lb.descriptorCount = iface.binding_counts[b];
    lb.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    bindings.push_back(lb);
  }
  Layout l;
  VkDescriptorSetLayoutCreateInfo sci{};
  sci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  sci.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
  sci.bindingCount = uint32_t(bindings.size());
  sci.pBindings = bindings.data();
  check(fn.vkCreateDescriptorSetLayout(ctx_.device(), &sci, nullptr, &l.set), "vkCreateDescriptorSetLayout");
  VkPushConstantRange range{};
  range.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  range.size = iface.push_bytes;
  VkPipelineLayoutCreateInfo pci{};
  pci.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  pci.setLayoutCount = 1;
  pci.pSetLayouts = &l.set;
  pci.pushConstantRangeCount = iface.push_bytes > 0 ? 1 : 0;
  pci.pPushConstantRanges = &range;
  const VkResult r = fn.vkCreatePipelineLayout(ctx_.device(), &pci, nullptr, &l.pipeline);
  if (r != VK_SUCCESS) {
    fn.vkDestroyDescriptorSetLayout(ctx_.device(), l.set, nullptr);
    check(r, "vkCreatePipelineLayout");
  }
  return layouts_.emplace(key, l).first->second;
}

const Pipeline& Pipelines::get(const std::string& name, const ShaderInterface& iface, std::span<const uint32_t> spec) {
  std::string key = name;
  for (uint32_t v : spec) key.append(":").append(std::to_string(v));
  auto it = pipelines_.find(key);
  if (it != pipelines_.end()) return it->second;

  const SpirvBlob* blob = find_spirv(name);
  if (blob == nullptr) fail(ErrorCode::backend, "vulkan: no embedded shader named '" + name + "'");
  const Layout& l = layout(iface);
  Pipeline p;
  p.layout = l.pipeline;
  p.pipeline = create_compute_pipeline(ctx_, std::span(blob->words, blob->n_words), l.pipeline, spec, key);
  return pipelines_.emplace(key, p).first->second;
}

}  // namespace rwkv::vk
