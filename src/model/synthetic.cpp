#include "model/synthetic.h"

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"
#include "tensor/quant.h"

namespace rwkv {

SyntheticSpec SyntheticSpec::shape_0_1b() {
  SyntheticSpec s;
  s.n_embd = 768, s.n_layer = 12, s.n_ffn = 3072, s.n_vocab = 65536;
  s.rank_w = 64, s.rank_a = 64, s.rank_v = 32, s.rank_g = 128;
  return s;
}

SyntheticSpec SyntheticSpec::shape_2_9b() {
  SyntheticSpec s;
  s.n_embd = 2560, s.n_layer = 32, s.n_ffn = 10240, s.n_vocab = 65536;
  s.rank_w = 96, s.rank_a = 96, s.rank_v = 64, s.rank_g = 320;
  return s;
}

namespace {

// GGUF's escaped token form (spec §5.2): printable ASCII literal, \\ \' \t \n \r, else \xhh.
std::string escape_token(const std::string& bytes) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c >= 0x20 && c < 0x7f)
      out += char(c);
    else
      out += {'\\', 'x', hex[c >> 4], hex[c & 15]};
  }
  return out;
}

// The shift of the FFN key weights (drawn from [-sc - shift, sc - shift), sc = 1/sqrt(C))
// that leaves a fraction `density` of the hidden units non-zero when the key's input is the
// lerp of two LayerNorm rows with gains in [0.8, 1.2] and biases around b: a hidden unit is
// then noise of variance C sc^2 / 3 (E[gain^2] 2/3 + b^2) less shift C b, positive with
// probability density.
double ffn_key_shift(int64_t C, double density, double b) {
  const double sigma = std::sqrt((1.0 + 0.16 / 12.0) * 2.0 / 3.0 + b * b) / std::sqrt(3.0);
  double lo = -10.0, hi = 10.0;  // the normal quantile z with P(N(0,1) > z) = density, by bisection
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(mid / std::sqrt(2.0)) > density ? lo : hi) = mid;
  }
  return sigma * lo / (double(C) * b);
}

class Generator {
 public:
  Generator(const SyntheticSpec& spec, gguf::Writer& w) : spec_(spec), w_(w), rng_(spec.seed) {}

