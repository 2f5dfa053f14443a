// rwkv devices: the backends compiled into this binary and whether each can start here.
#include <cstdio>

#include "commands.h"
#include "common.h"
#if defined(RWKV_HAVE_VULKAN)
#include "backend/vulkan/vulkan_devices.h"
#endif

namespace rwkv::cli {

namespace {

#if defined(RWKV_HAVE_VULKAN)
// Every Vulkan adapter, usable or not, with what --device picks it.
void print_vulkan_adapters() {
  std::vector<VulkanDeviceInfo> adapters;
  try {
    adapters = list_vulkan_devices();
  } catch (const std::exception& e) {
    std::printf("\nvulkan adapters: none (%s)\n", e.what());
    return;
  }
  std::printf("\nvulkan adapters:%s\n", adapters.empty() ? " none" : "");
  for (const VulkanDeviceInfo& d : adapters) {
    std::printf("  --device %d: %s (%s, %s, Vulkan %s, driver %s, subgroup %u, fp16 %s, int8 %s)%s%s\n", d.index,
                d.name.c_str(), d.type.c_str(), format_bytes(double(d.memory_bytes)).c_str(), d.api_version.c_str(),
                d.driver.c_str(), d.subgroup_size, d.fp16 ? "yes" : "no", d.int8 ? "yes" : "no",
                d.usable ? "" : " unusable: ", d.usable ? "" : d.missing.c_str());
  }
}
#endif

void run_devices(const ModelArgs& args) {
  std::printf("%-8s %-6s %s\n", "backend", "status", "device / reason");
  for (const std::string& name : backend_names()) {
    try {
      const auto backend = create_backend(name, args.backend_options());
      std::printf("%-8s %-6s %s\n", name.c_str(), "ok", backend->device_name().c_str());
    } catch (const std::exception& e) {
      // A backend that cannot start is a normal answer here, not a failure of the command.
      std::printf("%-8s %-6s %s\n", name.c_str(), "no", e.what());
    }
  }
#if defined(RWKV_HAVE_VULKAN)
  print_vulkan_adapters();
#endif
}

}  // namespace

void register_devices(CLI::App& app) {
  auto args = std::make_shared<ModelArgs>();
  CLI::App* cmd = app.add_subcommand("devices", "List the backends in this build and whether each starts here");
  cmd->add_option("--device", args->device, "GPU adapter index to try (-1: the best one)")->capture_default_str();
  cmd->callback([args] { run_devices(*args); });
}

}  // namespace rwkv::cli
