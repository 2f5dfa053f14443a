// cpu: the fast CPU backend. Same forward pass as cpu-ref, but matrix products run SIMD
// kernels on the stored (quantised) bytes across a thread pool, the ReLU^2-sparse FFN value
// product skips zero units at decode (ffn_sparse.h), WKV runs in float32 over the state
// rows, and a step's elementwise passes are spread over the threads.
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cpu/bandwidth.h"
#include "backend/cpu/ffn_sparse.h"
#include "backend/cpu/forward.h"
#include "backend/cpu/wkv_rows.h"
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

  // The H x N state rows are independent (wkv_rows.h): they are split over the threads in
  // groups of kWkvRowGrain, all heads busy on any thread count.
  void wkv(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
           const float* beta, int64_t T, float* y) override {
    const Hparams& hp = model_->hparams();
    const int64_t N = hp.head_size, C = hp.n_embd;
    pool_.parallel_for(
        C, [&](int64_t i0, int64_t i1, int) { wkv_rows(state, r, decay, k, v, alpha, beta, T, C, N, i0, i1, y); },
        kWkvRowGrain);
  }

  void for_rows(int64_t T, int64_t width, const std::function<void(int64_t, int64_t)>& fn) override {
    if (T < 2 || double(T) * double(width) < kParallelElements) {
      fn(0, T);
      return;
    }
    pool_.parallel_for(T, [&](int64_t t0, int64_t t1, int) { fn(t0, t1); });
  }

 private:
  // Transposed copies of the FFN value matrices for the ReLU^2-sparse product
  // (ffn_sparse.h), per layer where the type has one, when together they fit in half the
  // memory the host has left and the model does not fit in the last-level cache (there
  // decode does not wait on bytes: 0.1B Q8_0 lost 7-14% with them on a 16-core Xeon with a
  // 300 MB L3, bench/RESULTS.md). Each costs its matrix's bytes once more (the mapped
  // original stays for prefill). By default only float and Q8_0 value matrices (+14-19% at
  // 2.9B on 16 cores); the k-quants' product has more to compute a byte and measured even
  // on 2 cores, so it waits for RWKV_CPU_SPARSE_FFN=all, which also ignores the cache rule.
  // RWKV_CPU_SPARSE_FFN=0 turns the copies off.
  void make_sparse_ffn() {
    const Model& m = *model_;
    sparse_ffn_.clear();
    sparse_ffn_.resize(m.layers.size());
    const char* env = std::getenv("RWKV_CPU_SPARSE_FFN");
    const std::string mode = env ? env : "";
    if (mode == "0" || (mode != "all" && m.weight_bytes() <= host_last_level_cache())) return;
    const auto wanted = [&](const Weight& w) {
      const bool by_default = w.type == TensorType::F32 || w.type == TensorType::F16 || w.type == TensorType::BF16 ||
                              w.type == TensorType::Q8_0;
      return (by_default || mode == "all") && SparseFfnValue::supports(w.type, w.rows());
    };
    size_t bytes = 0;
    for (const LayerWeights& w : m.layers)
      if (wanted(w.ffn_value))
        bytes += SparseFfnValue::copy_bytes(w.ffn_value.type, w.ffn_value.rows(), w.ffn_value.cols());
    if (bytes == 0 || bytes > host_available_memory() / 2) return;
    pool_.parallel_for(int64_t(m.layers.size()), [&](int64_t l0, int64_t l1, int) {
      for (int64_t l = l0; l < l1; ++l) {
        const Weight& w = m.layers[size_t(l)].ffn_value;
        if (wanted(w)) sparse_ffn_[size_t(l)].emplace(w);
      }
    });
  }

  // Elementwise work below this many values a step stays on the calling thread.
  static constexpr double kParallelElements = 16384;

  ThreadPool pool_;
  std::vector<std::optional<SparseFfnValue>> sparse_ffn_;  // per layer
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options.n_threads);
}

}  // namespace rwkv
