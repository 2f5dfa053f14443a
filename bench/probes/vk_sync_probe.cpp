// Probe (bench/RESULTS-vulkan.md, session 25): what a stage boundary of a decode step costs
// on a Vulkan device, as a pipeline barrier between dispatches (what the backend records
// today) against a software grid barrier inside one dispatch of co-resident workgroups. Two
// kinds of stage: a stream of 0-28 MB of weight bytes (vk_sync_probe.comp), and a one-token
// Q8_0-like matrix product of the 2.9B model's shapes (vk_matvec_probe.comp: the backend's
// two-row workgroups, or a fixed grid of workgroups that stage x in shared memory). The
// Vulkan counterpart of the CUDA probe sync_probe.cu (src/backend/cuda/NOTES.md run 78).
// Prints us per stage from GPU timestamps, the difference of two chain lengths (so fixed
// costs cancel); checks that every stream stage saw the previous one's writes and that both
// product forms match a CPU product (the grid barrier needs every workgroup resident at
// once: on lavapipe they are not, and those rows fail). Built with the benchmarks of a
// Vulkan build (bench/CMakeLists.txt compiles the shaders, two variants each):
//   build/bench/vk_sync_probe [device index]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "backend/vulkan/context.h"
#include "backend/vulkan/kernels.h"
#include "backend/vulkan/pipelines.h"
#include "common/error.h"

using namespace rwkv::vk;

