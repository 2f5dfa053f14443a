// bench_cuda: throughput of the CUDA backend on random models of the real RWKV-7 shapes:
// decode (tg), prefill (pp) and batched decode, with tok/s and the weight bandwidth of
// decode. The model file is written fast (SyntheticSpec::pool_rows: quantising 2.9B values
// row by row would take minutes), into /dev/shm.
//
//   bench_cuda --shape 2.9b --type q8_0 --tg 128 --pp 512 --batch 1,64 [--no-pdl]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"
#include "model/synthetic.h"

#if defined(RWKV_HAVE_CUDA)
#include "backend/cuda/ops.h"
#include "backend/registry.h"
#include "common/error.h"

namespace rwkv {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<int32_t> random_tokens(size_t n, int vocab, std::mt19937_64& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(1 + rng() % uint64_t(vocab - 1));
  return t;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int run(int argc, char** argv) {
  std::string shape = "2.9b", type = "q8_0";
  int tg = 128, pp = 512, reps = 3;
  std::vector<int> batches = {1};
  bool pdl = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(ErrorCode::argument, "missing value after " + a);
      return argv[++i];
    };
    if (a == "--shape")
      shape = value();
    else if (a == "--type")
      type = value();
    else if (a == "--tg")
      tg = std::stoi(value());
    else if (a == "--pp")
      pp = std::stoi(value());
    else if (a == "--reps")
      reps = std::stoi(value());
    else if (a == "--no-pdl")
      pdl = false;
    else if (a == "--batch") {
      batches.clear();
      const std::string v = value();
      for (size_t p = 0; p < v.size();) {
        size_t q = v.find(',', p);
        if (q == std::string::npos) q = v.size();
        batches.push_back(std::stoi(v.substr(p, q - p)));
        p = q + 1;
      }
    } else {
      fail(ErrorCode::argument, "unknown option " + a);
    }
  }
  SyntheticSpec spec = shape == "0.1b" ? SyntheticSpec::shape_0_1b() : SyntheticSpec::shape_2_9b();
  if (shape != "0.1b" && shape != "2.9b") fail(ErrorCode::argument, "--shape is 0.1b or 2.9b");
  const std::optional<TensorType> t = parse_type(type);
  if (!t) fail(ErrorCode::argument, "unknown type " + type);
  spec.type = spec.head_type = *t;
  spec.pool_rows = 64;
  cuda::set_pdl(pdl);

  const std::string dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  const std::string path = dir + "/rwkv-bench-" + shape + "-" + std::string(type_name(*t)) + ".gguf";
  if (!std::filesystem::exists(path)) {
    const auto t0 = Clock::now();
    write_synthetic_model(path, spec);
    std::fprintf(stderr, "wrote %s in %.1f s\n", path.c_str(), seconds_since(t0));
  }
  auto model = Model::load(path);
  const Hparams& hp = model->hparams();
  auto backend = make_cuda_backend(BackendOptions{});
  auto t0 = Clock::now();
  backend->load(model, nullptr);
  const double load_s = seconds_since(t0);
  int max_batch = 1;
  for (int b : batches) max_batch = std::max(max_batch, b);
  backend->set_slots(max_batch);
  std::mt19937_64 rng(1);
  const int V = hp.n_vocab;
  const double step_bytes = double(model->weight_bytes() - model->tok_embd.nbytes);

  std::printf("| model | device | test | t/s | GB/s (weights) | notes |\n| --- | --- | --- | ---: | ---: | --- |\n");
  const std::string name = shape + " " + std::string(type_name(*t));
  if (pp > 0) {
    std::vector<float> logits(static_cast<size_t>(V));
    const std::vector<int32_t> prompt = random_tokens(size_t(pp), V, rng);
    double best = 0;
    for (int r = 0; r <= reps; ++r) {
      backend->reset_slot(0);
      const auto p0 = Clock::now();
      backend->step(std::vector<SeqTokens>{{0, prompt.data(), pp, false}}, logits.data());
      const double s = seconds_since(p0);
      if (r > 0) best = std::max(best, pp / s);  // r == 0 warms up (f16 weights are made then)
    }
    std::printf("| %s | %s | pp%d | %.1f | | best of %d |\n", name.c_str(), backend->device_name().c_str(), pp, best,
                reps);
  }
  for (int B : batches) {
    if (tg <= 0) break;
    const HostFloats logits = backend->alloc_host(size_t(B) * V);  // page-locked, as the engine's
    std::vector<SeqTokens> batch(static_cast<size_t>(B));
    const std::vector<int32_t> ctx = random_tokens(4, V, rng);
    for (int s = 0; s < B; ++s) {
      backend->reset_slot(s);
      backend->step(std::vector<SeqTokens>{{s, ctx.data(), 4, false}}, logits.get());
    }
    std::vector<int32_t> ids = random_tokens(size_t(B), V, rng);
    for (int s = 0; s < B; ++s) batch[size_t(s)] = SeqTokens{s, &ids[size_t(s)], 1, false};
    for (int i = 0; i < 8; ++i) backend->step(batch, logits.get());  // warm-up, graph capture
    double best = 0;
    for (int r = 0; r < reps; ++r) {
      const auto d0 = Clock::now();
      for (int i = 0; i < tg; ++i) {
        ids[0] = int32_t(1 + (i * 7919) % (V - 1));
        backend->step(batch, logits.get());
      }
      best = std::max(best, double(B) * tg / seconds_since(d0));
    }
    const double gbps = step_bytes * best / B / 1e9;
    std::printf("| %s | %s | tg%d x %d | %.1f | %.0f | best of %d%s |\n", name.c_str(), backend->device_name().c_str(),
                tg, B, best, gbps, reps, pdl ? "" : ", no PDL");
  }
  std::fprintf(stderr, "load %.2f s, device memory %.2f GiB, weights %.2f GiB\n", load_s,
               double(backend->memory_bytes()) / (1 << 30), double(model->weight_bytes()) / (1 << 30));
  return 0;
}

}  // namespace
}  // namespace rwkv

int main(int argc, char** argv) {
  try {
    return rwkv::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
}

#else

int main() {
  std::puts("bench_cuda: this build has no CUDA backend");
  return 0;
}

#endif
