// Instance creation and adapter probing: names, memory, driver, subgroup size, and the
// features the backend needs (each missing one named).
#include <cstring>
#include <vector>

#include "backend/vulkan/context.h"
#include "common/error.h"

namespace rwkv::vk {
namespace {

bool has_extension(const std::vector<VkExtensionProperties>& list, const char* name) {
  for (const VkExtensionProperties& e : list) {
    if (std::strcmp(e.extensionName, name) == 0) return true;
  }
  return false;
}

std::string version_string(uint32_t v) {
  return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
         std::to_string(VK_API_VERSION_PATCH(v));
}

std::string type_string(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "cpu";
    default:
      return "other";
  }
}

void add_missing(std::string& missing, const std::string& what) {
  if (!missing.empty()) missing += ", ";
  missing += what;
}

ProbedDevice probe(const Functions& fn, VkPhysicalDevice pd, int index) {
  ProbedDevice d;
  d.handle = pd;
  VulkanDeviceInfo& info = d.info;
  info.index = index;

  VkPhysicalDeviceProperties props{};
  fn.vkGetPhysicalDeviceProperties(pd, &props);
  info.name = props.deviceName;
  info.type = type_string(props.deviceType);
  info.api_version = version_string(props.apiVersion);

  uint32_t n_ext = 0;
  fn.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n_ext, nullptr);
  std::vector<VkExtensionProperties> exts(n_ext);
  fn.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n_ext, exts.data());
  d.pipeline_statistics = has_extension(exts, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
  const bool v12 = props.apiVersion >= VK_API_VERSION_1_2;
  const bool v11 = props.apiVersion >= VK_API_VERSION_1_1;

  // Properties: subgroup (core 1.1), driver (core 1.2 or VK_KHR_driver_properties).
  VkPhysicalDeviceSubgroupProperties subgroup{};
  subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  VkPhysicalDeviceDriverProperties driver{};
  driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
  VkPhysicalDeviceProperties2 props2{};
  props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  props2.pNext = &subgroup;
  const bool has_driver_props = v12 || has_extension(exts, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
  if (has_driver_props) subgroup.pNext = &driver;
  if (v11) fn.vkGetPhysicalDeviceProperties2(pd, &props2);
  info.subgroup_size = subgroup.subgroupSize;
  if (has_driver_props) {
    info.driver = std::string(driver.driverName) + " " + driver.driverInfo;
  } else {
    info.driver = "driver version " + std::to_string(props.driverVersion);
  }

  // Features: fp16 / int8 arithmetic (core 1.2 or VK_KHR_shader_float16_int8).
  VkPhysicalDeviceShaderFloat16Int8Features f16i8{};
  f16i8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  VkPhysicalDeviceFeatures2 feats2{};
  feats2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  const bool has_f16i8 = v12 || has_extension(exts, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  if (has_f16i8) feats2.pNext = &f16i8;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV coop{};
  coop.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  const bool has_coop = v11 && has_extension(exts, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME) &&
                        fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV != nullptr;
  if (has_coop) {
    coop.pNext = feats2.pNext;
    feats2.pNext = &coop;
  }
  if (v11) {
    fn.vkGetPhysicalDeviceFeatures2(pd, &feats2);
  } else {
    fn.vkGetPhysicalDeviceFeatures(pd, &feats2.features);
  }
  info.fp16 = f16i8.shaderFloat16 == VK_TRUE;
  info.int8 = f16i8.shaderInt8 == VK_TRUE;
  // The tensor-core shader needs float16 arithmetic, 16x8x16 float16 fragments with float32
  // accumulators at subgroup scope, and subgroups of exactly 32 (eight per workgroup).
  if (has_coop && coop.cooperativeMatrix && info.fp16 && subgroup.subgroupSize == 32) {
    uint32_t n = 0;
    fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, nullptr);
    std::vector<VkCooperativeMatrixPropertiesNV> shapes(n);
    for (VkCooperativeMatrixPropertiesNV& p : shapes) p.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    if (n > 0) fn.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, shapes.data());
    for (const VkCooperativeMatrixPropertiesNV& p : shapes) {
      if (p.MSize == 16 && p.NSize == 8 && p.KSize == 16 && p.AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
          p.BType == VK_COMPONENT_TYPE_FLOAT16_NV && p.CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
          p.DType == VK_COMPONENT_TYPE_FLOAT32_NV && p.scope == VK_SCOPE_SUBGROUP_NV) {
        info.coopmat = true;
      }
    }
  }

  VkPhysicalDeviceMemoryProperties mem{};
  fn.vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i) {
    if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) {
      info.memory_bytes = std::max<uint64_t>(info.memory_bytes, mem.memoryHeaps[i].size);
    }
  }

  uint32_t n_queues = 0;
  fn.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n_queues, nullptr);
  std::vector<VkQueueFamilyProperties> queues(n_queues);
  fn.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n_queues, queues.data());
  bool has_compute = false;
  // Prefer a queue family that also does graphics: on most drivers it is the fastest one.
  for (uint32_t pass = 0; pass < 2 && !has_compute; ++pass) {
    for (uint32_t i = 0; i < n_queues; ++i) {
      const VkQueueFlags f = queues[i].queueFlags;
      if ((f & VK_QUEUE_COMPUTE_BIT) && (pass == 1 || (f & VK_QUEUE_GRAPHICS_BIT))) {
        d.compute_queue_family = i;
        has_compute = true;
        break;
      }
    }
  }

  const VkPhysicalDeviceLimits& lim = props.limits;
  d.limits.max_storage_range = lim.maxStorageBufferRange;
  d.limits.max_shared_bytes = lim.maxComputeSharedMemorySize;
  d.limits.max_workgroup_size_x = lim.maxComputeWorkGroupSize[0];
  for (int i = 0; i < 3; ++i) d.limits.max_workgroup_count[i] = lim.maxComputeWorkGroupCount[i];
  d.limits.subgroup_size = subgroup.subgroupSize;
  if (has_compute && queues[d.compute_queue_family].timestampValidBits > 0 && lim.timestampComputeAndGraphics) {
    d.limits.timestamp_period_ns = lim.timestampPeriod;
  }

  std::string& missing = info.missing;
  if (!v11) add_missing(missing, "Vulkan 1.1 (device has " + info.api_version + ")");
  if (!has_compute) add_missing(missing, "a compute queue");
  if (!has_extension(exts, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME))
    add_missing(missing, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  if (!feats2.features.shaderStorageBufferArrayDynamicIndexing) {
    add_missing(missing, "shaderStorageBufferArrayDynamicIndexing");
  }
  if (v11 && !(subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT))
    add_missing(missing, "subgroups in compute shaders");
  const VkSubgroupFeatureFlags ops = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
  if (v11 && (subgroup.supportedOperations & ops) != ops) add_missing(missing, "subgroup arithmetic operations");
  // The shaders' reductions keep one partial sum per subgroup of a 256-invocation workgroup
  // in a 64-entry array.
  if (v11 && subgroup.subgroupSize < 4) add_missing(missing, "subgroups of at least 4 invocations");
  if (lim.maxComputeWorkGroupInvocations < 256 || lim.maxComputeWorkGroupSize[0] < 256) {
    add_missing(missing, "compute workgroups of 256 invocations");
  }
  // The tiled matmul's smaller variant keeps two K slices of 128 x 16 weights and 64 x 16
  // activations in shared memory.
  if (lim.maxComputeSharedMemorySize < 24576) add_missing(missing, "24 KB of compute shared memory");
  info.usable = missing.empty();
  return d;
}

}  // namespace

