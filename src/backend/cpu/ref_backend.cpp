// cpu-ref: the reference backend. Plain loops, weights dequantised row by row, double
// accumulators. It is slow on purpose: it is the oracle every other backend is tested against.
#include "backend/cpu/bandwidth.h"
#include "backend/cpu/forward.h"
#include "backend/cpu/ref_ops.h"
#include "backend/registry.h"

namespace rwkv {

namespace {

class CpuRefBackend final : public CpuForward {
 public:
  std::string name() const override { return "cpu-ref"; }
  std::string device_name() const override { return "CPU (reference, 1 thread)"; }
  double measure_bandwidth() override { return host_copy_bandwidth(nullptr); }

 protected:
  void matmul(const Weight& W, const float* x, int64_t T, float* y) override { ref::matmul(W, x, T, y); }
  void wkv(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
           const float* beta, int64_t T, float* y) override {
    const Hparams& hp = model_->hparams();
    ref::wkv7(state, r, decay, k, v, alpha, beta, T, hp.n_head, hp.head_size, y);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_ref_backend(const BackendOptions&) { return std::make_unique<CpuRefBackend>(); }

}  // namespace rwkv