namespace {

// The shaders' push block (vk_probe.glsl).
struct Push {
  uint32_t per_wg = 0, stage_words = 0, slots = 1, stage = 0, stages = 1, rows = 0, cols = 0;
};

constexpr uint64_t kWeightBytes = 1ull << 30;  // stages read distinct slots of this: never all in L2
constexpr uint64_t kVectorBytes = 64 * 1024;   // each activation vector

std::vector<uint32_t> read_spirv(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.empty() || bytes.size() % 4 != 0) rwkv::fail(rwkv::ErrorCode::io, "cannot read SPIR-V " + path);
  std::vector<uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

void compute_to_compute(const Functions& fn, VkCommandBuffer cmd) {
  memory_barrier(fn, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

// The probe's shaders. The fixed-grid products: rows a subgroup (pairs or one), and whether
// the next group's loads are requested before this group's products (ahead).
enum class Shader {
  stream_stage,
  stream_persistent,
  matvec_two_row,
  matvec_fixed_pairs,
  matvec_fixed_rows,
  matvec_fixed_pairs_ahead,
  matvec_fixed_rows_ahead
};
bool is_matvec(Shader s) { return s >= Shader::matvec_two_row; }
// One chain to time: its shader, how its stages are separated, and its sizes.
struct Chain {
  Shader shader;
  bool grid_barrier;     // all stages in one dispatch (persistent shaders only)
  uint32_t groups;       // workgroups a dispatch (the two-row product: rows / 2)
  uint64_t stage_bytes;  // stream stages: weight bytes a stage
  uint32_t rows, cols;   // matrix stages
};

class Probe {
 public:
  explicit Probe(Context& ctx)
      : ctx_(ctx),
        weights_(ctx, kWeightBytes, MemoryKind::device, "probe weights"),
        a_(ctx, kVectorBytes, MemoryKind::device, "probe a"),
        b_(ctx, kVectorBytes, MemoryKind::device, "probe b"),
        sync_(ctx, 16, MemoryKind::device, "probe sync"),
        scales_(ctx, kWeightBytes / 16, MemoryKind::device, "probe scales"),
        readback_(ctx, kVectorBytes + 16, MemoryKind::readback, "probe readback") {
    const Functions& fn = ctx.fn();
    std::vector<VkDescriptorSetLayoutBinding> bindings(kBindings);
    for (uint32_t b = 0; b < kBindings; ++b) {
      bindings[b].binding = b;
      bindings[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      bindings[b].descriptorCount = 1;
      bindings[b].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo sci{};
    sci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
    sci.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    sci.bindingCount = kBindings;
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
    const std::string dir = RWKV_PROBE_SPV_DIR;
    pipelines_[0] = pipeline(read_spirv(dir + "/vk_sync_stage.spv"), "stream_stage", 256, 1, 0);
    pipelines_[1] = pipeline(read_spirv(dir + "/vk_sync_persistent.spv"), "stream_persistent", 256, 1, 0);
    // The two-row product at the backend's matvec_wg_; the fixed grid with pairs of rows or
    // one row a subgroup.
    pipelines_[2] = pipeline(read_spirv(dir + "/vk_matvec_two_row.spv"), "matvec_two_row", 128, 1, 0);
    const std::vector<uint32_t> fixed = read_spirv(dir + "/vk_matvec_fixed.spv");
    pipelines_[3] = pipeline(fixed, "matvec_fixed_pairs", 256, 2, 0);
    pipelines_[4] = pipeline(fixed, "matvec_fixed_rows", 256, 1, 0);
    pipelines_[5] = pipeline(fixed, "matvec_fixed_pairs_ahead", 256, 2, 1);
    pipelines_[6] = pipeline(fixed, "matvec_fixed_rows_ahead", 256, 1, 1);
    if (ctx.limits().timestamp_period_ns > 0) {
      VkQueryPoolCreateInfo qci{};
      qci.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
      qci.queryType = VK_QUERY_TYPE_TIMESTAMP;
      qci.queryCount = 2;
      check(fn.vkCreateQueryPool(ctx.device(), &qci, nullptr, &timestamps_), "vkCreateQueryPool");
    }
    ctx.run([&](VkCommandBuffer cmd) {
      fn.vkCmdFillBuffer(cmd, weights_.handle(), 0, VK_WHOLE_SIZE, 0);
      fn.vkCmdFillBuffer(cmd, scales_.handle(), 0, VK_WHOLE_SIZE, 0);
    });
  }
  ~Probe() {
    const Functions& fn = ctx_.fn();
    for (VkPipeline p : pipelines_) fn.vkDestroyPipeline(ctx_.device(), p, nullptr);
    if (timestamps_ != VK_NULL_HANDLE) fn.vkDestroyQueryPool(ctx_.device(), timestamps_, nullptr);
    fn.vkDestroyPipelineLayout(ctx_.device(), layout_, nullptr);
    fn.vkDestroyDescriptorSetLayout(ctx_.device(), set_, nullptr);
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Runs `stages` stages of `c` (activations zeroed first unless keep_x) and returns the
  // seconds from the first stage's start to the last one's end (GPU timestamps; without
  // them, from submit to completion); `out` receives the last stage's output vector and
  // *fault the grid barrier's fault word.
  double run(const Chain& c, uint32_t stages, bool keep_x, std::vector<float>* out, uint32_t* fault) {
    const Functions& fn = ctx_.fn();
    const bool matvec = is_matvec(c.shader);
    Push p;
    if (matvec) {
      p.rows = c.rows;
      p.cols = c.cols;
      p.slots = uint32_t(kWeightBytes / (uint64_t(c.rows) * c.cols));
    } else {
      p.per_wg = uint32_t(c.stage_bytes / 16 / c.groups);
      p.stage_words = p.per_wg * c.groups;
      p.slots = p.stage_words ? uint32_t(kWeightBytes / 16 / p.stage_words) : 1u;
    }
    VkCommandBuffer cmd = ctx_.begin_commands();
    if (!keep_x) fn.vkCmdFillBuffer(cmd, a_.handle(), 0, VK_WHOLE_SIZE, 0);
    fn.vkCmdFillBuffer(cmd, b_.handle(), 0, VK_WHOLE_SIZE, 0);
    fn.vkCmdFillBuffer(cmd, sync_.handle(), 0, VK_WHOLE_SIZE, 0);
    memory_barrier(fn, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    fn.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipelines_[size_t(c.shader)]);
    const VkBuffer buffers[kBindings] = {weights_.handle(), a_.handle(), b_.handle(), sync_.handle(), scales_.handle()};
    VkDescriptorBufferInfo infos[kBindings];
    VkWriteDescriptorSet writes[kBindings]{};
    for (uint32_t i = 0; i < kBindings; ++i) {
      infos[i] = {buffers[i], 0, VK_WHOLE_SIZE};
      writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      writes[i].dstBinding = i;
      writes[i].descriptorCount = 1;
      writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[i].pBufferInfo = &infos[i];
    }
    fn.vkCmdPushDescriptorSetKHR(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout_, 0, kBindings, writes);
    if (timestamps_ != VK_NULL_HANDLE) {
      fn.vkCmdResetQueryPool(cmd, timestamps_, 0, 2);
      fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps_, 0);
    }
    if (c.grid_barrier) {
      p.stages = stages;
      fn.vkCmdPushConstants(cmd, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof p, &p);
      fn.vkCmdDispatch(cmd, c.groups, 1, 1);
    } else {
      for (uint32_t s = 0; s < stages; ++s) {
        p.stage = s;
        fn.vkCmdPushConstants(cmd, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof p, &p);
        fn.vkCmdDispatch(cmd, c.groups, 1, 1);
        compute_to_compute(fn, cmd);
      }
    }
    if (timestamps_ != VK_NULL_HANDLE)
      fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps_, 1);
    memory_barrier(fn, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    // The last stage (s = stages - 1) wrote b when s is even, else a.
    const VkBuffer last = ((stages - 1) % 2 == 0) ? b_.handle() : a_.handle();
    const uint32_t n = matvec ? c.rows : c.groups;
    const VkBufferCopy values{0, 0, n * 4ull}, fault_word{4, kVectorBytes, 4};
    fn.vkCmdCopyBuffer(cmd, last, readback_.handle(), 1, &values);
    fn.vkCmdCopyBuffer(cmd, sync_.handle(), readback_.handle(), 1, &fault_word);
    memory_barrier(fn, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                   VK_ACCESS_HOST_READ_BIT);
    const auto t0 = std::chrono::steady_clock::now();
    ctx_.submit_and_wait(cmd);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx_.free_commands(cmd);
    uint64_t ticks[2] = {0, 0};
    if (timestamps_ != VK_NULL_HANDLE &&
        fn.vkGetQueryPoolResults(ctx_.device(), timestamps_, 0, 2, sizeof ticks, ticks, 8,
                                 VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
      seconds = double(ticks[1] - ticks[0]) * ctx_.limits().timestamp_period_ns * 1e-9;
    }
    ctx_.invalidate(readback_);
    const float* y = reinterpret_cast<const float*>(readback_.mapped());
    out->assign(y, y + n);
    std::memcpy(fault, readback_.mapped() + kVectorBytes, 4);
    return seconds;
  }

  // Whether two stages of the product `c` match a CPU product on random quants, scales and x.
  bool matvec_matches(const Chain& c) {
    const uint64_t n_quants = 2ull * c.rows * c.cols;  // slots 0 and 1
    std::vector<int8_t> q(n_quants);
    std::vector<uint16_t> d(n_quants / 32);
    std::vector<float> x(c.cols);
    std::mt19937 rng(7);
    for (int8_t& v : q) v = int8_t(int(rng() % 255) - 127);
    // Scales 2^-11 .. 2^-8 as float16 bits: products of a row stay near x's magnitude.
    for (uint16_t& v : d) v = uint16_t((4 + rng() % 4) << 10);
    for (float& v : x) v = float(int(rng() % 2001) - 1000) / 1000.0f;
    upload(weights_, q.data(), q.size());
    upload(scales_, d.data(), d.size() * 2);
    upload(a_, x.data(), x.size() * 4);
    std::vector<float> y;
    uint32_t fault = 0;
    run(c, 2, true, &y, &fault);
    // The CPU product, twice (stage 1 reads the first cols values of stage 0's output).
    const auto half_to_float = [](uint16_t h) { return std::ldexp(1.0, int(h >> 10) - 15); };
    std::vector<double> v(x.begin(), x.end()), next(c.rows);
    for (uint32_t s = 0; s < 2; ++s) {
      for (uint32_t r = 0; r < c.rows; ++r) {
        const uint64_t row = uint64_t(s) * c.rows + r;
        double acc = 0;
        for (uint32_t k = 0; k < c.cols; ++k)
          acc += half_to_float(d[(row * c.cols + k) / 32]) * q[row * c.cols + k] * v[k];
        next[r] = acc;
      }
      v.assign(next.begin(), next.begin() + c.cols);
    }
    double err = 0, ref = 0;
    for (uint32_t r = 0; r < c.rows; ++r) {
      err += (y[r] - next[r]) * (y[r] - next[r]);
      ref += next[r] * next[r];
    }
    return fault == 0 && std::sqrt(err / std::max(ref, 1e-30)) < 1e-5;
  }

 private:
  static constexpr uint32_t kBindings = 5;

  void upload(const Buffer& dst, const void* data, uint64_t bytes) {
    Buffer staging(ctx_, bytes, MemoryKind::staging, "probe staging");
    std::memcpy(staging.mapped(), data, bytes);
    const VkBufferCopy region{0, 0, bytes};
    ctx_.run([&](VkCommandBuffer cmd) { ctx_.fn().vkCmdCopyBuffer(cmd, staging.handle(), dst.handle(), 1, &region); });
  }

  // Specialisation constants: 0, the workgroup's invocations; for the fixed-grid product 1,
  // rows a subgroup, 2, a lane's 16-element units of a 2,560-column row, 3, ahead (the
  // other shaders ignore 1-3).
  VkPipeline pipeline(const std::vector<uint32_t>& spirv, const std::string& name, uint32_t workgroup, uint32_t sg_rows,
                      uint32_t ahead) {
    const uint32_t subgroup = std::max(ctx_.info().subgroup_size, 1u);
    const uint32_t spec[4] = {workgroup, sg_rows, (2560 / 16 + subgroup - 1) / subgroup, ahead};
    return create_compute_pipeline(ctx_, spirv, layout_, spec, name);
  }

  Context& ctx_;
  Buffer weights_, a_, b_, sync_, scales_, readback_;
  VkDescriptorSetLayout set_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipelines_[7] = {};
  VkQueryPool timestamps_ = VK_NULL_HANDLE;
};

// us per stage of chain `c`: the best of five runs of a long and a short chain, differenced.
// *ok: every stream stage saw the previous one's write (matrix chains: no barrier fault).
double per_stage_us(Probe& probe, const Chain& c, bool* ok) {
  constexpr uint32_t kLong = 256, kShort = 32;
  const bool matvec = is_matvec(c.shader);
  double best[2] = {1e30, 1e30};
  *ok = true;
  for (int rep = 0; rep < 5; ++rep) {
    for (int i = 0; i < 2; ++i) {
      const uint32_t stages = i == 0 ? kLong : kShort;
      std::vector<float> y;
      uint32_t fault = 0;
      best[i] = std::min(best[i], probe.run(c, stages, false, &y, &fault));
      *ok =
          *ok && fault == 0 && (matvec || std::all_of(y.begin(), y.end(), [&](float v) { return v == float(stages); }));
    }
  }
  return (best[0] - best[1]) / (kLong - kShort) * 1e6;
}

void print_row(Probe& probe, const Chain& c, const char* what, double size_mb) {
  bool ok = false;
  const double us = per_stage_us(probe, c, &ok);
  const bool right = ok && (!is_matvec(c.shader) || probe.matvec_matches(c));
  const char* forms[] = {"",
                         "",
                         "",
                         ", fixed grid, 2 rows a subgroup",
                         ", fixed grid, 1 row a subgroup",
                         ", fixed grid, 2 rows a subgroup, ahead",
                         ", fixed grid, 1 row a subgroup, ahead"};
  const char* form = forms[size_t(c.shader)];
  std::printf("| %s%s | %.0f | %s | %u | %.2f | %s |\n", what, form, size_mb,
              c.grid_barrier ? "grid barrier" : "pipeline barrier", c.groups, us, right ? "yes" : "NO");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    auto ctx = Context::create(argc > 1 ? std::atoi(argv[1]) : -1, true);
    std::printf("device: %s (%s)\n", ctx->info().name.c_str(), ctx->info().driver.c_str());
    Probe probe(*ctx);
    std::printf("| stage | MB | boundary | workgroups | us per stage | right |\n|---|---:|---|---:|---:|---|\n");
    for (uint64_t bytes : {0ull, 1ull << 20, 7ull << 20, 28ull << 20}) {
      const double mb = double(bytes) / (1 << 20);
      for (uint32_t groups : {264u, 1320u, 5280u})
        print_row(probe, {Shader::stream_stage, false, groups, bytes, 0, 0}, "stream", mb);
      for (uint32_t groups : {132u, 264u, 528u, 1056u})
        print_row(probe, {Shader::stream_persistent, true, groups, bytes, 0, 0}, "stream", mb);
    }
    // The 2.9B model's W_o (2,560 x 2,560) and FFN key (10,240 x 2,560) in Q8_0.
    for (uint32_t rows : {2560u, 10240u}) {
      const double mb = rows * 2560.0 * 34 / 32 / (1 << 20);
      const char* what = rows == 2560 ? "matvec 2560x2560" : "matvec 10240x2560";
      print_row(probe, {Shader::matvec_two_row, false, rows / 2, 0, rows, 2560}, what, mb);
      for (Shader fixed : {Shader::matvec_fixed_pairs, Shader::matvec_fixed_rows, Shader::matvec_fixed_pairs_ahead,
                           Shader::matvec_fixed_rows_ahead}) {
        for (uint32_t groups : {132u, 264u, 528u}) {
          print_row(probe, {fixed, false, groups, 0, rows, 2560}, what, mb);
          print_row(probe, {fixed, true, groups, 0, rows, 2560}, what, mb);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vk_sync_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
