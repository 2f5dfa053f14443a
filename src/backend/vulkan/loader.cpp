#include "backend/vulkan/loader.h"

#include <dlfcn.h>

#include <mutex>

#include "common/error.h"

namespace rwkv::vk {
namespace {

// The loader stays open for the life of the process: device objects may outlive any one
// backend, and unloading a Vulkan driver is not worth the risk.
PFN_vkGetInstanceProcAddr loader_entry() {
  static std::once_flag once;
  static PFN_vkGetInstanceProcAddr entry = nullptr;
  std::call_once(once, [] {
    void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return;
    entry = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
  });
  return entry;
}

}  // namespace

void open_loader(Functions& fn) {
  fn.vkGetInstanceProcAddr = loader_entry();
  if (fn.vkGetInstanceProcAddr == nullptr) {
    fail(ErrorCode::backend, "vulkan: no Vulkan loader (libvulkan.so.1 not found or has no vkGetInstanceProcAddr)");
  }
#define RWKV_VK_LOAD(name) fn.name = reinterpret_cast<PFN_##name>(fn.vkGetInstanceProcAddr(nullptr, #name));
  RWKV_VK_GLOBAL_FUNCTIONS(RWKV_VK_LOAD)
#undef RWKV_VK_LOAD
  if (fn.vkCreateInstance == nullptr) fail(ErrorCode::backend, "vulkan: the Vulkan loader has no vkCreateInstance");
}

void load_instance(Functions& fn, VkInstance instance) {
#define RWKV_VK_LOAD(name)                                                           \
  fn.name = reinterpret_cast<PFN_##name>(fn.vkGetInstanceProcAddr(instance, #name)); \
  if (fn.name == nullptr) fail(ErrorCode::backend, "vulkan: the Vulkan loader has no " #name);
  RWKV_VK_INSTANCE_FUNCTIONS(RWKV_VK_LOAD)
#undef RWKV_VK_LOAD
  fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV =
      reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
          fn.vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
}

void load_device(Functions& fn, VkDevice device) {
#define RWKV_VK_LOAD(name)                                                       \
  fn.name = reinterpret_cast<PFN_##name>(fn.vkGetDeviceProcAddr(device, #name)); \
  if (fn.name == nullptr) fail(ErrorCode::backend, "vulkan: the device driver has no " #name);
  RWKV_VK_DEVICE_FUNCTIONS(RWKV_VK_LOAD)
#undef RWKV_VK_LOAD
}

std::string result_name(VkResult result) {
  switch (result) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_NOT_READY:
      return "VK_NOT_READY";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_INCOMPLETE:
      return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
      return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
      return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
      return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
      return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
      return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED:
      return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL:
      return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
      return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default:
      return "VkResult " + std::to_string(int(result));
  }
}

void check(VkResult result, const char* what) {
  if (result != VK_SUCCESS)
    fail(ErrorCode::backend, std::string("vulkan: ") + what + " failed (" + result_name(result) + ")");
}

}  // namespace rwkv::vk
