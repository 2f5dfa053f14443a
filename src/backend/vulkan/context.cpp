#include "backend/vulkan/context.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "backend/vulkan/pipelines.h"
#include "common/error.h"

namespace rwkv::vk {
namespace {

int type_rank(const std::string& type) {
  if (type == "discrete") return 0;
  if (type == "integrated") return 1;
  if (type == "virtual") return 2;
  if (type == "other") return 3;
  return 4;  // cpu
}

// Picks an adapter; throws Error(backend) naming why none fits.
const ProbedDevice& choose(const std::vector<ProbedDevice>& devices, int index, bool allow_cpu) {
  if (devices.empty()) fail(ErrorCode::backend, "vulkan: no Vulkan devices found");
  if (index >= 0) {
    if (size_t(index) >= devices.size()) {
      fail(ErrorCode::backend, "vulkan: device " + std::to_string(index) + " does not exist (" +
                                   std::to_string(devices.size()) + " Vulkan devices)");
    }
    const ProbedDevice& d = devices[size_t(index)];
    if (!d.info.usable) {
      fail(ErrorCode::backend,
           "vulkan: device " + std::to_string(index) + " (" + d.info.name + ") lacks " + d.info.missing);
    }
    return d;
  }
  const ProbedDevice* best = nullptr;
  std::string unusable, cpu_only;
  for (const ProbedDevice& d : devices) {
    if (!d.info.usable) {
      unusable += (unusable.empty() ? "" : "; ") + d.info.name + " lacks " + d.info.missing;
      continue;
    }
    if (d.info.type == "cpu" && !allow_cpu) {
      cpu_only += (cpu_only.empty() ? "" : ", ") + d.info.name;
      continue;
    }
    const auto key = [](const ProbedDevice& p) { return std::make_pair(type_rank(p.info.type), ~p.info.memory_bytes); };
    if (best == nullptr || key(d) < key(*best)) best = &d;
  }
  if (best != nullptr) return *best;
  if (!cpu_only.empty()) {
    fail(ErrorCode::backend, "vulkan: only CPU-type Vulkan devices (" + cpu_only +
                                 ") found; automatic selection skips them, name one with the device option");
  }
  fail(ErrorCode::backend, "vulkan: no usable Vulkan device: " + unusable);
}

std::string cache_directory() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] != '\0') {
    return std::string(xdg) + "/rwkv";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    return std::string(home) + "/.cache/rwkv";
  }
  return "";
}

}  // namespace