VkInstance create_instance(Functions& fn) {
  open_loader(fn);
  uint32_t version = VK_API_VERSION_1_0;
  if (fn.vkEnumerateInstanceVersion != nullptr) fn.vkEnumerateInstanceVersion(&version);
  if (version < VK_API_VERSION_1_1) {
    fail(ErrorCode::backend, "vulkan: the Vulkan loader supports only " + version_string(version) + "; 1.1 is needed");
  }
  uint32_t n_ext = 0;
  fn.vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, nullptr);
  std::vector<VkExtensionProperties> exts(n_ext);
  fn.vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, exts.data());
  std::vector<const char*> enabled;
  VkInstanceCreateFlags flags = 0;
  // Portability drivers (MoltenVK) are listed only when the instance asks for them.
  if (has_extension(exts, "VK_KHR_portability_enumeration")) {
    enabled.push_back("VK_KHR_portability_enumeration");
    flags |= 0x00000001;  // VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR
  }

  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "rwkv";
  app.pEngineName = "rwkv";
  app.apiVersion = version >= VK_API_VERSION_1_2 ? VK_API_VERSION_1_2 : VK_API_VERSION_1_1;
  VkInstanceCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  ci.flags = flags;
  ci.pApplicationInfo = &app;
  ci.enabledExtensionCount = uint32_t(enabled.size());
  ci.ppEnabledExtensionNames = enabled.data();
  VkInstance instance = VK_NULL_HANDLE;
  const VkResult r = fn.vkCreateInstance(&ci, nullptr, &instance);
  if (r != VK_SUCCESS) {
    fail(ErrorCode::backend, "vulkan: cannot create a Vulkan instance (" + result_name(r) + "; no driver installed?)");
  }
  try {
    load_instance(fn, instance);
  } catch (...) {
    auto destroy = reinterpret_cast<PFN_vkDestroyInstance>(fn.vkGetInstanceProcAddr(instance, "vkDestroyInstance"));
    if (destroy != nullptr) destroy(instance, nullptr);
    throw;
  }
  return instance;
}

std::vector<ProbedDevice> probe_devices(const Functions& fn, VkInstance instance) {
  uint32_t n = 0;
  VkResult r = fn.vkEnumeratePhysicalDevices(instance, &n, nullptr);
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) check(r, "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> handles(n);
  if (n > 0) {
    r = fn.vkEnumeratePhysicalDevices(instance, &n, handles.data());
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) check(r, "vkEnumeratePhysicalDevices");
  }
  std::vector<ProbedDevice> out;
  for (uint32_t i = 0; i < n; ++i) out.push_back(probe(fn, handles[i], int(i)));
  return out;
}

}  // namespace rwkv::vk

namespace rwkv {

std::vector<VulkanDeviceInfo> list_vulkan_devices() {
  vk::Functions fn;
  VkInstance instance = vk::create_instance(fn);
  std::vector<VulkanDeviceInfo> out;
  try {
    for (const vk::ProbedDevice& d : vk::probe_devices(fn, instance)) out.push_back(d.info);
  } catch (...) {
    fn.vkDestroyInstance(instance, nullptr);
    throw;
  }
  fn.vkDestroyInstance(instance, nullptr);
  return out;
}

}  // namespace rwkv
