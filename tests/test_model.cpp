// Model-level tests of the CPU backends: cpu-ref against an independent float64 forward
// pass, the fast path against cpu-ref, and the runtime invariants (prefill = token by
// token, batch = singles, save/load = uninterrupted).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "backend/backend.h"
#include "backend/cpu/ffn_sparse.h"
#include "common/cpu_info.h"
#include "common/error.h"
#include "reference/f64_model.h"
#include "runtime/engine.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

using testing::rel_l2;

std::vector<int32_t> random_tokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(vocab));
  return t;
}

std::unique_ptr<Backend> backend_for(const std::string& name, std::shared_ptr<const Model> m, int slots = 1) {
  BackendOptions o;
  o.n_threads = 2;
  auto b = create_backend(name, o);
  b->load(m, nullptr);
  b->set_slots(slots);
  return b;
}

// Logits of every position, one token per step.
std::vector<float> token_by_token(Backend& b, int V, const std::vector<int32_t>& toks, int slot = 0) {
  std::vector<float> out(toks.size() * size_t(V));
  for (size_t i = 0; i < toks.size(); ++i) {
    SeqTokens s{slot, &toks[i], 1, false};
    b.step({&s, 1}, out.data() + i * size_t(V));
  }
  return out;
}

// Logits of every position from one multi-token step.
std::vector<float> prefill(Backend& b, int V, const std::vector<int32_t>& toks, int slot = 0) {
  std::vector<float> out(toks.size() * size_t(V));
  SeqTokens s{slot, toks.data(), int(toks.size()), true};
  b.step({&s, 1}, out.data());
  return out;
}

struct TypeCase {
  TensorType type;
  int n_embd;
  double tolerance;
};

class RefVsF64 : public ::testing::TestWithParam<TypeCase> {};

