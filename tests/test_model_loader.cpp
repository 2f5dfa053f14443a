// Model loader validation (spec §3.5): every malformed model is refused with its own
// Error(model) naming the file and the key or tensor at fault, and the valid variants that
// real converters produce are accepted. Malformed files are a small synthetic model copied
// through a gguf::Writer with one mutation applied.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tensor/quant.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

// C = 64 in two heads of 32; every rank distinct so that a swapped rank shows.
SyntheticSpec base_spec() {
  SyntheticSpec s;
  s.n_embd = 64;
  s.head_size = 32;
  s.n_layer = 2;
  s.n_ffn = 256;  // channel_mix_value rows of 256: a whole Q2_K super-block
  s.n_vocab = 257;
  s.rank_w = 16;
  s.rank_a = 32;
  s.rank_v = 8;
  s.rank_g = 24;
  s.seed = 5;
  return s;
}

// A copy of the base model with keys and tensors dropped, added or replaced.
class Rewrite {
 public:
  Rewrite& drop_key(const std::string& key) {
    dropped_keys_.insert(key);
    return *this;
  }
  Rewrite& set_u32(const std::string& key, uint32_t v) {
    return replace_key(key, [key, v](gguf::Writer& w) { w.set_u32(key, v); });
  }
  Rewrite& set_f32(const std::string& key, float v) {
    return replace_key(key, [key, v](gguf::Writer& w) { w.set_f32(key, v); });
  }
  Rewrite& set_string(const std::string& key, const std::string& v) {
    return replace_key(key, [key, v](gguf::Writer& w) { w.set_string(key, v); });
  }
  Rewrite& drop_tensor(const std::string& name) {
    dropped_tensors_.insert(name);
    return *this;
  }
  // Replaces a tensor by zeros of another shape and/or type (the loader reads no values).
  Rewrite& zeros(const std::string& name, TensorType type, const std::vector<int64_t>& ne) {
    return replace_tensor(name, [name, type, ne](const gguf::TensorInfo&, gguf::Writer& w) {
      int64_t rows = 1;
      for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
      const std::vector<uint8_t> bytes(row_bytes(type, ne[0]) * size_t(rows), 0);
      w.add_tensor(name, type, ne, bytes.data(), bytes.size());
    });
  }
  // Re-encodes a tensor's values as `type`, keeping its shape.
  Rewrite& retype(const std::string& name, TensorType type) {
    return replace_tensor(name, [name, type](const gguf::TensorInfo& t, gguf::Writer& w) {
      const int64_t cols = t.ne[0], rows = t.n_elements() / cols;
      const size_t in_rb = row_bytes(t.type, cols), out_rb = row_bytes(type, cols);
      std::vector<float> row(static_cast<size_t>(cols));
      std::vector<uint8_t> bytes(out_rb * size_t(rows));
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t.type, t.data + size_t(r) * in_rb, row.data(), cols);
        quantize_row(type, row.data(), bytes.data() + size_t(r) * out_rb, cols);
      }
      w.add_tensor(name, type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), bytes.data(), bytes.size());
    });
  }

  // Writes the copy to a temp file named `file_name` and returns its path.
  std::string write(const std::string& file_name) const {
    const auto src = gguf::File::open(testing::synthetic_model(base_spec()));
    gguf::Writer w;
    for (const gguf::KeyValue& kv : src->metadata()) {
      if (!dropped_keys_.count(kv.key)) w.copy_value(kv.key, kv.value);
    }
    for (const auto& add : added_keys_) add(w);
    for (const gguf::TensorInfo& t : src->tensors()) {
      if (dropped_tensors_.count(t.name)) continue;
      if (const auto it = replaced_.find(t.name); it != replaced_.end()) {
        it->second(t, w);
      } else {
        w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data, size_t(t.nbytes));
      }
    }
    const std::string path = testing::temp_path(file_name);
    w.write(path);
    return path;
  }

 private:
  using TensorEdit = std::function<void(const gguf::TensorInfo&, gguf::Writer&)>;
  Rewrite& replace_key(const std::string& key, std::function<void(gguf::Writer&)> add) {
    dropped_keys_.insert(key);
    added_keys_.push_back(std::move(add));
    return *this;
  }
  Rewrite& replace_tensor(const std::string& name, TensorEdit edit) {
    replaced_[name] = std::move(edit);
    return *this;
  }

  std::set<std::string> dropped_keys_, dropped_tensors_;
  std::vector<std::function<void(gguf::Writer&)>> added_keys_;
  std::map<std::string, TensorEdit> replaced_;
};

