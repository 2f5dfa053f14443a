#include "backend/registry.h"

#include "common/error.h"

namespace rwkv {

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
#if defined(RWKV_HAVE_CUDA)
  names.push_back("cuda");
#endif
#if defined(RWKV_HAVE_VULKAN)
  names.push_back("vulkan");
#endif
  names.push_back("cpu");
  names.push_back("cpu-ref");
  return names;
}

std::unique_ptr<Backend> create_backend(std::string_view name, const BackendOptions& options,
                                        std::vector<std::string>* notes) {
  if (name == "cpu") return make_cpu_backend(options);
  if (name == "cpu-ref") return make_cpu_ref_backend(options);
#if defined(RWKV_HAVE_CUDA)
  if (name == "cuda") return make_cuda_backend(options);
#endif
#if defined(RWKV_HAVE_VULKAN)
  if (name == "vulkan") return make_vulkan_backend(options, /*allow_cpu_devices=*/true);
#endif
  if (name == "auto") {
    auto note = [&](const std::string& line) {
      if (notes) notes->push_back(line);
    };
#if defined(RWKV_HAVE_CUDA)
    try {
      return make_cuda_backend(options);
    } catch (const Error& e) {
      note(std::string("cuda unavailable (") + e.what() + "), trying the next backend");
    }
#else
    note("cuda not built into this binary");
#endif
#if defined(RWKV_HAVE_VULKAN)
    try {
      // A CPU-type Vulkan device (lavapipe) is never faster than the cpu backend.
      return make_vulkan_backend(options, /*allow_cpu_devices=*/false);
    } catch (const Error& e) {
      note(std::string("vulkan unavailable (") + e.what() + "), using cpu");
    }
#endif
    return make_cpu_backend(options);
  }
  std::string known;
  for (const std::string& n : backend_names()) known += (known.empty() ? "" : ", ") + n;
  fail(ErrorCode::argument, "unknown backend '" + std::string(name) + "' (this build has: auto, " + known + ")");
}

}  // namespace rwkv
