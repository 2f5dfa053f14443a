// Probe (bench/RESULTS-vulkan.md, session 25): what a stage boundary of a decode step costs
// on a Vulkan device, as a pipeline barrier between dispatches (what the backend records
// today) against a software grid barrier inside one dispatch of co-resident workgroups, with
// 0-28 MB of weight bytes streamed per stage. The Vulkan counterpart of the CUDA probe
// sync_probe.cu (src/backend/cuda/NOTES.md run 78). Prints us per stage, from the
// difference of two chain lengths (so submission and fixed costs cancel), and checks that
// every stage saw the previous one's writes (the grid barrier needs every workgroup
// resident at once: on lavapipe they are not, and those rows say NO). Built with the
// benchmarks of a Vulkan build (bench/CMakeLists.txt compiles its shader,
// vk_sync_probe.comp, in two variants):
//   build/bench/vk_sync_probe [device index]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "backend/vulkan/context.h"
#include "common/error.h"

using namespace rwkv::vk;

namespace {

struct Push {
  uint32_t per_wg, stage_words, slots, stage, stages;
};

constexpr uint32_t kWorkgroup = 256;
constexpr uint64_t kWeightBytes = 1ull << 30;  // stages read distinct slots of this: never all in L2

std::vector<uint32_t> read_spirv(const char* path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.empty() || bytes.size() % 4 != 0)
    rwkv::fail(rwkv::ErrorCode::io, std::string("cannot read SPIR-V ") + path);
  std::vector<uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

void memory_barrier(const Functions& fn, VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src,
                    VkPipelineStageFlags dst_stage, VkAccessFlags dst) {
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = src;
  mb.dstAccessMask = dst;
  fn.vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

class Probe {
 public:
  Probe(Context& ctx, const char* stage_spv, const char* persistent_spv)
      : ctx_(ctx),
        weights_(ctx, kWeightBytes, MemoryKind::device, "probe weights"),
        a_(ctx, 64 * 1024, MemoryKind::device, "probe a"),
        b_(ctx, 64 * 1024, MemoryKind::device, "probe b"),
        sync_(ctx, 16, MemoryKind::device, "probe sync"),
        readback_(ctx, 3 * 64 * 1024, MemoryKind::readback, "probe readback") {
    const Functions& fn = ctx.fn();
    std::vector<VkDescriptorSetLayoutBinding> bindings(4);
    for (uint32_t b = 0; b < 4; ++b) {
      bindings[b].binding = b;
      bindings[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      bindings[b].descriptorCount = 1;
      bindings[b].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo sci{};
    sci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
    sci.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    sci.bindingCount = 4;
    sci.pBindings = bindings.data();
    check(fn.vkCreateDescriptorSetLayout(ctx.device(), &sci, nullptr, &set_), "vkCreateDescriptorSetLayout");
    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Push)};
    VkPipelineLayoutCreateInfo pci{};
    pci.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
    pci.setLayoutCount = 1;
    pci.pSetLayouts = &set_;
    pci.pushConstantRangeCount = 1;
    pci.pPushConstantRanges = &range;
    check(fn.vkCreatePipelineLayout(ctx.device(), &pci, nullptr, &layout_), "vkCreatePipelineLayout");
    stage_ = pipeline(read_spirv(stage_spv));
    persistent_ = pipeline(read_spirv(persistent_spv));
  }
  ~Probe() {
    const Functions& fn = ctx_.fn();
    fn.vkDestroyPipeline(ctx_.device(), stage_, nullptr);
    fn.vkDestroyPipeline(ctx_.device(), persistent_, nullptr);
    fn.vkDestroyPipelineLayout(ctx_.device(), layout_, nullptr);
    fn.vkDestroyDescriptorSetLayout(ctx_.device(), set_, nullptr);
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Seconds for a chain of `stages` stages over `groups` workgroups, each stage streaming
  // `stage_bytes`; false in *ok when a stage missed a write or a grid barrier gave up.
  double run(bool persistent, uint32_t groups, uint64_t stage_bytes, uint32_t stages, bool* ok) {
    const Functions& fn = ctx_.fn();
    const uint32_t per_wg = uint32_t(stage_bytes / 16 / groups);
    const uint32_t stage_words = per_wg * groups;
    const Push base{per_wg, stage_words, stage_words ? uint32_t(kWeightBytes / 16 / stage_words) : 1u, 0, 1};
    VkCommandBuffer cmd = ctx_.begin_commands();
    fn.vkCmdFillBuffer(cmd, a_.handle(), 0, VK_WHOLE_SIZE, 0);
    fn.vkCmdFillBuffer(cmd, b_.handle(), 0, VK_WHOLE_SIZE, 0);
    fn.vkCmdFillBuffer(cmd, sync_.handle(), 0, VK_WHOLE_SIZE, 0);
    memory_barrier(fn, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    fn.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, persistent ? persistent_ : stage_);
    VkDescriptorBufferInfo infos[4] = {{weights_.handle(), 0, VK_WHOLE_SIZE},
                                       {a_.handle(), 0, VK_WHOLE_SIZE},
                                       {b_.handle(), 0, VK_WHOLE_SIZE},
                                       {sync_.handle(), 0, VK_WHOLE_SIZE}};
    VkWriteDescriptorSet writes[4]{};
    for (uint32_t i = 0; i < 4; ++i) {
      writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      writes[i].dstBinding = i;
      writes[i].descriptorCount = 1;
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
    }
    fn.vkCmdPushDescriptorSetKHR(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout_, 0, 4, writes);
    if (persistent) {
      Push p = base;
      p.stages = stages;
      fn.vkCmdPushConstants(cmd, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof p, &p);
      fn.vkCmdDispatch(cmd, groups, 1, 1);
    } else {
      for (uint32_t s = 0; s < stages; ++s) {
        Push p = base;
        p.stage = s;
        fn.vkCmdPushConstants(cmd, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof p, &p);
        fn.vkCmdDispatch(cmd, groups, 1, 1);
        memory_barrier(fn, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
      }
    }
    memory_barrier(fn, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    // The last stage (s = stages - 1) wrote b when s is even, else a.
    const VkBuffer last = ((stages - 1) % 2 == 0) ? b_.handle() : a_.handle();
    const VkBufferCopy values{0, 0, groups * 4ull}, fault{4, 64 * 1024, 4};
    fn.vkCmdCopyBuffer(cmd, last, readback_.handle(), 1, &values);
    fn.vkCmdCopyBuffer(cmd, sync_.handle(), readback_.handle(), 1, &fault);
    memory_barrier(fn, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                   VK_ACCESS_HOST_READ_BIT);
    const auto t0 = std::chrono::steady_clock::now();
    ctx_.submit_and_wait(cmd);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx_.free_commands(cmd);
    ctx_.invalidate(readback_);
    const float* y = reinterpret_cast<const float*>(readback_.mapped());
    uint32_t fault_word = 0;
    std::memcpy(&fault_word, readback_.mapped() + 64 * 1024, 4);
    *ok = fault_word == 0 && std::all_of(y, y + groups, [&](float v) { return v == float(stages); });
    return seconds;
  }

 private:
  VkPipeline pipeline(const std::vector<uint32_t>& spirv) {
    const Functions& fn = ctx_.fn();
    VkShaderModuleCreateInfo mci{};
    mci.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
    mci.codeSize = spirv.size() * 4;
    mci.pCode = spirv.data();
    VkShaderModule module = VK_NULL_HANDLE;
    check(fn.vkCreateShaderModule(ctx_.device(), &mci, nullptr, &module), "vkCreateShaderModule");
    const VkSpecializationMapEntry entry{0, 0, 4};
    const VkSpecializationInfo si{1, &entry, 4, &kWorkgroup};
    VkComputePipelineCreateInfo ci{};
    ci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = &si;
    ci.layout = layout_;
    VkPipeline p = VK_NULL_HANDLE;
    const VkResult r = fn.vkCreateComputePipelines(ctx_.device(), VK_NULL_HANDLE, 1, &ci, nullptr, &p);
    fn.vkDestroyShaderModule(ctx_.device(), module, nullptr);
    check(r, "vkCreateComputePipelines");
    return p;
  }

  Context& ctx_;
  Buffer weights_, a_, b_, sync_, readback_;
  VkDescriptorSetLayout set_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline stage_ = VK_NULL_HANDLE, persistent_ = VK_NULL_HANDLE;
};

// us per stage: the best of five runs of a long and a short chain, differenced.
double per_stage_us(Probe& probe, bool persistent, uint32_t groups, uint64_t stage_bytes, bool* ok) {
  constexpr uint32_t kLong = 256, kShort = 32;
  double best_long = 1e30, best_short = 1e30;
  *ok = true;
  for (int rep = 0; rep < 5; ++rep) {
    bool ok_long = false, ok_short = false;
    best_long = std::min(best_long, probe.run(persistent, groups, stage_bytes, kLong, &ok_long));
    best_short = std::min(best_short, probe.run(persistent, groups, stage_bytes, kShort, &ok_short));
    *ok = *ok && ok_long && ok_short;
  }
  return (best_long - best_short) / (kLong - kShort) * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    auto ctx = Context::create(argc > 1 ? std::atoi(argv[1]) : -1, true);
    std::printf("device: %s (%s)\n", ctx->info().name.c_str(), ctx->info().driver.c_str());
    Probe probe(*ctx, RWKV_PROBE_SPV_DIR "/vk_sync_stage.spv", RWKV_PROBE_SPV_DIR "/vk_sync_persistent.spv");
    const uint64_t sizes[] = {0, 1u << 20, 7u << 20, 28u << 20};
    std::printf("| stage MB | mode | workgroups | us per stage | writes seen |\n|---:|---|---:|---:|---|\n");
    for (uint64_t bytes : sizes) {
      for (uint32_t groups : {264u, 1320u, 5280u}) {
        bool ok = false;
        const double us = per_stage_us(probe, false, groups, bytes, &ok);
        std::printf("| %llu | barrier | %u | %.2f | %s |\n", (unsigned long long)(bytes >> 20), groups, us,
                    ok ? "yes" : "NO");
      }
      for (uint32_t groups : {132u, 264u, 528u, 1056u}) {
        bool ok = false;
        const double us = per_stage_us(probe, true, groups, bytes, &ok);
        std::printf("| %llu | grid barrier | %u | %.2f | %s |\n", (unsigned long long)(bytes >> 20), groups, us,
                    ok ? "yes" : "NO");
      }
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vk_sync_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
