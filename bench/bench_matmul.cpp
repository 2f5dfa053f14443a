// matmul() throughput for the shapes of a 0.1B RWKV-7 model (C = 768, FFN 3072, vocab
// 65536) at decode (T = 1) and prefill (T = 128). Counters: weight bytes streamed per
// second (GB/s) and multiply-adds x 2 per second (GFLOP/s).
//   bench_matmul --benchmark_filter='q4_K/65536x768' --benchmark_repetitions=5
// (repetitions add a median, steadier than single runs on a machine shared with other work)
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/threadpool.h"
#include "tensor/matmul.h"
#include "tensor/quant.h"

namespace {

using rwkv::TensorType;

// Distinct random rows quantised once, then repeated: the kernels' cost does not depend on
// the values, and quantising 50M weights for the head would dominate the run.
constexpr int64_t kDistinctRows = 64;

const std::vector<uint8_t>& weights(TensorType type, int64_t rows, int64_t cols) {
  static std::map<std::tuple<TensorType, int64_t, int64_t>, std::vector<uint8_t>> cache;
  auto& w = cache[{type, rows, cols}];
  if (!w.empty()) return w;
  const size_t stride = rwkv::row_bytes(type, cols);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<uint8_t> distinct(stride * kDistinctRows);
  for (int64_t r = 0; r < kDistinctRows; ++r) {
    for (float& v : row) v = dist(rng);
    rwkv::quantize_row(type, row.data(), distinct.data() + size_t(r) * stride, cols);
  }
  w.resize(stride * size_t(rows));
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(distinct.data() + size_t(r % kDistinctRows) * stride, stride, w.data() + size_t(r) * stride);
  return w;
}

rwkv::ThreadPool& pool(int threads) {
  static std::map<int, std::unique_ptr<rwkv::ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<rwkv::ThreadPool>(threads);
  return *p;
}

void BM_matmul(benchmark::State& state, TensorType type, int64_t rows, int64_t cols, int64_t T) {
  const int threads = int(state.range(0));
  const std::vector<uint8_t>& w = weights(type, rows, cols);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(size_t(T * cols)), y(size_t(T * rows));
  for (float& v : x) v = dist(rng);
  rwkv::ThreadPool& p = pool(threads);
  for (auto _ : state) {
    rwkv::matmul(p, type, w.data(), rows, cols, x.data(), T, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double calls = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(calls * double(w.size()) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(calls * 2.0 * double(rows) * double(cols) * double(T) * 1e-9, benchmark::Counter::kIsRate);
}

void register_all() {
  const TensorType types[] = {TensorType::F16, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K,
                              TensorType::F32, TensorType::BF16, TensorType::Q4_0, TensorType::Q5_K};
  const int64_t shapes[][2] = {{768, 768}, {3072, 768}, {768, 3072}, {65536, 768}};
  for (const TensorType type : types) {
    for (const auto& shape : shapes) {
      for (const int64_t T : {1, 128}) {
        const std::string name = "matmul/" + std::string(rwkv::type_name(type)) + "/" + std::to_string(shape[0]) + "x" +
                                 std::to_string(shape[1]) + "/T" + std::to_string(T);
        benchmark::RegisterBenchmark(name.c_str(), BM_matmul, type, shape[0], shape[1], T)
            ->ArgName("threads")
            ->Arg(1)
            ->Arg(2)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
