// bench_cuda: throughput of the CUDA backend on random models of the real RWKV-7 shapes:
// decode (tg), prefill (pp) and batched decode, with tok/s and the weight bandwidth of
// decode. The model file is written fast by tiling a small pool of random encoded rows per
// tensor kind (quantising 2.9B values row by row would take minutes), into /dev/shm.
//
//   bench_cuda --shape 2.9b --type q8_0 --tg 128 --pp 512 --batch 1,64 [--no-pdl]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
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
#include "gguf/gguf.h"
#include "tensor/quant.h"

namespace rwkv {
namespace {

using Clock = std::chrono::steady_clock;

// Writes a model with the tensor table of spec §3.2; each matrix row is a random pick
// from 64 random rows encoded once per (type, width, value range).
class BenchModelWriter {
 public:
  explicit BenchModelWriter(const SyntheticSpec& s) : s_(s), rng_(s.seed) {}

  void write(const std::string& path) {
    const int64_t C = s_.n_embd, F = s_.n_ffn, V = s_.n_vocab;
    const TensorType lora = s_.type == TensorType::F32 ? TensorType::F32 : TensorType::F16;
    const float sc = 1.0f / std::sqrt(float(C)), sf = 1.0f / std::sqrt(float(F));
    w_.set_string("general.architecture", "rwkv7");
    w_.set_string("general.name", "rwkv7-bench");
    w_.set_u32("rwkv7.context_length", 1048576);
    w_.set_u32("rwkv7.embedding_length", uint32_t(C));
    w_.set_u32("rwkv7.block_count", uint32_t(s_.n_layer));
    w_.set_u32("rwkv7.feed_forward_length", uint32_t(F));
    w_.set_u32("rwkv7.attention.head_count", 0);
    w_.set_f32("rwkv7.attention.layer_norm_epsilon", 1e-5f);
    w_.set_u32("rwkv7.wkv.head_size", uint32_t(s_.head_size));
    w_.set_u32("rwkv7.attention.decay_lora_rank", uint32_t(s_.rank_w));
    w_.set_u32("rwkv7.attention.iclr_lora_rank", uint32_t(s_.rank_a));
    w_.set_u32("rwkv7.attention.value_residual_mix_lora_rank", uint32_t(s_.rank_v));
    w_.set_u32("rwkv7.attention.gate_lora_rank", uint32_t(s_.rank_g));
    std::vector<std::string> tokens(static_cast<size_t>(V));
    std::vector<int32_t> types(static_cast<size_t>(V), 1);
    tokens[0] = "<s>";
    types[0] = 3;
    for (int64_t i = 1; i < V; ++i) {  // distinct ASCII tokens (no escaping needed)
      std::string t = " ";
      for (int64_t v = i; v > 0; v /= 26) t += char('a' + v % 26);
      tokens[size_t(i)] = t;
    }
    w_.set_string("tokenizer.ggml.model", "rwkv");
    w_.set_string_array("tokenizer.ggml.tokens", tokens);
    w_.set_i32_array("tokenizer.ggml.token_type", types);

    add("token_embd.weight", s_.type, C, V, -1.0f, 1.0f);
    add("token_embd_norm.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
    add("token_embd_norm.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
    for (int l = 0; l < s_.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      const int64_t rv = l == 0 ? s_.rank_a : s_.rank_v;
      add(p + "attn_norm.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
      add(p + "attn_norm.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
      add(p + "attn_norm_2.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
      add(p + "attn_norm_2.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
      add(p + "time_mix_w0.weight", TensorType::F32, C, 1, -3.0f, 1.0f);
      add(p + "time_mix_w1.weight", TensorType::F32, C, s_.rank_w, -sc, sc);
      add(p + "time_mix_w2.weight", TensorType::F32, s_.rank_w, C, -0.5f, 0.5f);
      add(p + "time_mix_a0.weight", TensorType::F32, C, 1, -1.0f, 1.0f);
      add(p + "time_mix_a1.weight", lora, C, s_.rank_a, -sc, sc);
      add(p + "time_mix_a2.weight", lora, s_.rank_a, C, -0.5f, 0.5f);
      add(p + "time_mix_v0.weight", TensorType::F32, C, 1, -1.0f, 1.0f);
      add(p + "time_mix_v1.weight", lora, C, rv, -sc, sc);
      add(p + "time_mix_v2.weight", lora, rv, C, -0.5f, 0.5f);
      add(p + "time_mix_g1.weight", lora, C, s_.rank_g, -sc, sc);
      add(p + "time_mix_g2.weight", lora, s_.rank_g, C, -0.5f, 0.5f);
      add(p + "time_mix_k_k.weight", TensorType::F32, C, 1, 0.5f, 1.5f);
      add(p + "time_mix_k_a.weight", TensorType::F32, C, 1, 0.0f, 1.0f);
      add(p + "time_mix_r_k.weight", TensorType::F32, C, 1, -0.5f, 0.5f);
      add(p + "time_mix_lerp_fused.weight", TensorType::F32, C, 6, 0.0f, 1.0f, {C, 1, 1, 6});
      for (const char* m : {"receptance", "key", "value", "output"})
        add(p + "time_mix_" + m + ".weight", s_.type, C, C, -sc, sc);
      add(p + "time_mix_ln.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
      add(p + "time_mix_ln.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
      add(p + "channel_mix_lerp_k.weight", TensorType::F32, C, 1, 0.0f, 1.0f);
      add(p + "channel_mix_key.weight", s_.type, C, F, -sc, sc);
      add(p + "channel_mix_value.weight", s_.type, F, C, -sf * 4, sf * 4);
    }
    add("output_norm.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
    add("output_norm.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
    add("output.weight", s_.head_type, C, V, -sc * 2, sc * 2);
    w_.write(path);
  }

 private:
  static constexpr int kPoolRows = 64;

  void add(const std::string& name, TensorType type, int64_t cols, int64_t rows, float lo, float hi,
           std::vector<int64_t> ne = {}) {
    if (ne.empty()) ne = rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
    const size_t rb = row_bytes(type, cols);
    const std::vector<uint8_t>& pool = pool_for(type, cols, lo, hi);
    std::vector<uint8_t> data(rb * size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(data.data() + size_t(r) * rb, pool.data() + (rng_() % kPoolRows) * rb, rb);
    w_.add_tensor(name, type, ne, data.data(), data.size());
  }

  const std::vector<uint8_t>& pool_for(TensorType type, int64_t cols, float lo, float hi) {
    const std::string key =
        std::to_string(int(type)) + "/" + std::to_string(cols) + "/" + std::to_string(lo) + "/" + std::to_string(hi);
    auto it = pools_.find(key);
    if (it != pools_.end()) return it->second;
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> row(static_cast<size_t>(cols));
    const size_t rb = row_bytes(type, cols);
    std::vector<uint8_t> pool(rb * kPoolRows);
    for (int r = 0; r < kPoolRows; ++r) {
      for (float& x : row) x = d(rng_);
      quantize_row(type, row.data(), pool.data() + size_t(r) * rb, cols);
    }
    return pools_.emplace(key, std::move(pool)).first->second;
  }

  const SyntheticSpec& s_;
  std::mt19937_64 rng_;
  gguf::Writer w_;
  std::map<std::string, std::vector<uint8_t>> pools_;
};

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
  cuda::set_pdl(pdl);

  const std::string dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  const std::string path = dir + "/rwkv-bench-" + shape + "-" + std::string(type_name(*t)) + ".gguf";
  if (!std::filesystem::exists(path)) {
    const auto t0 = Clock::now();
    BenchModelWriter(spec).write(path);
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
    std::vector<float> logits(size_t(B) * V);
    std::vector<SeqTokens> batch(static_cast<size_t>(B));
    const std::vector<int32_t> ctx = random_tokens(4, V, rng);
    for (int s = 0; s < B; ++s) {
      backend->reset_slot(s);
      backend->step(std::vector<SeqTokens>{{s, ctx.data(), 4, false}}, logits.data());
    }
    std::vector<int32_t> ids = random_tokens(size_t(B), V, rng);
    for (int s = 0; s < B; ++s) batch[size_t(s)] = SeqTokens{s, &ids[size_t(s)], 1, false};
    for (int i = 0; i < 8; ++i) backend->step(batch, logits.data());  // warm-up, graph capture
    double best = 0;
    for (int r = 0; r < reps; ++r) {
      const auto d0 = Clock::now();
      for (int i = 0; i < tg; ++i) {
        ids[0] = int32_t(1 + (i * 7919) % (V - 1));
        backend->step(batch, logits.data());
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
