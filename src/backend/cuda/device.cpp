// Device discovery, device memory and weight upload for the CUDA backend.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cuda/ops.h"
#include "common/error.h"

namespace rwkv::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::backend, std::string("cuda: ") + what + ": " + cudaGetErrorString(err));
}

std::atomic<int> g_pdl_user{1};        // set_pdl()
std::atomic<int> g_hopper_device{-1};  // -1 unknown, else whether the current device has cc >= 9.0

}  // namespace

bool host_page_locked(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}

int device_count(std::string* reason) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a failed runtime init
    if (reason) *reason = std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(err) + ")";
    return 0;
  }
  if (n == 0 && reason) *reason = "no CUDA device found";
  return n;
}

void set_pdl(bool enabled) { g_pdl_user = enabled ? 1 : 0; }

// The decode kernels prefer the largest L1 (carveout 0): the products and row kernels read
// activations through L1 and keep their weight loads in flight there (a probe lost 12% on a
// Q8_0-like product with 96 KB of shared memory reserved). The sparse FFN value product's
// blocks hold 16 KB of shared memory each and do better with a quarter of the SM as shared
// memory. H100, decode against the driver's default: 2.9B Q4_K +2.7%, F16 +2%, Q8_0 +1.5%,
// 0.1B Q8_0 +6%. The prefill WKV scan, whose blocks hold its token chunks in shared memory,
// takes the largest L1 only where its grid has at most one block per SM (0.1B pp512 138k ->
// 196-202k tok/s); with more blocks it keeps the driver's choice (carveout 0 took 2.9B F16
// pp512 from 31.3k to 30.2k: fewer blocks fit an SM). The other prefill-only kernels keep the
// driver's choice (NOTES.md run 80). The decode WKV takes the same grid rule: one block per
// head and sequence, so batched decode fills the SMs many times over, and at carveout 0 its
// blocks' shared memory let fewer of them in (2.9B Q8_0 x256 21.0k -> 15.2k tok/s, x64 11.8k
// -> 10.1k; NOTES.md run 87). RWKV_CUDA_CARVEOUT="name=percent,..." overrides the
// choice per kernel name (-1: the driver's), for tuning.
namespace {

constexpr int kDriverChoice = -1;  // cudaSharedmemCarveoutDefault

// The override for a kernel name from RWKV_CUDA_CARVEOUT, if any.
std::optional<int> carveout_override(const std::string& name) {
  static const std::unordered_map<std::string, int> overrides = [] {
    std::unordered_map<std::string, int> m;
    const char* env = std::getenv("RWKV_CUDA_CARVEOUT");
    std::string spec = env ? env : "";
    for (size_t at = 0; at < spec.size();) {
      const size_t comma = std::min(spec.find(',', at), spec.size());
      const std::string item = spec.substr(at, comma - at);
      const size_t eq = item.find('=');
      if (eq == std::string::npos)
        fail(ErrorCode::argument, "RWKV_CUDA_CARVEOUT: expected name=percent, got '" + item + "'");
      m[item.substr(0, eq)] = std::atoi(item.c_str() + eq + 1);
      at = comma + 1;
    }
    return m;
  }();
  const auto it = overrides.find(name);
  if (it == overrides.end()) return std::nullopt;
  return it->second;
}

// What a kernel prefers: a fixed carveout, or (by_grid) the largest L1 only for grids of at
// most one block per SM.
struct CarveoutRule {
  int fixed = kDriverChoice;
  bool by_grid = false;
  int sms = 0;
  int current = kDriverChoice;  // what the kernel's attribute says now
};

CarveoutRule carveout_rule(const char* name) {
  CarveoutRule rule;
  const std::string n(name);
  if (const std::optional<int> o = carveout_override(n)) {
    rule.fixed = *o;
  } else if (n == "wkv_scan" || n == "wkv_fused") {
    rule.sms = device_sms();
    rule.by_grid = true;
  } else if (n == "ffn_sparse") {
    rule.fixed = 25;
  } else {
    rule.fixed = 0;
    for (const char* prefill :
         {"wkv_prep", "wkv_post", "to_f16", "epilogue", "lora_mid", "lora_epilogue", "dequant_f16"})
      if (n == prefill) rule.fixed = kDriverChoice;
  }
  return rule;
}

}  // namespace

int device_sms() {
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return sms;
}

void configure_kernel(const void* kernel, const char* name, int64_t blocks) {
  static std::mutex mutex;
  static std::unordered_map<const void*, CarveoutRule> rules;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = rules.find(kernel);
  if (it == rules.end()) it = rules.emplace(kernel, carveout_rule(name)).first;
  CarveoutRule& rule = it->second;
  const int want = rule.by_grid ? (blocks <= rule.sms ? 0 : kDriverChoice) : rule.fixed;
  if (want == rule.current) return;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, want), "cudaFuncSetAttribute");
  rule.current = want;
}

namespace {
bool hopper_or_later() {
  int d = g_hopper_device.load();
  if (d < 0) {
    int dev = 0, major = 0;
    d = cudaGetDevice(&dev) == cudaSuccess &&
                cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9
            ? 1
            : 0;
    g_hopper_device = d;
  }
  return d == 1;
}
}  // namespace

bool pdl_enabled() { return g_pdl_user && hopper_or_later(); }
bool clusters_supported() { return hopper_or_later(); }

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err != cudaSuccess) {
    ptr_ = nullptr;
    fail(ErrorCode::backend, "cuda: cannot allocate " + std::to_string(bytes) + " bytes of device memory (" +
                                 cudaGetErrorString(err) + ")");
  }
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}
void DeviceBuffer::upload(const void* host, size_t bytes, size_t offset) {
  if (offset + bytes > bytes_) fail(ErrorCode::argument, "cuda: upload past the end of a device buffer");
  check(cudaMemcpy(static_cast<uint8_t*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice), "upload");
}
void DeviceBuffer::download(void* host, size_t bytes, size_t offset) const {
  if (offset + bytes > bytes_) fail(ErrorCode::argument, "cuda: download past the end of a device buffer");
  check(cudaMemcpy(host, static_cast<const uint8_t*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost), "download");
}
void DeviceBuffer::fill(uint8_t byte) {
  if (bytes_) check(cudaMemset(ptr_, byte, bytes_), "memset");
}

DeviceMatrix upload_matrix(TensorType type, int64_t rows, int64_t cols, const uint8_t* host_bytes) {
  DeviceMatrix m;
  m.layout = packed_layout(type, rows, cols);
  std::vector<uint8_t> packed(m.layout.bytes, 0);
  pack_rows(m.layout, host_bytes, 0, rows, packed.data());
  m.buffer = DeviceBuffer(m.layout.bytes);
  m.buffer.upload(packed.data(), packed.size());
  return m;
}

}  // namespace rwkv::cuda
