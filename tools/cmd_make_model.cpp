// rwkv make-model: a random-weight RWKV-7 in llama.cpp's GGUF layout, of a real model's
// shape or a custom one, for tests and benchmarks without downloading weights.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "commands.h"
#include "common.h"
#include "model/synthetic.h"
#include "tensor/types.h"

namespace rwkv::cli {

namespace {

struct MakeModelArgs {
  std::string out;
  std::string shape = "custom";
  std::optional<int> embd, layers, ffn, vocab, head_size, rank_w, rank_a, rank_v, rank_g;
  std::string type = "f16";
  std::string head_type;  // empty: same as type
  uint64_t seed = 1;
  int pool_rows = 0;
  double ffn_density = 0;
};

TensorType parse_type_arg(const std::string& name, const char* option) {
  const std::optional<TensorType> t = parse_type(name);
  if (!t || !type_info(*t).model_type)
    throw UsageError(std::string(option) + ": '" + name + "' is not a weight type (f32, f16, bf16, q8_0, q4_k, ...)");
  return *t;
}

void run_make_model(const MakeModelArgs& a) {
  SyntheticSpec s;
  if (a.shape == "0.1b") s = SyntheticSpec::shape_0_1b();
  if (a.shape == "2.9b") s = SyntheticSpec::shape_2_9b();
  auto set = [](int& field, const std::optional<int>& v) {
    if (v) field = *v;
  };
  set(s.n_embd, a.embd), set(s.n_layer, a.layers), set(s.n_ffn, a.ffn), set(s.n_vocab, a.vocab);
  set(s.head_size, a.head_size), set(s.rank_w, a.rank_w), set(s.rank_a, a.rank_a), set(s.rank_v, a.rank_v);
  set(s.rank_g, a.rank_g);
  s.type = parse_type_arg(a.type, "--type");
  s.head_type = a.head_type.empty() ? s.type : parse_type_arg(a.head_type, "--head-type");
  s.seed = a.seed;
  s.pool_rows = a.pool_rows;
  s.ffn_density = a.ffn_density;
  write_synthetic_model(a.out, s);
  std::printf("wrote %s (%s): n_embd %d, n_layer %d, head_size %d, n_ffn %d, n_vocab %d, ranks %d/%d/%d/%d, %s\n",
              a.out.c_str(), format_bytes(double(std::filesystem::file_size(a.out))).c_str(), s.n_embd, s.n_layer,
              s.head_size, s.n_ffn, s.n_vocab, s.rank_w, s.rank_a, s.rank_v, s.rank_g,
              std::string(type_name(s.type)).c_str());
}

}  // namespace

void register_make_model(CLI::App& app) {
  auto a = std::make_shared<MakeModelArgs>();
  CLI::App* cmd = app.add_subcommand(
      "make-model", "Write a random-weight RWKV-7 GGUF (real 0.1B / 2.9B shapes, or custom; flags override)");
  cmd->add_option("out", a->out, "Output .gguf file")->required();
  cmd->add_option("--shape", a->shape, "Base shape")
      ->capture_default_str()
      ->check(CLI::IsMember({"custom", "0.1b", "2.9b"}));
  cmd->add_option("--embd", a->embd, "n_embd (C)");
  cmd->add_option("--layers", a->layers, "n_layer");
  cmd->add_option("--ffn", a->ffn, "FFN width");
  cmd->add_option("--vocab", a->vocab, "Vocabulary size (>= 257)");
  cmd->add_option("--head-size", a->head_size, "WKV head size");
  cmd->add_option("--rank-w", a->rank_w, "Decay LoRA rank");
  cmd->add_option("--rank-a", a->rank_a, "In-context learning rate LoRA rank");
  cmd->add_option("--rank-v", a->rank_v, "Value residual LoRA rank");
  cmd->add_option("--rank-g", a->rank_g, "Gate LoRA rank");
  cmd->add_option("--type", a->type, "Type of the large matrices and the embedding")->capture_default_str();
  cmd->add_option("--head-type", a->head_type, "Type of output.weight (default: --type)");
  cmd->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  cmd->add_option("--pool-rows", a->pool_rows,
                  "Copy each matrix's rows from N random rows per tensor kind, encoded once: writes a 2.9B model in "
                  "seconds for benchmarks (0: every row random)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--ffn-density", a->ffn_density,
                  "Fraction of FFN hidden units left non-zero by ReLU^2, as in trained models (the demo model: "
                  "~0.12); 0: unbiased random keys (about half)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99));
  const SyntheticSpec d;
  cmd->footer("custom starts from n_embd " + std::to_string(d.n_embd) + ", " + std::to_string(d.n_layer) +
              " layers, head size " + std::to_string(d.head_size) + ", FFN " + std::to_string(d.n_ffn) +
              ", vocabulary " + std::to_string(d.n_vocab) + ", ranks " + std::to_string(d.rank_w) + "/" +
              std::to_string(d.rank_a) + "/" + std::to_string(d.rank_v) + "/" + std::to_string(d.rank_g) + ".");
  cmd->callback([a] { run_make_model(*a); });
}

}  // namespace rwkv::cli
