// rwkv devices: the backends compiled into this binary and whether each can start here.
#include <cstdio>

#include "commands.h"
#include "common.h"

namespace rwkv::cli {

namespace {

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
}

}  // namespace

void register_devices(CLI::App& app) {
  auto args = std::make_shared<ModelArgs>();
  CLI::App* cmd = app.add_subcommand("devices", "List the backends in this build and whether each starts here");
  cmd->add_option("--device", args->device, "GPU adapter index to try (-1: the best one)")->capture_default_str();
  cmd->callback([args] { run_devices(*args); });
}

}  // namespace rwkv::cli
