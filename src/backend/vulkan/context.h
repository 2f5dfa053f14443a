// One Vulkan device opened for compute: instance, device, queue, memory helpers, one-shot
// submission and the on-disk pipeline cache. Everything else in the backend is built on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/vulkan/loader.h"
#include "backend/vulkan/vulkan_devices.h"

namespace rwkv::vk {

class Pipelines;

// Where a buffer lives. device: device-local, not mapped. staging: host-visible coherent,
// mapped, for uploads. readback: host-visible (cached where possible), mapped, for results.
enum class MemoryKind { device, staging, readback };

struct DeviceLimits {
  uint64_t max_storage_range = 0;     // maxStorageBufferRange (or RWKV_VULKAN_MAX_BUFFER): bytes one binding may see
  uint32_t max_shared_bytes = 0;      // maxComputeSharedMemorySize
  uint32_t max_workgroup_size_x = 0;  // maxComputeWorkGroupSize[0]
  uint32_t max_workgroup_count[3] = {0, 0, 0};
  uint32_t subgroup_size = 0;
  double timestamp_period_ns = 0;  // 0: the compute queue has no timestamps
};

class Context;

// A buffer with its own memory allocation; host kinds stay mapped for their lifetime.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Context& ctx, uint64_t bytes, MemoryKind kind, const char* what);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  VkBuffer handle() const { return buffer_; }
  uint64_t size() const { return size_; }
  // Host kinds only: the mapped bytes. readback buffers are invalidated by Context::wait().
  uint8_t* mapped() const { return mapped_; }
  explicit operator bool() const { return buffer_ != VK_NULL_HANDLE; }

 private:
  void release();
  Context* ctx_ = nullptr;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  uint64_t size_ = 0;
  uint8_t* mapped_ = nullptr;
  bool coherent_ = true;
  uint64_t device_allocated_ = 0;  // bytes of device-local memory, counted in Context
  friend class Context;
};

class Context {
 public:
  // Opens the loader, creates an instance and a device on adapter `device_index`, or, with
  // -1, on the best usable adapter: discrete, integrated, virtual, other, and CPU-type ones
  // (lavapipe) only when allow_cpu_devices. Throws Error(backend) with a one-line reason.
  static std::unique_ptr<Context> create(int device_index, bool allow_cpu_devices);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const Functions& fn() const { return fn_; }
  VkDevice device() const { return device_; }
  const VulkanDeviceInfo& info() const { return info_; }
  const DeviceLimits& limits() const { return limits_; }
  Pipelines& pipelines() { return *pipelines_; }
  VkPipelineCache pipeline_cache() const { return pipeline_cache_; }
  // RWKV_VULKAN_PIPELINE_STATS=1 on a driver with VK_KHR_pipeline_executable_properties:
  // every pipeline prints the driver's statistics (registers, shared memory, ...) when created.
  bool pipeline_stats() const { return pipeline_stats_; }

  // A primary command buffer in the recording state.
  VkCommandBuffer begin_commands();
  // Ends `cmd`, submits it and waits for it; the buffer stays allocated for reuse.
  void submit_and_wait(VkCommandBuffer cmd, bool end = true);
  void free_commands(VkCommandBuffer cmd);
  // Records with `record(cmd)`, submits, waits, frees.
  template <class F>
  void run(F&& record) {
    VkCommandBuffer cmd = begin_commands();
    try {
      record(cmd);
      submit_and_wait(cmd);
    } catch (...) {
      free_commands(cmd);
      throw;
    }
    free_commands(cmd);
  }

  // Makes device writes to `buffer` (a readback buffer) visible to the host.
  void invalidate(const Buffer& buffer);

  // Bytes of device-local memory this context's buffers hold now.
  uint64_t device_bytes() const { return device_bytes_; }

 private:
  Context() = default;
  uint32_t memory_type(uint32_t allowed_bits, MemoryKind kind, bool* coherent) const;
  void save_pipeline_cache();

  Functions fn_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  std::string pipeline_cache_path_;
  VkPhysicalDeviceMemoryProperties memory_{};
  VulkanDeviceInfo info_;
  DeviceLimits limits_;
  std::unique_ptr<Pipelines> pipelines_;
  uint64_t device_bytes_ = 0;
  bool pipeline_stats_ = false;
  friend class Buffer;
};

// Every adapter with its properties, checked against what the backend needs (devices.cpp).
struct ProbedDevice {
  VkPhysicalDevice handle = VK_NULL_HANDLE;
  VulkanDeviceInfo info;
  DeviceLimits limits;
  uint32_t compute_queue_family = 0;
  bool pipeline_statistics = false;  // has VK_KHR_pipeline_executable_properties
};
// Creates the instance used for probing and for the device (loads the instance functions).
VkInstance create_instance(Functions& fn);
std::vector<ProbedDevice> probe_devices(const Functions& fn, VkInstance instance);

}  // namespace rwkv::vk