// Loading `path` must throw Error(model) whose message names the file and every fragment.
void expect_model_error(const std::string& path, const std::vector<std::string>& fragments) {
  try {
    Model::load(path);
    ADD_FAILURE() << path << " loaded, expected an Error(model)";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), ErrorCode::model) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "no '" << f << "' in: " << msg;
  }
}

// ---------------------------------------------------------------------------------------
// Valid models

TEST(ModelLoader, BaseSyntheticModelLoadsWithItsHparams) {
  const SyntheticSpec s = base_spec();
  const auto m = Model::load(Rewrite().write("unchanged.gguf"));
  const Hparams& hp = m->hparams();
  EXPECT_EQ(hp.n_embd, s.n_embd);
  EXPECT_EQ(hp.n_layer, s.n_layer);
  EXPECT_EQ(hp.head_size, s.head_size);
  EXPECT_EQ(hp.n_head, s.n_embd / s.head_size);
  EXPECT_EQ(hp.n_ffn, s.n_ffn);
  EXPECT_EQ(hp.n_vocab, s.n_vocab);
  EXPECT_EQ(hp.rank_w, s.rank_w);
  EXPECT_EQ(hp.rank_a, s.rank_a);
  EXPECT_EQ(hp.rank_v, s.rank_v);
  EXPECT_EQ(hp.rank_g, s.rank_g);
  EXPECT_FLOAT_EQ(hp.gn_eps, 1e-5f * float(s.head_size));
  ASSERT_EQ(m->layers.size(), size_t(s.n_layer));
  EXPECT_EQ(m->all_weights().size(), size_t(6 + 28 * s.n_layer));
}

// Spec P4: layer 0 carries dummy copies of a0/a1/a2 under the v names, of rank Da.
TEST(ModelLoader, LayerZeroValueLoraHasIclrRank) {
  const SyntheticSpec s = base_spec();
  ASSERT_NE(s.rank_a, s.rank_v);
  const auto m = Model::load(Rewrite().write("layer0-v-rank.gguf"));
  EXPECT_EQ(m->layers[0].v1.rows(), s.rank_a);
  EXPECT_EQ(m->layers[0].v2.cols(), s.rank_a);
  EXPECT_EQ(m->layers[1].v1.rows(), s.rank_v);
  EXPECT_EQ(m->layers[1].v2.cols(), s.rank_v);
}

TEST(ModelLoader, GateRankFromTensorWhenKeyAbsent) {
  const auto m = Model::load(Rewrite().drop_key("rwkv7.attention.gate_lora_rank").write("no-gate-key.gguf"));
  EXPECT_EQ(m->hparams().rank_g, base_spec().rank_g);
}

TEST(ModelLoader, LayerNormEpsFromKeyWithDefault) {
  const auto m = Model::load(Rewrite().set_f32("rwkv7.attention.layer_norm_epsilon", 3e-6f).write("eps.gguf"));
  EXPECT_EQ(m->hparams().ln_eps, 3e-6f);
  EXPECT_FLOAT_EQ(m->hparams().gn_eps, 1e-5f * float(base_spec().head_size));  // not the LayerNorm eps
  const auto d = Model::load(Rewrite().drop_key("rwkv7.attention.layer_norm_epsilon").write("no-eps.gguf"));
  EXPECT_EQ(d->hparams().ln_eps, 1e-5f);
}

TEST(ModelLoader, TokenShiftCountTwoAccepted) {
  EXPECT_NO_THROW(Model::load(Rewrite().set_u32("rwkv7.token_shift_count", 2).write("shift2.gguf")));
}

// Converters may store matrices in F16 and 1-D tensors in F16; trailing 1s may be written.
TEST(ModelLoader, HalfPrecisionTensorsAndTrailingOnesAccepted) {
  const int64_t C = base_spec().n_embd;
  const auto m = Model::load(Rewrite()
                                 .retype("blk.0.time_mix_key.weight", TensorType::F16)
                                 .retype("blk.1.attn_norm.weight", TensorType::F16)
                                 .retype("blk.1.time_mix_w1.weight", TensorType::BF16)
                                 .zeros("blk.0.channel_mix_lerp_k.weight", TensorType::F32, {C, 1, 1})
                                 .write("half.gguf"));
  EXPECT_EQ(m->layers[0].wk.type, TensorType::F16);
  EXPECT_EQ(m->layers[1].att_norm_w.type, TensorType::F16);
  EXPECT_EQ(m->layers[1].w1.type, TensorType::BF16);
  EXPECT_EQ(m->layers[0].ffn_lerp_k.n_elements(), C);
}

