// cpu: the fast CPU backend. Same forward pass as cpu-ref, but matrix products run SIMD
// kernels on the stored (quantised) bytes across a thread pool, and WKV runs one head per
// task in float32.
#include <memory>

#include "backend/cpu/bandwidth.h"
#include "backend/cpu/forward.h"
#include "backend/registry.h"
#include "common/cpu_info.h"
#include "common/threadpool.h"
#include "tensor/matmul.h"

namespace rwkv {

namespace {

class CpuBackend final : public CpuForward {
 public:
  explicit CpuBackend(int n_threads) : pool_(n_threads) {}
  std::string name() const override { return "cpu"; }
  std::string device_name() const override {
    return cpu_model_name() + " (" + std::to_string(pool_.size()) + " threads)";
  }
  double measure_bandwidth() override { return host_copy_bandwidth(&pool_); }

 protected:
  void matmul(const Weight& W, const float* x, int64_t T, float* y) override {
    rwkv::matmul(pool_, W.type, W.data, W.rows(), W.cols(), x, T, y);
  }

  void wkv(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
           const float* beta, int64_t T, float* y) override {
    const Hparams& hp = model_->hparams();
    const int64_t H = hp.n_head, N = hp.head_size, C = hp.n_embd;
    pool_.parallel_for(H, [&](int64_t h0, int64_t h1, int) {
      for (int64_t h = h0; h < h1; ++h) {
        float* S = state + h * N * N;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t o = t * C + h * N;
          head_step(S, r + o, decay + o, k + o, v + o, alpha + o, beta + o, N, y + o);
        }
      }
    });
  }

 private:
  // One token of one head in float32 (see ref::wkv7_head_step for the readable version).
  static void head_step(float* S, const float* r, const float* d, const float* k, const float* v, const float* alpha,
                        const float* beta, int64_t N, float* y) {
    for (int64_t i = 0; i < N; ++i) {
      float* row = S + i * N;
      float sa = 0;
      for (int64_t j = 0; j < N; ++j) sa += alpha[j] * row[j];
      const float vi = v[i];
      float out = 0;
      for (int64_t j = 0; j < N; ++j) {
        const float s = row[j] * d[j] + vi * k[j] + sa * beta[j];
        row[j] = s;
        out += s * r[j];
      }
      y[i] = out;
    }
  }

  ThreadPool pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options.n_threads);
}

}  // namespace rwkv