std::unique_ptr<Context> Context::create(int device_index, bool allow_cpu_devices) {
  std::unique_ptr<Context> ctx(new Context());
  ctx->instance_ = create_instance(ctx->fn_);
  const std::vector<ProbedDevice> devices = probe_devices(ctx->fn_, ctx->instance_);
  const ProbedDevice& chosen = choose(devices, device_index, allow_cpu_devices);
  ctx->physical_ = chosen.handle;
  ctx->info_ = chosen.info;
  ctx->limits_ = chosen.limits;
  ctx->queue_family_ = chosen.compute_queue_family;
  // RWKV_VULKAN_MAX_BUFFER=<bytes> lowers the storage-buffer range the backend plans with,
  // so that small test models exercise the paths of large ones: matrices split over
  // buffers, prefill split into sub-steps, few logits rows per sub-step.
  if (const char* cap = std::getenv("RWKV_VULKAN_MAX_BUFFER"); cap != nullptr && cap[0] != '\0') {
    const uint64_t bytes = std::strtoull(cap, nullptr, 10);
    if (bytes >= 4096) ctx->limits_.max_storage_range = std::min(ctx->limits_.max_storage_range, bytes);
  }
  const Functions& fn = ctx->fn_;
  fn.vkGetPhysicalDeviceMemoryProperties(ctx->physical_, &ctx->memory_);

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{};
  qci.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  qci.queueFamilyIndex = ctx->queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  // RWKV_VULKAN_NO_COOPMAT=1 keeps prefill on the plain shaders (for comparisons).
  if (const char* off = std::getenv("RWKV_VULKAN_NO_COOPMAT"); off != nullptr && off[0] != '\0' && off[0] != '0') {
    ctx->info_.coopmat = false;
  }
  VkPhysicalDeviceFeatures2 features{};
  features.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  features.features.shaderStorageBufferArrayDynamicIndexing = VK_TRUE;
  VkPhysicalDeviceShaderFloat16Int8Features f16{};
  f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  f16.shaderFloat16 = VK_TRUE;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV coop{};
  coop.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  coop.cooperativeMatrix = VK_TRUE;
  std::vector<const char*> extensions = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  if (ctx->info_.coopmat) {
    features.pNext = &f16;
    f16.pNext = &coop;
    extensions.push_back(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
    VkPhysicalDeviceProperties p{};
    fn.vkGetPhysicalDeviceProperties(ctx->physical_, &p);
    if (p.apiVersion < VK_API_VERSION_1_2) extensions.push_back(VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  }
  // RWKV_VULKAN_PIPELINE_STATS=1: the driver's per-pipeline statistics, for tuning shaders
  // where no profiler runs (they name registers and shared memory on NVIDIA's driver).
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR exec_props{};
  exec_props.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR;
  if (const char* on = std::getenv("RWKV_VULKAN_PIPELINE_STATS"); on != nullptr && on[0] != '\0' && on[0] != '0') {
    if (chosen.pipeline_statistics) {
      exec_props.pipelineExecutableInfo = VK_TRUE;
      exec_props.pNext = features.pNext;
      features.pNext = &exec_props;
      extensions.push_back(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
      ctx->pipeline_stats_ = true;
    } else {
      std::fprintf(stderr, "vulkan: RWKV_VULKAN_PIPELINE_STATS: the driver has no %s\n",
                   VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    }
  }
  VkDeviceCreateInfo dci{};
  dci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  dci.pNext = &features;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  dci.enabledExtensionCount = uint32_t(extensions.size());
  dci.ppEnabledExtensionNames = extensions.data();
  check(fn.vkCreateDevice(ctx->physical_, &dci, nullptr, &ctx->device_), "vkCreateDevice");
  load_device(ctx->fn_, ctx->device_);
  if (ctx->pipeline_stats_) {
    ctx->fn_.vkGetPipelineExecutablePropertiesKHR = reinterpret_cast<PFN_vkGetPipelineExecutablePropertiesKHR>(
        fn.vkGetDeviceProcAddr(ctx->device_, "vkGetPipelineExecutablePropertiesKHR"));
    ctx->fn_.vkGetPipelineExecutableStatisticsKHR = reinterpret_cast<PFN_vkGetPipelineExecutableStatisticsKHR>(
        fn.vkGetDeviceProcAddr(ctx->device_, "vkGetPipelineExecutableStatisticsKHR"));
    ctx->pipeline_stats_ = ctx->fn_.vkGetPipelineExecutablePropertiesKHR != nullptr &&
                           ctx->fn_.vkGetPipelineExecutableStatisticsKHR != nullptr;
  }
  fn.vkGetDeviceQueue(ctx->device_, ctx->queue_family_, 0, &ctx->queue_);

  VkCommandPoolCreateInfo pci{};
  pci.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx->queue_family_;
  check(fn.vkCreateCommandPool(ctx->device_, &pci, nullptr, &ctx->pool_), "vkCreateCommandPool");
  VkFenceCreateInfo fci{};
  fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  check(fn.vkCreateFence(ctx->device_, &fci, nullptr, &ctx->fence_), "vkCreateFence");

  // Pipeline cache: seeded from disk when a file for this exact device and driver exists.
  // The driver checks the header and ignores a stale file; a missing file is not an error.
  VkPhysicalDeviceProperties props{};
  fn.vkGetPhysicalDeviceProperties(ctx->physical_, &props);
  const std::string dir = cache_directory();
  std::vector<char> seed;
  if (!dir.empty()) {
    ctx->pipeline_cache_path_ = dir + "/vulkan-" + std::to_string(props.vendorID) + "-" +
                                std::to_string(props.deviceID) + "-" + std::to_string(props.driverVersion) + ".bin";
    std::ifstream in(ctx->pipeline_cache_path_, std::ios::binary);
    if (in) seed.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  VkPipelineCacheCreateInfo cci{};
  cci.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO;
  cci.initialDataSize = seed.size();
  cci.pInitialData = seed.empty() ? nullptr : seed.data();
  if (fn.vkCreatePipelineCache(ctx->device_, &cci, nullptr, &ctx->pipeline_cache_) != VK_SUCCESS) {
    cci.initialDataSize = 0;
    cci.pInitialData = nullptr;
    check(fn.vkCreatePipelineCache(ctx->device_, &cci, nullptr, &ctx->pipeline_cache_), "vkCreatePipelineCache");
  }
  ctx->pipelines_ = std::make_unique<Pipelines>(*ctx);
  return ctx;
}

void Context::save_pipeline_cache() {
  // Failure to write the cache only costs compile time on the next start: never an error.
  if (pipeline_cache_path_.empty() || pipelines_ == nullptr || !pipelines_->created_any()) return;
  size_t size = 0;
  if (fn_.vkGetPipelineCacheData(device_, pipeline_cache_, &size, nullptr) != VK_SUCCESS || size == 0) return;
  std::vector<char> data(size);
  if (fn_.vkGetPipelineCacheData(device_, pipeline_cache_, &size, data.data()) != VK_SUCCESS) return;
  std::error_code ec;
  const std::filesystem::path path(pipeline_cache_path_);
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return;
  // Written under a private name and renamed, so concurrent processes never read a torn file.
  const std::string tmp = pipeline_cache_path_ + ".tmp" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;
    out.write(data.data(), std::streamsize(size));
    if (!out) {
      out.close();
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp, ec);
}

Context::~Context() {
  if (device_ != VK_NULL_HANDLE) {
    fn_.vkDeviceWaitIdle(device_);
    save_pipeline_cache();
    pipelines_.reset();
    if (pipeline_cache_ != VK_NULL_HANDLE) fn_.vkDestroyPipelineCache(device_, pipeline_cache_, nullptr);
    if (fence_ != VK_NULL_HANDLE) fn_.vkDestroyFence(device_, fence_, nullptr);
    if (pool_ != VK_NULL_HANDLE) fn_.vkDestroyCommandPool(device_, pool_, nullptr);
    fn_.vkDestroyDevice(device_, nullptr);
  }
  if (instance_ != VK_NULL_HANDLE) fn_.vkDestroyInstance(instance_, nullptr);
}

VkCommandBuffer Context::begin_commands() {
  VkCommandBufferAllocateInfo ai{};
  ai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  check(fn_.vkAllocateCommandBuffers(device_, &ai, &cmd), "vkAllocateCommandBuffers");
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  const VkResult r = fn_.vkBeginCommandBuffer(cmd, &bi);
  if (r != VK_SUCCESS) {
    fn_.vkFreeCommandBuffers(device_, pool_, 1, &cmd);
    check(r, "vkBeginCommandBuffer");
  }
  return cmd;
}

void Context::submit_and_wait(VkCommandBuffer cmd, bool end) {
  if (end) check(fn_.vkEndCommandBuffer(cmd), "vkEndCommandBuffer");
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  check(fn_.vkResetFences(device_, 1, &fence_), "vkResetFences");
  check(fn_.vkQueueSubmit(queue_, 1, &si, fence_), "vkQueueSubmit");
  // On a GPU, polls first: a decode step takes 0.3-5 ms, and a blocking wait's wake-up adds
  // its latency (and jitter) to every one (CUDA's stream synchronisation spins the same way).
  // Not on a CPU device, whose work runs on the cores a spin would take. Longer work then
  // blocks, in slices, so that a lost device surfaces as an error rather than a hang.
  const auto spin_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(info_.type == "cpu" ? 0 : 20);
  do {
    const VkResult r = fn_.vkGetFenceStatus(device_, fence_);
    if (r == VK_SUCCESS) return;
    if (r != VK_NOT_READY) check(r, "vkGetFenceStatus");
  } while (std::chrono::steady_clock::now() < spin_end);
  for (;;) {
    const VkResult r = fn_.vkWaitForFences(device_, 1, &fence_, VK_TRUE, 1'000'000'000ull);
    if (r == VK_SUCCESS) break;
    if (r != VK_TIMEOUT) check(r, "vkWaitForFences");
  }
}

void Context::free_commands(VkCommandBuffer cmd) { fn_.vkFreeCommandBuffers(device_, pool_, 1, &cmd); }

void Context::invalidate(const Buffer& buffer) {
  if (buffer.coherent_ || buffer.memory_ == VK_NULL_HANDLE) return;
  VkMappedMemoryRange range{};
  range.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE;
  range.memory = buffer.memory_;
  range.offset = 0;
  range.size = VK_WHOLE_SIZE;
  check(fn_.vkInvalidateMappedMemoryRanges(device_, 1, &range), "vkInvalidateMappedMemoryRanges");
}

uint32_t Context::memory_type(uint32_t allowed_bits, MemoryKind kind, bool* coherent) const {
  // Preference lists, best first; the first allowed type that has all the flags wins.
  std::vector<VkMemoryPropertyFlags> wanted;
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
  const VkMemoryPropertyFlags coh = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  const VkMemoryPropertyFlags cached = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
  switch (kind) {
    case MemoryKind::device:
      wanted = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0};
      break;
    case MemoryKind::staging:
      wanted = {host | coh};
      break;
    case MemoryKind::readback:
      wanted = {host | cached | coh, host | cached, host | coh};
      break;
  }
  for (VkMemoryPropertyFlags flags : wanted) {
    for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
      if (!(allowed_bits & (1u << i))) continue;
      const VkMemoryPropertyFlags have = memory_.memoryTypes[i].propertyFlags;
      if ((have & flags) == flags) {
        *coherent = (have & coh) != 0;
        return i;
      }
    }
  }
  fail(ErrorCode::backend, "vulkan: " + info_.name + " has no suitable memory type");
}

Buffer::Buffer(Context& ctx, uint64_t bytes, MemoryKind kind, const char* what) : ctx_(&ctx), size_(bytes) {
  const Functions& fn = ctx.fn();
  VkBufferCreateInfo bci{};
  bci.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  bci.size = std::max<uint64_t>(bytes, 16);
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  const std::string label = std::string("buffer for ") + what + " (" + std::to_string(bytes) + " bytes)";
  VkResult r = fn.vkCreateBuffer(ctx.device(), &bci, nullptr, &buffer_);
  if (r != VK_SUCCESS) check(r, ("vkCreateBuffer of a " + label).c_str());
  VkMemoryRequirements req{};
  fn.vkGetBufferMemoryRequirements(ctx.device(), buffer_, &req);
  VkMemoryAllocateInfo ai{};
  ai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  ai.allocationSize = req.size;
  try {
    ai.memoryTypeIndex = ctx.memory_type(req.memoryTypeBits, kind, &coherent_);
    r = fn.vkAllocateMemory(ctx.device(), &ai, nullptr, &memory_);
    if (r != VK_SUCCESS) check(r, ("vkAllocateMemory of a " + label).c_str());
    check(fn.vkBindBufferMemory(ctx.device(), buffer_, memory_, 0), "vkBindBufferMemory");
    if (kind != MemoryKind::device) {
      void* p = nullptr;
      check(fn.vkMapMemory(ctx.device(), memory_, 0, VK_WHOLE_SIZE, 0, &p), "vkMapMemory");
      mapped_ = static_cast<uint8_t*>(p);
    } else {
      device_allocated_ = req.size;
      ctx.device_bytes_ += req.size;
    }
  } catch (...) {
    release();
    throw;
  }
}

void Buffer::release() {
  if (ctx_ == nullptr) return;
  const Functions& fn = ctx_->fn();
  if (buffer_ != VK_NULL_HANDLE) fn.vkDestroyBuffer(ctx_->device(), buffer_, nullptr);
  if (memory_ != VK_NULL_HANDLE) {
    ctx_->device_bytes_ -= device_allocated_;
    fn.vkFreeMemory(ctx_->device(), memory_, nullptr);
  }
  buffer_ = VK_NULL_HANDLE;
  memory_ = VK_NULL_HANDLE;
  mapped_ = nullptr;
  device_allocated_ = 0;
  ctx_ = nullptr;
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept { *this = std::move(o); }

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    ctx_ = o.ctx_;
    buffer_ = o.buffer_;
    memory_ = o.memory_;
    size_ = o.size_;
    mapped_ = o.mapped_;
    coherent_ = o.coherent_;
    device_allocated_ = o.device_allocated_;
    o.ctx_ = nullptr;
    o.buffer_ = VK_NULL_HANDLE;
    o.memory_ = VK_NULL_HANDLE;
    o.mapped_ = nullptr;
  }
  return *this;
}

}  // namespace rwkv::vk
