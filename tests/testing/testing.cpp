#include "testing/testing.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "backend/cpu/ref_ops.h"
#include "tensor/quant.h"

namespace rwkv::testing {

double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  return rel_l2(a.data(), b.data(), a.size());
}

size_t argmax(const float* x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

std::vector<float> random_vector(size_t n, float lo, float hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Weight make_weight(TensorType type, int64_t rows, int64_t cols, uint64_t seed, std::vector<uint8_t>& storage) {
  Weight w;
  w.name = "test." + std::string(type_name(type));
  w.type = type;
  w.ne[0] = cols;
  w.ne[1] = rows;
  const std::vector<float> values = random_vector(size_t(rows * cols), -1.0f, 1.0f, seed);
  storage.assign(row_bytes(type, cols) * size_t(rows), 0);
  quantize_row(type, values.data(), storage.data(), rows * cols);
  w.data = storage.data();
  w.nbytes = storage.size();
  return w;
}

std::vector<float> reference_product(const Weight& w, std::span<const float> x, int T) {
  std::vector<float> y(size_t(T) * size_t(w.rows()));
  ref::matmul(w, x.data(), T, y.data());
  return y;
}

std::vector<float> hidden_vector(size_t n, double zeros, uint64_t seed, bool blocks) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> h(n);
  for (size_t j = 0; j < n; ++j) {
    const double z = 2.0 * u(rng);
    h[j] = u(rng) < zeros || (blocks && j / 32 % 3 == 1) ? 0.0f : float(z * z);
  }
  return h;
}

std::string temp_path(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("rwkv-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string synthetic_model(const SyntheticSpec& s) {
  static std::mutex mu;
  static std::map<std::string, std::string> made;
  const std::string key = std::to_string(s.n_embd) + "x" + std::to_string(s.n_layer) + "-f" + std::to_string(s.n_ffn) +
                          "-v" + std::to_string(s.n_vocab) + "-r" + std::to_string(s.rank_w) + "." +
                          std::to_string(s.rank_a) + "." + std::to_string(s.rank_v) + "." + std::to_string(s.rank_g) +
                          "-t" + std::to_string(uint32_t(s.type)) + "-h" + std::to_string(uint32_t(s.head_type)) +
                          (s.odd_ffn_value_type ? "-o" + std::to_string(uint32_t(*s.odd_ffn_value_type)) : "") + "-s" +
                          std::to_string(s.seed) + "-p" + std::to_string(s.pool_rows) + "-d" +
                          std::to_string(s.ffn_density) + ".gguf";
  std::lock_guard<std::mutex> lock(mu);
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  const std::string path = temp_path(key);
  write_synthetic_model(path, s);
  made[key] = path;
  return path;
}

std::string source_path(const std::string& relative) { return std::string(RWKV_SOURCE_DIR) + "/" + relative; }
std::string demo_model_f16() { return source_path("models/rwkv7-demo-6x256-f16.gguf"); }
std::string demo_model_q8_0() { return source_path("models/rwkv7-demo-6x256-q8_0.gguf"); }

}  // namespace rwkv::testing