TEST(ModelLoader, QuantisedMatricesAccepted) {
  const auto m = Model::load(Rewrite()
                                 .retype("blk.1.time_mix_value.weight", TensorType::Q8_0)
                                 .retype("blk.1.channel_mix_value.weight", TensorType::Q4_K)
                                 .write("quantised.gguf"));
  EXPECT_EQ(m->layers[1].wv.type, TensorType::Q8_0);
  EXPECT_EQ(m->layers[1].ffn_value.type, TensorType::Q4_K);
}

struct DemoCase {
  const char* name;
  std::string (*path)();
  TensorType matrix_type;
};

class DemoModel : public ::testing::TestWithParam<DemoCase> {};

TEST_P(DemoModel, LoadsWithDocumentedHparams) {
  const auto m = Model::load(GetParam().path());
  const Hparams& hp = m->hparams();
  EXPECT_EQ(hp.n_layer, 6);
  EXPECT_EQ(hp.n_embd, 256);
  EXPECT_EQ(hp.head_size, 64);
  EXPECT_EQ(hp.n_head, 4);
  EXPECT_EQ(hp.n_ffn, 1024);
  EXPECT_EQ(hp.rank_w, 32);
  EXPECT_EQ(hp.rank_a, 32);
  EXPECT_EQ(hp.rank_v, 32);
  EXPECT_EQ(hp.rank_g, 64);
  EXPECT_EQ(hp.n_vocab, 2048);
  EXPECT_EQ(hp.ln_eps, 1e-5f);
  EXPECT_FLOAT_EQ(hp.gn_eps, 64e-5f);
  EXPECT_EQ(m->layers.size(), 6u);
  EXPECT_EQ(m->layers[3].wk.type, GetParam().matrix_type);
  EXPECT_EQ(m->layers[3].lerp_fused.type, TensorType::F32);
}