  // values uniform in [lo, hi)
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }

  // Adds a tensor {cols, rows} filled with uniform(lo, hi), encoded as `type`.
  void add(const std::string& name, TensorType type, int64_t cols, int64_t rows, float lo, float hi,
           std::vector<int64_t> ne = {}) {
    if (ne.empty()) ne = rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
    const TypeInfo& ti = type_info(type);
    if (cols % ti.block_size != 0)
      fail(ErrorCode::argument, "make-model: tensor '" + name + "' width " + std::to_string(cols) +
                                    " is not a multiple of the " + std::string(ti.name) + " block size " +
                                    std::to_string(ti.block_size));
    const size_t rb = row_bytes(type, cols);
    std::vector<uint8_t> data(rb * size_t(rows));
    if (spec_.pool_rows > 0) {
      const std::vector<uint8_t>& pool = pool_for(type, cols, lo, hi);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(data.data() + size_t(r) * rb, pool.data() + (rng_() % uint64_t(spec_.pool_rows)) * rb, rb);
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<float> row = uniform(size_t(cols), lo, hi);
        quantize_row(type, row.data(), data.data() + size_t(r) * rb, cols);
      }
    }
    w_.add_tensor(name, type, ne, data.data(), data.size());
  }

  // pool_rows random rows of one tensor kind, encoded once.
  const std::vector<uint8_t>& pool_for(TensorType type, int64_t cols, float lo, float hi) {
    const std::string key =
        std::to_string(int(type)) + "/" + std::to_string(cols) + "/" + std::to_string(lo) + "/" + std::to_string(hi);
    auto it = pools_.find(key);
    if (it != pools_.end()) return it->second;
    const size_t rb = row_bytes(type, cols);
    std::vector<uint8_t> pool(rb * size_t(spec_.pool_rows));
    for (int r = 0; r < spec_.pool_rows; ++r) {
      const std::vector<float> row = uniform(size_t(cols), lo, hi);
      quantize_row(type, row.data(), pool.data() + size_t(r) * rb, cols);
    }
    return pools_.emplace(key, std::move(pool)).first->second;
  }

  void vocabulary() {
    std::vector<std::string> tokens(size_t(spec_.n_vocab));
    std::vector<int32_t> types(size_t(spec_.n_vocab), 1);
    tokens[0] = "<s>";
    types[0] = 3;
    for (int i = 1; i < spec_.n_vocab; ++i) {
      std::string bytes;
      if (i <= 256) {
        bytes = std::string(1, char(i - 1));
      } else {
        // Distinct multi-byte tokens: a letter prefix plus the id in base 26.
        for (int v = i; v > 0; v /= 26) bytes += char('a' + v % 26);
        bytes = " " + bytes;
      }
      tokens[size_t(i)] = escape_token(bytes);
    }
    w_.set_string("tokenizer.ggml.model", "rwkv");
    w_.set_string_array("tokenizer.ggml.tokens", tokens);
    w_.set_i32_array("tokenizer.ggml.token_type", types);
    w_.set_u32("tokenizer.ggml.bos_token_id", 0);
    w_.set_u32("tokenizer.ggml.eos_token_id", 0);
  }

  void model() {
    const SyntheticSpec& s = spec_;
    const int64_t C = s.n_embd, F = s.n_ffn, V = s.n_vocab;
    const TensorType lora = s.type == TensorType::F32 ? TensorType::F32 : TensorType::F16;
    const float sc = 1.0f / std::sqrt(float(C)), sf = 1.0f / std::sqrt(float(F));
    const bool sparse_ffn = s.ffn_density > 0;
    const float ffn_b = sparse_ffn ? 0.5f : 0.0f;  // the FFN LayerNorm biases' centre
    const float key_shift = sparse_ffn ? float(ffn_key_shift(C, s.ffn_density, ffn_b)) : 0.0f;
    w_.set_string("general.architecture", "rwkv7");
    w_.set_string("general.name", "rwkv7-synthetic");
    w_.set_u32("rwkv7.context_length", 1048576);
    w_.set_u32("rwkv7.embedding_length", uint32_t(C));
    w_.set_u32("rwkv7.block_count", uint32_t(s.n_layer));
    w_.set_u32("rwkv7.feed_forward_length", uint32_t(F));
    w_.set_u32("rwkv7.attention.head_count", 0);
    w_.set_f32("rwkv7.attention.layer_norm_epsilon", 1e-5f);
    w_.set_u32("rwkv7.wkv.head_size", uint32_t(s.head_size));
    w_.set_u32("rwkv7.attention.decay_lora_rank", uint32_t(s.rank_w));
    w_.set_u32("rwkv7.attention.iclr_lora_rank", uint32_t(s.rank_a));
    w_.set_u32("rwkv7.attention.value_residual_mix_lora_rank", uint32_t(s.rank_v));
    w_.set_u32("rwkv7.attention.gate_lora_rank", uint32_t(s.rank_g));
    w_.set_u32("general.file_type", llama_file_type(s.type));
    vocabulary();

    add("token_embd.weight", s.type, C, V, -1.0f, 1.0f);
    add("token_embd_norm.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
    add("token_embd_norm.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
    for (int l = 0; l < s.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      const int64_t rv = l == 0 ? s.rank_a : s.rank_v;  // layer 0's v LoRA is a dummy of rank Da
      add(p + "attn_norm.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
      add(p + "attn_norm.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
      add(p + "attn_norm_2.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
      add(p + "attn_norm_2.bias", TensorType::F32, C, 1, ffn_b - 0.1f, ffn_b + 0.1f);
      add(p + "time_mix_w0.weight", TensorType::F32, C, 1, -3.0f, 1.0f);
      add(p + "time_mix_w1.weight", TensorType::F32, C, s.rank_w, -sc, sc);
      add(p + "time_mix_w2.weight", TensorType::F32, s.rank_w, C, -0.5f, 0.5f);
      add(p + "time_mix_a0.weight", TensorType::F32, C, 1, -1.0f, 1.0f);
      add(p + "time_mix_a1.weight", lora, C, s.rank_a, -sc, sc);
      add(p + "time_mix_a2.weight", lora, s.rank_a, C, -0.5f, 0.5f);
      add(p + "time_mix_v0.weight", TensorType::F32, C, 1, -1.0f, 1.0f);
      add(p + "time_mix_v1.weight", lora, C, rv, -sc, sc);
      add(p + "time_mix_v2.weight", lora, rv, C, -0.5f, 0.5f);
      add(p + "time_mix_g1.weight", lora, C, s.rank_g, -sc, sc);
      add(p + "time_mix_g2.weight", lora, s.rank_g, C, -0.5f, 0.5f);
      add(p + "time_mix_k_k.weight", TensorType::F32, C, 1, 0.5f, 1.5f);
      add(p + "time_mix_k_a.weight", TensorType::F32, C, 1, 0.0f, 1.0f);
      add(p + "time_mix_r_k.weight", TensorType::F32, C, 1, -0.5f, 0.5f);
      add(p + "time_mix_lerp_fused.weight", TensorType::F32, C, 6, 0.0f, 1.0f, {C, 1, 1, 6});
      add(p + "time_mix_receptance.weight", s.type, C, C, -sc, sc);
      add(p + "time_mix_key.weight", s.type, C, C, -sc, sc);
      add(p + "time_mix_value.weight", s.type, C, C, -sc, sc);
      add(p + "time_mix_output.weight", s.type, C, C, -sc, sc);
      add(p + "time_mix_ln.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
      add(p + "time_mix_ln.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
      add(p + "channel_mix_lerp_k.weight", TensorType::F32, C, 1, 0.0f, 1.0f);
      add(p + "channel_mix_key.weight", s.type, C, F, -sc - key_shift, sc - key_shift);
      const bool odd = l % 2 == 1 && s.odd_ffn_value_type;
      add(p + "channel_mix_value.weight", odd ? *s.odd_ffn_value_type : s.type, F, C, -sf * 4, sf * 4);
    }
    add("output_norm.weight", TensorType::F32, C, 1, 0.8f, 1.2f);
    add("output_norm.bias", TensorType::F32, C, 1, -0.1f, 0.1f);
    add("output.weight", s.head_type, C, V, -sc * 2, sc * 2);
  }

 private:
  const SyntheticSpec& spec_;
  gguf::Writer& w_;
  std::mt19937_64 rng_;
  std::map<std::string, std::vector<uint8_t>> pools_;
};

}  // namespace

void write_synthetic_model(const std::string& path, const SyntheticSpec& spec) {
  if (spec.n_embd <= 0 || spec.n_layer <= 0 || spec.head_size <= 0 || spec.n_embd % spec.head_size != 0 ||
      spec.n_ffn <= 0 || spec.n_vocab < 257 || spec.rank_w <= 0 || spec.rank_a <= 0 || spec.rank_v <= 0 ||
      spec.rank_g <= 0)
    fail(ErrorCode::argument,
         "make-model: impossible shape (need n_embd a multiple of head_size, vocabulary >= 257, ranks > 0)");
  if (!(spec.ffn_density >= 0 && spec.ffn_density < 1))
    fail(ErrorCode::argument, "make-model: FFN density " + std::to_string(spec.ffn_density) + " (must be in [0, 1))");
  gguf::Writer w;
  Generator g(spec, w);
  g.model();
  w.write(path);
}

}  // namespace rwkv
