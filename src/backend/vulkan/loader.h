// The Vulkan entry points this backend uses, loaded at run time from the system loader
// (libvulkan.so.1). Opening the loader at run time, instead of linking it, lets a build with
// Vulkan support start on a machine that has no Vulkan at all: the backend then fails with
// a one-line Error(backend) and the runtime falls back to another backend.
#pragma once

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <string>

namespace rwkv::vk {

#define RWKV_VK_GLOBAL_FUNCTIONS(X) \
  X(vkCreateInstance)               \
  X(vkEnumerateInstanceVersion)     \
  X(vkEnumerateInstanceExtensionProperties)

#define RWKV_VK_INSTANCE_FUNCTIONS(X)         \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceProperties2)           \
  X(vkGetPhysicalDeviceFeatures)              \
  X(vkGetPhysicalDeviceFeatures2)             \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkEnumerateDeviceExtensionProperties)     \
  X(vkCreateDevice)                           \
  X(vkGetDeviceProcAddr)

#define RWKV_VK_DEVICE_FUNCTIONS(X) \
  X(vkDestroyDevice)                \
  X(vkGetDeviceQueue)               \
  X(vkDeviceWaitIdle)               \
  X(vkQueueSubmit)                  \
  X(vkCreateBuffer)                 \
  X(vkDestroyBuffer)                \
  X(vkGetBufferMemoryRequirements)  \
  X(vkAllocateMemory)               \
  X(vkFreeMemory)                   \
  X(vkBindBufferMemory)             \
  X(vkMapMemory)                    \
  X(vkUnmapMemory)                  \
  X(vkInvalidateMappedMemoryRanges) \
  X(vkFlushMappedMemoryRanges)      \
  X(vkCreateCommandPool)            \
  X(vkDestroyCommandPool)           \
  X(vkAllocateCommandBuffers)       \
  X(vkFreeCommandBuffers)           \
  X(vkBeginCommandBuffer)           \
  X(vkEndCommandBuffer)             \
  X(vkCreateFence)                  \
  X(vkDestroyFence)                 \
  X(vkWaitForFences)                \
  X(vkGetFenceStatus)               \
  X(vkResetFences)                  \
  X(vkCreateShaderModule)           \
  X(vkDestroyShaderModule)          \
  X(vkCreateDescriptorSetLayout)    \
  X(vkDestroyDescriptorSetLayout)   \
  X(vkCreatePipelineLayout)         \
  X(vkDestroyPipelineLayout)        \
  X(vkCreateComputePipelines)       \
  X(vkDestroyPipeline)              \
  X(vkCreatePipelineCache)          \
  X(vkDestroyPipelineCache)         \
  X(vkGetPipelineCacheData)         \
  X(vkCmdBindPipeline)              \
  X(vkCmdPushConstants)             \
  X(vkCmdPushDescriptorSetKHR)      \
  X(vkCmdDispatch)                  \
  X(vkCmdPipelineBarrier)           \
  X(vkCmdCopyBuffer)                \
  X(vkCmdFillBuffer)                \
  X(vkCreateQueryPool)              \
  X(vkDestroyQueryPool)             \
  X(vkCmdResetQueryPool)            \
  X(vkCmdWriteTimestamp)            \
  X(vkGetQueryPoolResults)

// One table of function pointers. Global functions are filled by open_loader(), instance
// functions by load_instance(), device functions by load_device().
struct Functions {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
#define RWKV_VK_DECLARE(name) PFN_##name name = nullptr;
  RWKV_VK_GLOBAL_FUNCTIONS(RWKV_VK_DECLARE)
  RWKV_VK_INSTANCE_FUNCTIONS(RWKV_VK_DECLARE)
  RWKV_VK_DEVICE_FUNCTIONS(RWKV_VK_DECLARE)
#undef RWKV_VK_DECLARE
  // Optional (VK_NV_cooperative_matrix); null where no driver offers it.
  PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV vkGetPhysicalDeviceCooperativeMatrixPropertiesNV = nullptr;
  // Optional (VK_KHR_pipeline_executable_properties, loaded only for RWKV_VULKAN_PIPELINE_STATS).
  PFN_vkGetPipelineExecutablePropertiesKHR vkGetPipelineExecutablePropertiesKHR = nullptr;
  PFN_vkGetPipelineExecutableStatisticsKHR vkGetPipelineExecutableStatisticsKHR = nullptr;
};

// Opens the process-wide Vulkan loader (once) and fills the global functions of `fn`.
// Throws Error(backend) "no Vulkan loader (libvulkan.so.1 not found)" when it is missing.
void open_loader(Functions& fn);
void load_instance(Functions& fn, VkInstance instance);
void load_device(Functions& fn, VkDevice device);

// "VK_ERROR_OUT_OF_DEVICE_MEMORY" etc.
std::string result_name(VkResult result);
// Throws Error(backend) "vulkan: <what> failed (VK_ERROR_...)" unless result is VK_SUCCESS.
void check(VkResult result, const char* what);

}  // namespace rwkv::vk