INSTANTIATE_TEST_SUITE_P(Files, DemoModel,
                         ::testing::Values(DemoCase{"f16", testing::demo_model_f16, TensorType::F16},
                                           DemoCase{"q8_0", testing::demo_model_q8_0, TensorType::Q8_0}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Malformed metadata

TEST(ModelLoaderErrors, WrongArchitecture) {
  // arwkv7 is the distilled RMSNorm variant: well-formed but a different model.
  for (const std::string arch : {"llama", "arwkv7"}) {
    expect_model_error(Rewrite().set_string("general.architecture", arch).write("arch-" + arch + ".gguf"),
                       {"general.architecture is '" + arch + "'", "rwkv7"});
  }
}

TEST(ModelLoaderErrors, MissingArchitecture) {
  expect_model_error(Rewrite().drop_key("general.architecture").write("no-arch.gguf"), {"'general.architecture'"});
}

class MissingHparam : public ::testing::TestWithParam<std::string> {};

TEST_P(MissingHparam, NamesTheKey) {
  const std::string key = GetParam();
  expect_model_error(Rewrite().drop_key(key).write("missing-" + key + ".gguf"), {"missing key '" + key + "'"});
}

INSTANTIATE_TEST_SUITE_P(Keys, MissingHparam,
                         ::testing::Values("rwkv7.embedding_length", "rwkv7.block_count", "rwkv7.wkv.head_size",
                                           "rwkv7.feed_forward_length", "rwkv7.attention.decay_lora_rank",
                                           "rwkv7.attention.iclr_lora_rank",
                                           "rwkv7.attention.value_residual_mix_lora_rank"),
                         [](const auto& info) { return info.param.substr(info.param.rfind('.') + 1); });

TEST(ModelLoaderErrors, HparamOfWrongTypeOrOutOfRange) {
  expect_model_error(Rewrite().set_string("rwkv7.block_count", "2").write("layers-string.gguf"),
                     {"'rwkv7.block_count'", "not an integer"});
  expect_model_error(Rewrite().set_u32("rwkv7.block_count", 0).write("layers-zero.gguf"),
                     {"'rwkv7.block_count'", "out of range"});
}

TEST(ModelLoaderErrors, HeadSizeNotDividingEmbedding) {
  expect_model_error(Rewrite().set_u32("rwkv7.wkv.head_size", 24).write("head-24.gguf"),
                     {"embedding_length 64", "head_size 24"});
}

TEST(ModelLoaderErrors, TokenShiftCountOne) {
  expect_model_error(Rewrite().set_u32("rwkv7.token_shift_count", 1).write("shift1.gguf"),
                     {"rwkv7.token_shift_count", "1", "expected 2"});
}

TEST(ModelLoaderErrors, NoGateRankKeyNorTensor) {
  expect_model_error(Rewrite()
                         .drop_key("rwkv7.attention.gate_lora_rank")
                         .drop_tensor("blk.0.time_mix_g1.weight")
                         .write("no-gate.gguf"),
                     {"gate"});
}

TEST(ModelLoaderErrors, NonPositiveLayerNormEps) {
  expect_model_error(Rewrite().set_f32("rwkv7.attention.layer_norm_epsilon", 0.0f).write("eps0.gguf"),
                     {"rwkv7.attention.layer_norm_epsilon"});
}

// ---------------------------------------------------------------------------------------
// Malformed tensors

TEST(ModelLoaderErrors, MissingTensor) {
  for (const std::string name :
       {"blk.1.time_mix_key.weight", "output.weight", "token_embd.weight", "blk.0.time_mix_ln.bias"}) {
    expect_model_error(Rewrite().drop_tensor(name).write("no-" + name + ".gguf"), {"missing tensor '" + name + "'"});
  }
}

TEST(ModelLoaderErrors, DecayLoraOfWrongRankAndShape) {
  const SyntheticSpec s = base_spec();
  const std::string name = "blk.1.time_mix_w1.weight";
  // One dimension instead of two.
  expect_model_error(Rewrite().zeros(name, TensorType::F32, {s.n_embd * s.rank_w}).write("w1-1d.gguf"),
                     {"'" + name + "'", "shape {1024}", "expected {64, 16}"});
  // Two dimensions with another LoRA rank than the key's.
  expect_model_error(Rewrite().zeros(name, TensorType::F32, {s.n_embd, 8}).write("w1-rank8.gguf"),
                     {"'" + name + "'", "shape {64, 8}", "expected {64, 16}"});
  // The key disagreeing with the tensors is reported at the first tensor it governs.
  expect_model_error(Rewrite().set_u32("rwkv7.attention.decay_lora_rank", 20).write("w-key-20.gguf"),
                     {"'blk.0.time_mix_w1.weight'", "shape {64, 16}", "expected {64, 20}"});
}

TEST(ModelLoaderErrors, LerpFusedWithFiveSlots) {
  const std::string name = "blk.0.time_mix_lerp_fused.weight";
  expect_model_error(Rewrite().zeros(name, TensorType::F32, {64, 1, 1, 5}).write("lerp5.gguf"),
                     {"'" + name + "'", "shape {64, 1, 1, 5}", "expected {64, 1, 1, 6}"});
}

// Layer-0 v1/v2 must have rank Da and the other layers rank Dv: neither may take the other.
TEST(ModelLoaderErrors, ValueLoraRanksPerLayer) {
  const SyntheticSpec s = base_spec();
  expect_model_error(
      Rewrite().zeros("blk.0.time_mix_v1.weight", TensorType::F32, {s.n_embd, s.rank_v}).write("v1-layer0-dv.gguf"),
      {"'blk.0.time_mix_v1.weight'", "expected {64, 32}"});
  expect_model_error(
      Rewrite().zeros("blk.1.time_mix_v2.weight", TensorType::F32, {s.rank_a, s.n_embd}).write("v2-layer1-da.gguf"),
      {"'blk.1.time_mix_v2.weight'", "shape {32, 64}", "expected {8, 64}"});
}

// Spec §3.5 item 2: the head's vocabulary must match the embedding's.
TEST(ModelLoaderErrors, HeadVocabularyDiffersFromEmbedding) {
  const SyntheticSpec s = base_spec();
  expect_model_error(Rewrite().zeros("output.weight", TensorType::F32, {s.n_embd, 300}).write("head-300.gguf"),
                     {"'output.weight'", "shape {64, 300}", "expected {64, 257}"});
}

TEST(ModelLoaderErrors, FeedForwardWidthDisagreesWithKey) {
  expect_model_error(Rewrite().set_u32("rwkv7.feed_forward_length", 128).write("ffn-128.gguf"),
                     {"'blk.0.channel_mix_key.weight'", "expected {64, 128}"});
}

TEST(ModelLoaderErrors, UnsupportedMatrixType) {
  const SyntheticSpec s = base_spec();
  const std::string name = "blk.1.channel_mix_value.weight";  // {F, C}, rows of 256
  expect_model_error(Rewrite().zeros(name, TensorType::Q2_K, {s.n_ffn, s.n_embd}).write("q2k.gguf"),
                     {"'" + name + "'", "q2_K"});
}

TEST(ModelLoaderErrors, QuantisedVectorRefused) {
  for (const std::string name : {"blk.0.attn_norm.weight", "blk.1.time_mix_lerp_fused.weight"}) {
    expect_model_error(Rewrite().retype(name, TensorType::Q8_0).write("q8-" + name + ".gguf"),
                       {"'" + name + "'", "q8_0"});
  }
}

}  // namespace
}  // namespace rwkv
