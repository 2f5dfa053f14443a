// cpu: the fast CPU backend. Same forward pass as cpu-ref, but matrix products run SIMD
// kernels on the stored (quantised) bytes across a thread pool, and WKV runs one head per
// task in float32.
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cpu/bandwidth.h"
#include "backend/cpu/ffn_sparse.h"
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

  void load(std::shared_ptr<const Model> model, const ProgressFn& progress) override {
    CpuForward::load(std::move(model), progress);
    make_sparse_ffn();
  }

  size_t memory_bytes() const override {
    size_t bytes = CpuForward::memory_bytes();
    for (const auto& s : sparse_ffn_)
      if (s) bytes += s->bytes();
    return bytes;
  }

 protected:
  void matmul(const Weight& W, const float* x, int64_t T, float* y) override {
    rwkv::matmul(pool_, W.type, W.data, W.rows(), W.cols(), x, T, y);
  }

  void ffn_value(int layer, const Weight& W, const float* hidden, int64_t T, float* y) override {
    const std::optional<SparseFfnValue>& sparse = sparse_ffn_[size_t(layer)];
    if (!sparse || !sparse->multiply(pool_, hidden, T, y)) matmul(W, hidden, T, y);
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
  // Transposed copies of the FFN value matrices for the ReLU^2-sparse product
  // (ffn_sparse.h), per layer where the type has one, when together they fit in half the
  // memory the host has left and the model does not fit in the last-level cache (there
  // decode does not wait on bytes: 0.1B Q8_0 lost 7-14% with them on a 16-core Xeon with a
  // 300 MB L3, bench/RESULTS.md). Each costs its matrix's bytes once more (the mapped
  // original stays for prefill). RWKV_CPU_SPARSE_FFN=0 turns them off, =all ignores the
  // cache rule.
  void make_sparse_ffn() {
    const Model& m = *model_;
    sparse_ffn_.clear();
    sparse_ffn_.resize(m.layers.size());
    const char* env = std::getenv("RWKV_CPU_SPARSE_FFN");
    const std::string mode = env ? env : "";
    if (mode == "0" || (mode != "all" && m.weight_bytes() <= host_last_level_cache())) return;
    size_t bytes = 0;
    for (const LayerWeights& w : m.layers)
      if (SparseFfnValue::supports(w.ffn_value.type))
        bytes += SparseFfnValue::copy_bytes(w.ffn_value.type, w.ffn_value.rows(), w.ffn_value.cols());
    if (bytes == 0 || bytes > host_available_memory() / 2) return;
    pool_.parallel_for(int64_t(m.layers.size()), [&](int64_t l0, int64_t l1, int) {
      for (int64_t l = l0; l < l1; ++l) {
        const Weight& w = m.layers[size_t(l)].ffn_value;
        if (SparseFfnValue::supports(w.type)) sparse_ffn_[size_t(l)].emplace(w);
      }
    });
  }

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
  std::vector<std::optional<SparseFfnValue>> sparse_ffn_;  // per layer
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options.n_threads);
}

}  // namespace rwkv
