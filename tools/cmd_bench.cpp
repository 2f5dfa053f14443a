// rwkv bench: llama-bench-style throughput table. pp<P> feeds P tokens to a fresh state as
// one prompt (the engine splits it into prefill chunks); tg<N> runs N single-token decode
// steps from a state that saw a short prompt, for B sequences at once with --batch B. Each
// test first runs untimed, at least once and for at least --warmup-ms (a GPU that was idle
// runs its first few hundred milliseconds of work at a lower clock: on the H100 a 512-token
// prefill took twice as long for ~0.3 s), then -r timed repetitions: t/s is mean ± sample
// stddev.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "commands.h"
#include "common.h"

namespace rwkv::cli {

namespace {

struct BenchArgs {
  ModelArgs model;
  int n_prompt = 512;
  int n_gen = 128;
  int reps = 3;
  std::vector<int> batches = {1};
  int ubatch = 512;  // prompt tokens per prefill step
  std::string format = "md";
  double bandwidth_gbps = 0;  // --bandwidth; 0: measured by the backend (Backend::measure_bandwidth)
  int warmup_ms = 1000;       // untimed runs of each test for at least this long
};

struct TestResult {
  std::string name;
  int batch = 1;
  std::vector<double> tokens_per_second;  // one per repetition
  double gbps = 0;                        // decode tests only: weight bytes streamed per second
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()); }

double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}

class Bench {
 public:
  Bench(Engine& engine, const BenchArgs& args) : engine_(engine), args_(args), rng_(1234) {}

  // Token ids drawn uniformly from the vocabulary without id 0 (end of text), as llama-bench
  // feeds random tokens: the speed must not depend on what the text says.
  std::vector<int32_t> random_tokens(size_t n) {
    std::uniform_int_distribution<int32_t> d(1, engine_.n_vocab() - 1);
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = d(rng_);
    return ids;
  }

  double prompt_seconds(const std::vector<int32_t>& prompt) {
    std::vector<float> logits(size_t(engine_.n_vocab()));
    engine_.reset(0);
    const auto t0 = Clock::now();
    engine_.feed(0, prompt, logits.data());
    return seconds_since(t0);
  }

  // Seconds for `steps` decode steps of `batch` sequences.
  double decode_seconds(int batch, int steps) {
    std::vector<int> slots(static_cast<size_t>(batch));
    std::iota(slots.begin(), slots.end(), 0);
    const std::span<float> logits = engine_.logits_buffer(size_t(batch));
    const std::vector<int32_t> context = random_tokens(16);
    for (int s : slots) {
      engine_.reset(s);
      engine_.feed(s, context, logits.data());
    }
    const std::vector<int32_t> ids = random_tokens(size_t(steps) * size_t(batch));
    const auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i)
      engine_.decode(slots, std::span(ids).subspan(size_t(i) * size_t(batch), size_t(batch)), logits.data());
    return seconds_since(t0);
  }

  TestResult prompt_test() {
    TestResult r;
    r.name = "pp" + std::to_string(args_.n_prompt);
    const std::vector<int32_t> prompt = random_tokens(size_t(args_.n_prompt));
    warm_up([&] { return prompt_seconds(prompt); });
    for (int i = 0; i < args_.reps; ++i) r.tokens_per_second.push_back(args_.n_prompt / prompt_seconds(prompt));
    return r;
  }

  TestResult decode_test(int batch) {
    TestResult r;
    r.name = "tg" + std::to_string(args_.n_gen) + (batch > 1 ? " x " + std::to_string(batch) : "");
    r.batch = batch;
    warm_up([&] { return decode_seconds(batch, std::min(args_.n_gen, 16)); });
    // Each step reads every weight once (the embedding table only at one row per token).
    const Model& m = engine_.model();
    const double step_bytes =
        double(m.weight_bytes() - m.tok_embd.nbytes) + double(batch) * double(m.tok_embd.row_stride());
    double gbps = 0;
    for (int i = 0; i < args_.reps; ++i) {
      const double s = decode_seconds(batch, args_.n_gen);
      r.tokens_per_second.push_back(double(batch) * args_.n_gen / s);
      gbps += step_bytes * args_.n_gen / s / 1e9;
    }
    r.gbps = gbps / args_.reps;
    return r;
  }

 private:
  // Runs `run` (returning its seconds) once, then again until --warmup-ms have passed.
  template <typename F>
  void warm_up(F run) {
    double spent = 0;
    do spent += run();
    while (spent * 1e3 < args_.warmup_ms);
  }

  Engine& engine_;
  const BenchArgs& args_;
  std::mt19937 rng_;
};