TEST_P(RefVsF64, LogitsMatchFloat64Reference) {
  SyntheticSpec spec;
  spec.type = spec.head_type = GetParam().type;
  spec.n_embd = GetParam().n_embd;
  spec.n_ffn = 2 * spec.n_embd;
  auto model = Model::load(testing::synthetic_model(spec));
  auto ref = backend_for("cpu-ref", model);
  testing::F64Model f64(*model);
  const int V = model->hparams().n_vocab;
  std::vector<float> logits(static_cast<size_t>(V));
  for (int32_t tok : random_tokens(6, V, 7)) {
    SeqTokens s{0, &tok, 1, false};
    ref->step({&s, 1}, logits.data());
    const std::vector<double> want = f64.step(tok);
    const std::vector<float> wantf(want.begin(), want.end());
    EXPECT_LE(rel_l2(logits, wantf), GetParam().tolerance) << "token " << tok;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, RefVsF64,
                         ::testing::Values(TypeCase{TensorType::F32, 128, 1e-5}, TypeCase{TensorType::F16, 128, 1e-4},
                                           TypeCase{TensorType::BF16, 128, 1e-4}, TypeCase{TensorType::Q8_0, 128, 1e-4},
                                           TypeCase{TensorType::Q4_K, 256, 1e-4},
                                           TypeCase{TensorType::Q6_K, 256, 1e-4}),
                         [](const auto& info) { return std::string(type_name(info.param.type)); });

SyntheticSpec small_spec(TensorType type) {
  SyntheticSpec spec;
  spec.type = spec.head_type = type;
  spec.n_embd = 256;
  spec.n_ffn = 512;
  return spec;
}

class FastVsRef : public ::testing::TestWithParam<TensorType> {};

// The fast path quantises activations, so it is held to a looser bound (issue: 5e-2 and
// the same top-1 at 95% of positions on random models).
TEST_P(FastVsRef, LogitsAgreeWithReference) {
  auto model = Model::load(testing::synthetic_model(small_spec(GetParam())));
  const int V = model->hparams().n_vocab;
  auto ref = backend_for("cpu-ref", model);
  auto fast = backend_for("cpu", model);
  const auto toks = random_tokens(24, V, 3);
  const auto a = token_by_token(*fast, V, toks);
  const auto b = token_by_token(*ref, V, toks);
  int same_top1 = 0;
  for (size_t i = 0; i < toks.size(); ++i) {
    const float* pa = a.data() + i * size_t(V);
    const float* pb = b.data() + i * size_t(V);
    EXPECT_LE(rel_l2(pa, pb, size_t(V)), 5e-2) << "position " << i;
    same_top1 += testing::argmax(pa, size_t(V)) == testing::argmax(pb, size_t(V));
  }
  EXPECT_GE(same_top1, int(0.95 * double(toks.size())));
}

INSTANTIATE_TEST_SUITE_P(Types, FastVsRef,
                         ::testing::Values(TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0,
                                           TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                                           TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// A model with a trained model's FFN sparsity (12% of the hidden units non-zero), value
// matrices Q8_0, F16, Q4_K, Q6_K: with RWKV_CPU_SPARSE_FFN=all the fast backend makes
// transposed copies of the value matrices (they show in memory_bytes), takes the sparse
// value product (ffn_sparse.h) and agrees with cpu-ref as well as the dense product does.
// With =0 it makes no copies, and the two fast runs differ in their low
// bits (float sums of other units in another order), which shows the sparse path ran. By
// default a model that fits in the last-level cache (as this one) gets no copies.
TEST(CpuBackends, SparseFfnValueOnTrainedSparsity) {
  const auto fast_backend = [](std::shared_ptr<const Model> model, const char* mode) {
    if (mode) {
      EXPECT_EQ(setenv("RWKV_CPU_SPARSE_FFN", mode, 1), 0);
    } else {
      unsetenv("RWKV_CPU_SPARSE_FFN");
    }
    auto b = backend_for("cpu", std::move(model));
    unsetenv("RWKV_CPU_SPARSE_FFN");
    return b;
  };
  for (const TensorType type : {TensorType::Q8_0, TensorType::F16, TensorType::Q4_K, TensorType::Q6_K}) {
    SyntheticSpec spec = small_spec(type);
    spec.n_ffn = 1024;
    spec.ffn_density = 0.12;
    auto model = Model::load(testing::synthetic_model(spec));
    const int V = model->hparams().n_vocab;
    auto ref = backend_for("cpu-ref", model);
    auto sparse = fast_backend(model, "all");
    auto dense = fast_backend(model, "0");
    const size_t copies = size_t(spec.n_layer) * SparseFfnValue::copy_bytes(type, spec.n_embd, spec.n_ffn);
    EXPECT_EQ(sparse->memory_bytes(), dense->memory_bytes() + copies) << type_name(type);
    if (model->weight_bytes() <= host_last_level_cache()) {
      EXPECT_EQ(fast_backend(model, nullptr)->memory_bytes(), dense->memory_bytes()) << type_name(type);
    }

    const auto toks = random_tokens(12, V, 11);
    const auto a = token_by_token(*sparse, V, toks);
    const auto d = token_by_token(*dense, V, toks);
    const auto r = token_by_token(*ref, V, toks);
    EXPECT_NE(a, d) << type_name(type) << ": the sparse product did not run";
    double sparse_error = 0, dense_error = 0;
    for (size_t i = 0; i < toks.size(); ++i) {
      const float* pr = r.data() + i * size_t(V);
      const double e = rel_l2(a.data() + i * size_t(V), pr, size_t(V));
      EXPECT_LE(e, 5e-2) << type_name(type) << " position " << i;
      sparse_error += e;
      dense_error += rel_l2(d.data() + i * size_t(V), pr, size_t(V));
    }
    // As close to cpu-ref as the dense product (random weights leave near ties in the
    // logits, so their top-1 is not compared).
    EXPECT_LE(sparse_error, 1.25 * dense_error + 1e-6) << type_name(type);
  }
}

class Invariants : public ::testing::TestWithParam<std::string> {};

// 10 tokens of 2,048 channels: enough that the fast backend spreads a step's elementwise
// work over its threads (a thread's rows then start inside the sequence), and fewer than the
// 12 from which block-quantised matrices take another kernel (matmul_avx2.cpp), so that both
// runs use the same products.
TEST_P(Invariants, PrefillEqualsTokenByToken) {
  SyntheticSpec spec = small_spec(TensorType::Q8_0);
  spec.n_embd = 2048;
  spec.n_ffn = 1024;
  auto model = Model::load(testing::synthetic_model(spec));
  const int V = model->hparams().n_vocab;
  auto a = backend_for(GetParam(), model);
  auto b = backend_for(GetParam(), model);
  const auto toks = random_tokens(10, V, 11);
  const auto one = token_by_token(*a, V, toks);
  const auto all = prefill(*b, V, toks);
  EXPECT_LE(rel_l2(all, one), 1e-5);
  std::vector<float> sa(model->hparams().state_floats()), sb(sa.size());
  a->get_state(0, sa);
  b->get_state(0, sb);
  EXPECT_LE(rel_l2(sb, sa), 1e-5);
}

// 40 tokens: the fast backend's matrices take their many-token kernels, which sum in another
// order than the one-token ones. With float weights the runs differ by float rounding only.
// Block-quantised weights meet activations quantised to 8 bits, where such a difference can
// round a level the other way, and k-quant prefill quantises per 32 inputs where decode does
// per 256: the runs then differ by quantisation noise (~1e-2 here). Prefill must then be as
// close to cpu-ref's float activations as token by token is; a wrong token shift or state
// hand-over puts it ten times farther.
TEST_P(Invariants, LongPrefillMatchesTokenByToken) {
  for (const TensorType type : {TensorType::F16, TensorType::Q8_0, TensorType::Q4_K}) {
    auto model = Model::load(testing::synthetic_model(small_spec(type)));
    const int V = model->hparams().n_vocab;
    auto a = backend_for(GetParam(), model);
    auto b = backend_for(GetParam(), model);
    const auto toks = random_tokens(40, V, 12);
    const auto one = token_by_token(*a, V, toks);
    const auto all = prefill(*b, V, toks);
    std::vector<float> sa(model->hparams().state_floats()), sb(sa.size()), sr(sa.size());
    a->get_state(0, sa);
    b->get_state(0, sb);
    if (type == TensorType::F16) {
      EXPECT_LE(rel_l2(all, one), 1e-5);
      EXPECT_LE(rel_l2(sb, sa), 1e-5);
      continue;
    }
    auto ref = backend_for("cpu-ref", model);
    const auto want = token_by_token(*ref, V, toks);
    ref->get_state(0, sr);
    EXPECT_LE(rel_l2(all, want), 1.25 * rel_l2(one, want) + 1e-5) << type_name(type);
    EXPECT_LE(rel_l2(sb, sr), 1.25 * rel_l2(sa, sr) + 1e-5) << type_name(type);
  }
}

// 74 rows in all, so that on the fast backend the threads' row ranges cut the sequences.
TEST_P(Invariants, BatchEqualsSingles) {
  auto model = Model::load(testing::synthetic_model(small_spec(TensorType::F16)));
  const int V = model->hparams().n_vocab;
  const std::vector<std::vector<int32_t>> seqs = {random_tokens(40, V, 1), random_tokens(1, V, 2),
                                                  random_tokens(33, V, 3)};
  auto batched = backend_for(GetParam(), model, 3);
  // Slots in a different order than the batch, to catch slot/row mix-ups (spec P10).
  const int slot_of[3] = {2, 0, 1};
  std::vector<SeqTokens> batch;
  size_t rows = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    batch.push_back({slot_of[i], seqs[i].data(), int(seqs[i].size()), i == 2});
    rows += i == 2 ? seqs[i].size() : 1;
  }
  std::vector<float> got(rows * size_t(V));
  batched->step(batch, got.data());
  size_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto single = backend_for(GetParam(), model);
    const auto want = prefill(*single, V, seqs[i]);
    const size_t n = i == 2 ? seqs[i].size() : 1;
    const float* w = want.data() + (seqs[i].size() - n) * size_t(V);
    EXPECT_LE(rel_l2(got.data() + row * size_t(V), w, n * size_t(V)), 1e-5) << "sequence " << i;
    row += n;
    std::vector<float> s1(model->hparams().state_floats()), s2(s1.size());
    batched->get_state(slot_of[i], s1);
    single->get_state(0, s2);
    EXPECT_LE(rel_l2(s1, s2), 1e-5) << "state of sequence " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Invariants, ::testing::Values("cpu-ref", "cpu"), [](const auto& info) {
  return info.param == "cpu-ref" ? std::string("cpu_ref") : info.param;
});

// The engine's logits buffer holds rows x n_vocab floats, grows on demand, and decode
// writes there what it writes into any other buffer.
// make-model's --ffn-density: the fraction of FFN hidden units that ReLU^2 leaves non-zero,
// unbiased (about half) and set as in trained models, on cpu-ref over a few tokens.
TEST(Synthetic, FfnDensityAsAsked) {
  for (const double density : {0.0, 0.15}) {
    SyntheticSpec spec;
    spec.n_embd = 256;
    spec.n_ffn = 1024;
    spec.ffn_density = density;
    auto model = Model::load(testing::synthetic_model(spec));
    auto b = backend_for("cpu-ref", model);
    double non_zero = 0, units = 0;
    b->set_debug_hook([&](int, std::string_view name, int rows, int width, const float* data) {
      if (name != "ffn.hidden") return;
      for (int i = 0; i < rows * width; ++i) non_zero += data[i] != 0.f;
      units += double(rows) * width;
    });
    token_by_token(*b, spec.n_vocab, random_tokens(16, spec.n_vocab, 5));
    const double want = density > 0 ? density : 0.5;
    EXPECT_NEAR(non_zero / units, want, 0.06) << "ffn_density " << density;
  }
  SyntheticSpec bad;
  bad.ffn_density = 1.0;
  EXPECT_THROW(write_synthetic_model(testing::temp_path("bad-density.gguf"), bad), Error);
}

// The copy bandwidth `rwkv bench` reports decode against: measured, and plausible for host
// memory (a tenth of a GB/s to ten TB/s), on both CPU backends.
TEST(CpuBackends, MeasureCopyBandwidth) {
  for (const char* name : {"cpu", "cpu-ref"}) {
    BackendOptions o;
    o.n_threads = 2;
    auto b = create_backend(name, o);
    const double gbps = b->measure_bandwidth();
    EXPECT_GT(gbps, 0.1) << name;
    EXPECT_LT(gbps, 1e4) << name;
  }
}

TEST(Engine, LogitsBufferTakesDecodeRows) {
  EngineOptions o;
  o.backend = "cpu";
  o.n_slots = 4;
  auto e = Engine::open(testing::demo_model_q8_0(), o);
  const size_t V = size_t(e->n_vocab());
  EXPECT_EQ(e->logits_buffer(1).size(), V);
  const std::span<float> two = e->logits_buffer(2);
  ASSERT_EQ(two.size(), 2 * V);
  const std::vector<int32_t> tokens = {11, 12};
  e->decode(std::vector<int>{0, 1}, tokens, two.data());
  std::vector<float> want(2 * V);
  e->decode(std::vector<int>{2, 3}, tokens, want.data());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), two.begin()));
  EXPECT_EQ(e->logits_buffer(3).size(), 3 * V);
}

