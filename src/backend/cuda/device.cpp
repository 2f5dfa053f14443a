// Device discovery, device memory and weight upload for the CUDA backend.
#include <cuda_runtime.h>

#include <atomic>
#include <vector>

#include "backend/cuda/ops.h"
#include "common/error.h"

namespace rwkv::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::backend, std::string("cuda: ") + what + ": " + cudaGetErrorString(err));
}

std::atomic<int> g_pdl_user{1};     // set_pdl()
std::atomic<int> g_pdl_device{-1};  // -1 unknown, else whether the current device has cc >= 9.0

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

bool pdl_enabled() {
  if (!g_pdl_user) return false;
  int d = g_pdl_device.load();
  if (d < 0) {
    int dev = 0, major = 0;
    d = cudaGetDevice(&dev) == cudaSuccess &&
                cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9
            ? 1
            : 0;
    g_pdl_device = d;
  }
  return d == 1;
}

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