void run_bench(const BenchArgs& args) {
  for (int b : args.batches)
    if (b < 1) throw UsageError("--batch sizes must be >= 1");
  const int max_batch = *std::max_element(args.batches.begin(), args.batches.end());
  auto engine = open_engine(args.model, max_batch, args.ubatch);
  Bench bench(*engine, args);
  std::vector<TestResult> results;
  if (args.n_prompt > 0) results.push_back(bench.prompt_test());
  if (args.n_gen > 0)
    for (int b : args.batches) results.push_back(bench.decode_test(b));

  // The limit decode is reported against: given, or the backend's measured copy bandwidth.
  double limit_gbps = args.bandwidth_gbps;
  const bool measured = limit_gbps <= 0 && args.n_gen > 0;
  if (measured) limit_gbps = engine->backend().measure_bandwidth();

  const Model& m = engine->model();
  int64_t n_params = 0;
  for (const Weight* w : m.all_weights()) n_params += w->n_elements();
  const std::string file = std::filesystem::path(m.path()).filename().string();
  const std::string backend = engine->backend().name(), device = engine->backend().device_name();

  if (args.format == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const TestResult& r : results) {
      nlohmann::json j = {{"model", file},
                          {"model_bytes", m.weight_bytes()},
                          {"n_params", n_params},
                          {"backend", backend},
                          {"device", device},
                          {"test", r.name},
                          {"batch", r.batch},
                          {"n_ubatch", args.ubatch},
                          {"reps", args.reps},
                          {"warmup_ms", args.warmup_ms},
                          {"ts_mean", mean(r.tokens_per_second)},
                          {"ts_stddev", stddev(r.tokens_per_second)},
                          {"samples_ts", r.tokens_per_second}};
      if (r.gbps > 0) j["gbps"] = r.gbps;
      if (r.gbps > 0 && limit_gbps > 0) {
        j["bandwidth_gbps"] = limit_gbps;
        j["bandwidth_source"] = measured ? "measured" : "given";
        j["bandwidth_pct"] = 100 * r.gbps / limit_gbps;
      }
      out.push_back(j);
    }
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  const bool pct = limit_gbps > 0;
  std::printf("| model | size | params | backend | device | test | t/s | GB/s |%s\n", pct ? " % of limit |" : "");
  std::printf("| --- | ---: | ---: | --- | --- | --- | ---: | ---: |%s\n", pct ? " ---: |" : "");
  for (const TestResult& r : results) {
    char ts[64], gb[32] = "", pc[32] = "";
    std::snprintf(ts, sizeof(ts), "%.2f ± %.2f", mean(r.tokens_per_second), stddev(r.tokens_per_second));
    if (r.gbps > 0) std::snprintf(gb, sizeof(gb), "%.1f", r.gbps);
    if (r.gbps > 0 && pct) std::snprintf(pc, sizeof(pc), "%.1f%%", 100 * r.gbps / limit_gbps);
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |", file.c_str(),
                format_bytes(double(m.weight_bytes())).c_str(), format_count(double(n_params)).c_str(), backend.c_str(),
                device.c_str(), r.name.c_str(), ts, gb);
    if (pct) std::printf(" %s |", pc);
    std::printf("\n");
  }
  if (pct && measured) {
    std::printf(
        "\nlimit: %.0f GB/s, the copy bandwidth of the %s backend's memory, measured now (bytes read + "
        "written; --bandwidth GBPS sets it)\n",
        limit_gbps, backend.c_str());
  } else if (pct) {
    std::printf("\nlimit: %.0f GB/s (--bandwidth)\n", limit_gbps);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prompt (pp) and decode (tg) throughput, llama-bench style");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("-p,--n-prompt", args->n_prompt, "Prompt tokens for the pp test (0: skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--n-gen", args->n_gen, "Decode steps for the tg tests (0: skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-r,--repetitions", args->reps, "Timed repetitions per test")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("-u,--ubatch", args->ubatch, "Prompt tokens per prefill step (the engine's chunk)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup-ms", args->warmup_ms, "Untimed runs of each test (at least one) for this long first")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", args->batches, "Sequences decoded at once, one tg test each: 1,8,64")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("-o,--output", args->format, "Output format")
      ->capture_default_str()
      ->check(CLI::IsMember({"md", "json"}));
  cmd->add_option("--bandwidth", args->bandwidth_gbps,
                  "Memory bandwidth limit in GB/s to report decode as % of (default: the backend's copy "
                  "bandwidth, measured)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace rwkv::cli