TEST(State, SaveLoadContinuesIdentically) {
  EngineOptions o;
  o.backend = "cpu";
  o.n_slots = 2;
  auto e = Engine::open(testing::demo_model_q8_0(), o);
  const auto first = e->tokenizer().encode("The jury said that the");
  const auto second = e->tokenizer().encode(" city was");
  e->feed(0, first, nullptr);
  const std::string path = testing::temp_path("state.bin");
  e->save_state(0, path);
  const auto want = e->feed_all(0, second);
  e->reset(1);
  e->load_state(1, path);
  const auto got = e->feed_all(1, second);
  EXPECT_EQ(got, want);
  // Clone gives the same continuation too.
  e->reset(0);
  e->load_state(0, path);
  e->clone_state(0, 1);
  EXPECT_EQ(e->feed_all(1, second), want);
}

TEST(State, RefusesAnotherModelsState) {
  EngineOptions o;
  o.backend = "cpu";
  auto demo = Engine::open(testing::demo_model_q8_0(), o);
  auto other = Engine::open(testing::demo_model_f16(), o);
  const std::string path = testing::temp_path("state-other.bin");
  demo->save_state(0, path);
  try {
    other->load_state(0, path);
    FAIL() << "loaded a state saved from another model";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::state);
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
}

TEST(State, RefusesCorruptFile) {
  EngineOptions o;
  o.backend = "cpu";
  auto e = Engine::open(testing::demo_model_q8_0(), o);
  const std::string path = testing::temp_path("state-corrupt.bin");
  e->feed(0, e->tokenizer().encode("Hello"), nullptr);
  e->save_state(0, path);
  {
    FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 100, SEEK_SET);
    std::fputc(0x5a, f);
    std::fclose(f);
  }
  EXPECT_THROW(e->load_state(0, path), Error);
}

}  // namespace
}  // namespace rwkv
