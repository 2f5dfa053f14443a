// The Vulkan backend end to end against cpu-ref: logits (rel L2 <= 5e-3) of synthetic
// models of every weight type and of the demo models, several sequences of different
// lengths per step, prefill (short sequences through the fused WKV kernel, a 20-token one
// through the prefill form and the tiled matmul with K split, on tensor cores where the
// device has them) and decode (one-row decode of F16/BF16/Q8_0 models through the sparse
// FFN value product, also against the dense one); decode and short prompts with the LoRA
// up-projections folded into the WKV kernel (every model here: F32/F16 LoRA in the synthetic
// ones, Q8_0 in the Q8_0 demo), also against the separate matrix stage; the named
// intermediates through `rwkv check`; state copies; buffers split below the device limit;
// and a 4096-token generation.
// Every test skips when the machine has no Vulkan device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/registry.h"
#include "backend/vulkan/kernels.h"
#include "backend/vulkan/vulkan_devices.h"
#include "common/error.h"
#include "runtime/check.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

constexpr double kLogitsTolerance = 5e-3;

// A Vulkan backend on any device (lavapipe included), or null when there is none.
std::unique_ptr<Backend> vulkan_or_null() {
  try {
    return make_vulkan_backend(BackendOptions{}, /*allow_cpu_devices=*/true);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::backend) throw;
    return nullptr;
  }
}

struct Pair {
  std::shared_ptr<Model> model;
  std::unique_ptr<Backend> vk, ref;
};

// Both backends loaded with the model at `path`; vk is null when there is no device.
Pair load_pair(const std::string& path) {
  Pair p;
  p.model = Model::load(path);
  p.vk = vulkan_or_null();
  if (p.vk == nullptr) return p;
  p.ref = make_cpu_ref_backend(BackendOptions{});
  p.vk->load(p.model, {});
  p.ref->load(p.model, {});
  return p;
}

std::vector<int32_t> random_tokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = int32_t(rng() % uint64_t(vocab));
  return t;
}

size_t logits_rows(std::span<const SeqTokens> batch) {
  size_t n = 0;
  for (const SeqTokens& s : batch) n += s.all_logits ? size_t(s.n_tokens) : 1;
  return n;
}

// Runs one step on both backends and compares every logits row.
void step_both(Pair& p, std::span<const SeqTokens> batch, const std::string& what) {
  const size_t V = size_t(p.model->hparams().n_vocab), rows = logits_rows(batch);
  std::vector<float> got(rows * V, NAN), want(rows * V);
  p.vk->step(batch, got.data());
  p.ref->step(batch, want.data());
  for (size_t r = 0; r < rows; ++r) {
    EXPECT_LE(testing::rel_l2(got.data() + r * V, want.data() + r * V, V), kLogitsTolerance)
        << what << ", logits row " << r;
  }
}

// Three slots: a 5-token prompt with all logits, a 1-token one, a 3-token one; a decode step
// of all three; a 20-token prompt (the tiled matrix path, the prefill WKV) and another
// decode step.
void run_scenario(Pair& p, const std::string& what) {
  const int V = p.model->hparams().n_vocab;
  p.vk->set_slots(3);
  p.ref->set_slots(3);
  const std::vector<int32_t> a = random_tokens(5, V, 1), b = random_tokens(1, V, 2), c = random_tokens(3, V, 3);
  const std::vector<int32_t> d = random_tokens(3, V, 4), e = random_tokens(20, V, 5);
  const SeqTokens prefill[] = {{0, a.data(), 5, true}, {2, b.data(), 1, false}, {1, c.data(), 3, false}};
  step_both(p, prefill, what + " prefill");
  const SeqTokens decode[] = {{1, d.data(), 1, false}, {0, d.data() + 1, 1, false}, {2, d.data() + 2, 1, false}};
  step_both(p, decode, what + " decode");
  const SeqTokens long_prompt[] = {{2, e.data(), 20, true}, {0, d.data(), 2, false}};
  step_both(p, long_prompt, what + " 20-token prefill");
  step_both(p, decode, what + " second decode");
}

SyntheticSpec small_spec(TensorType type) {
  SyntheticSpec s;
  s.n_embd = 256;  // k-quant rows need multiples of 256
  s.n_layer = 2;
  s.n_ffn = 512;
  s.n_vocab = 320;
  s.rank_w = 32, s.rank_a = 32, s.rank_v = 16, s.rank_g = 32;
  s.type = type;
  s.head_type = type;
  s.seed = 7 + uint64_t(type);
  return s;
}

class VulkanModelTypes : public ::testing::TestWithParam<TensorType> {};

TEST_P(VulkanModelTypes, LogitsMatchCpuRef) {
  Pair p = load_pair(testing::synthetic_model(small_spec(GetParam())));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  run_scenario(p, std::string(type_name(GetParam())));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, VulkanModelTypes,
                         ::testing::Values(TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0,
                                           TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                                           TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// The trained demo models: a prompt, then greedy decoding, logits compared at every step.
void check_demo(const std::string& path) {
  Pair p = load_pair(path);
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  const size_t V = size_t(p.model->hparams().n_vocab);
  std::vector<int32_t> tokens = {631, 309, 841, 1313};  // "The jury said"
  std::vector<float> got(V), want(V);
  SeqTokens s{0, tokens.data(), int(tokens.size()), false};
  for (int i = 0; i < 8; ++i) {
    p.vk->step({&s, 1}, got.data());
    p.ref->step({&s, 1}, want.data());
    ASSERT_LE(testing::rel_l2(got, want), kLogitsTolerance) << path << " step " << i;
    EXPECT_EQ(testing::argmax(got.data(), V), testing::argmax(want.data(), V)) << path << " step " << i;
    tokens.push_back(int32_t(testing::argmax(want.data(), V)));
    s = SeqTokens{0, &tokens.back(), 1, false};
  }
}

TEST(VulkanModel, DemoF16) { check_demo(testing::demo_model_f16()); }
TEST(VulkanModel, DemoQ8_0) { check_demo(testing::demo_model_q8_0()); }

// `rwkv check`: every named intermediate and the states against cpu-ref (the debug hook).
// Its decode phase is one row: for F16, ffn.out comes from the sparse value product. Its
// prefill phase is all tokens but the last: 5 rows run the fused WKV kernel, 19 the prefill
// form (Kernels::wkv_scan_min_tokens), whose intermediates travel through the debug regions.
TEST(VulkanModel, CheckIntermediatesAgainstCpuRef) {
  for (const TensorType type : {TensorType::Q8_0, TensorType::F16}) {
    Pair p = load_pair(testing::synthetic_model(small_spec(type)));
    if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
    for (const int n : {6, 20}) {
      const std::vector<int32_t> tokens = random_tokens(n, p.model->hparams().n_vocab, 11);
      const CheckReport report = compare_backends(*p.model, *p.vk, *p.ref, tokens);
      EXPECT_TRUE(report.passed()) << type_name(type) << ", " << n << " tokens: " << report.summary();
      size_t reported = 0;
      for (const CheckEntry& e : report.entries) {
        EXPECT_FALSE(e.missing) << "vulkan did not report layer " << e.layer << " " << e.name;
        reported += e.missing ? 0 : 1;
      }
      // 23 names per layer and 4 top-level ones, in both phases, plus states and step logits.
      EXPECT_GE(reported, size_t(2 * (23 * p.model->hparams().n_layer + 4)));
    }
  }
}

// Prefill of a wider model (C = 512, F = 2048): every matrix stage of a 40-token step splits
// K, each with its own tile count, so one stage's partial sums sit where the next one's
// counters were; prompts of 40, 1 and 17 tokens in one step (the prefill WKV for two of
// them), then decode; logits and, through `rwkv check`, every intermediate against cpu-ref.
TEST(VulkanModel, WidePrefillMatchesCpuRef) {
  SyntheticSpec spec = small_spec(TensorType::F16);
  spec.n_embd = 512;
  spec.n_ffn = 2048;
  Pair p = load_pair(testing::synthetic_model(spec));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  const int V = p.model->hparams().n_vocab;
  p.vk->set_slots(3);
  p.ref->set_slots(3);
  const std::vector<int32_t> a = random_tokens(40, V, 61), b = random_tokens(1, V, 62), c = random_tokens(17, V, 63);
  const SeqTokens prefill[] = {{1, a.data(), 40, false}, {0, b.data(), 1, false}, {2, c.data(), 17, true}};
  step_both(p, prefill, "wide prefill");
  const SeqTokens decode[] = {{0, a.data(), 1, false}, {1, b.data(), 1, false}, {2, c.data(), 1, false}};
  step_both(p, decode, "wide decode");
  const CheckReport report = compare_backends(*p.model, *p.vk, *p.ref, a);
  EXPECT_TRUE(report.passed()) << report.summary();
}

// One-row decode through the ReLU^2-sparse FFN value product (F16, BF16 and Q8_0 models):
// loaded with it (RWKV_VULKAN_SPARSE_FFN=all: Q8_0 takes it only when asked) and without
// (RWKV_VULKAN_SPARSE_FFN=0). With it, the backend
// keeps a transposed copy of every value matrix (Q8_0: quants and scales, 17/16 bytes per
// weight); a prompt, then one-token steps, match cpu-ref and, within fp32 rounding, the
// dense product.
TEST(VulkanModel, SparseFfnDecodeMatchesDense) {
  for (const TensorType type : {TensorType::F16, TensorType::BF16, TensorType::Q8_0}) {
    ASSERT_EQ(setenv("RWKV_VULKAN_SPARSE_FFN", "all", 1), 0);
    Pair p = load_pair(testing::synthetic_model(small_spec(type)));
    unsetenv("RWKV_VULKAN_SPARSE_FFN");
    if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
    ASSERT_EQ(setenv("RWKV_VULKAN_SPARSE_FFN", "0", 1), 0);
    std::unique_ptr<Backend> dense = vulkan_or_null();
    dense->load(p.model, {});
    unsetenv("RWKV_VULKAN_SPARSE_FFN");
    const Hparams& hp = p.model->hparams();
    const size_t weights = size_t(hp.n_layer) * size_t(hp.n_embd) * size_t(hp.n_ffn);
    const size_t copies = type == TensorType::Q8_0 ? weights / 16 * 17 : weights * 2;
    EXPECT_GE(p.vk->memory_bytes(), dense->memory_bytes() + copies) << type_name(type) << ": no transposed copies";

    const size_t V = size_t(hp.n_vocab);
    std::vector<float> got(V), want(V), plain(V);
    std::vector<int32_t> tokens = random_tokens(4, hp.n_vocab, 31);
    SeqTokens s{0, tokens.data(), int(tokens.size()), false};
    for (int i = 0; i < 6; ++i) {
      const std::string what = std::string(type_name(type)) + " step " + std::to_string(i);
      p.vk->step({&s, 1}, got.data());
      p.ref->step({&s, 1}, want.data());
      dense->step({&s, 1}, plain.data());
      EXPECT_LE(testing::rel_l2(got, want), kLogitsTolerance) << what;
      EXPECT_LE(testing::rel_l2(got, plain), 1e-5) << what << ": sparse and dense products differ";
      tokens.push_back(int32_t(testing::argmax(want.data(), V)));
      s = SeqTokens{0, &tokens.back(), 1, false};
    }
  }
}

// The LoRA up-projections folded into the WKV dispatch (the default for steps of short
// sequences) against the separate matrix stage (RWKV_VULKAN_LORA_FOLD=0) and cpu-ref: two
// prompts of Kernels::wkv_lora_max_rows and 2 rows in one step (the first with every logits
// row), then decode steps of both sequences; also with 128 invocations per workgroup instead
// of 256. Logits within fp32 rounding of the matrix stage's. A value that is not 0, 1 or an
// invocation count is an argument error.
TEST(VulkanModel, LoraFoldMatchesMatrixStage) {
  Pair p = load_pair(testing::synthetic_model(small_spec(TensorType::F16)));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  const auto load_with = [&](const char* value) {
    EXPECT_EQ(setenv("RWKV_VULKAN_LORA_FOLD", value, 1), 0);
    std::unique_ptr<Backend> b = vulkan_or_null();
    try {
      b->load(p.model, {});
    } catch (...) {
      unsetenv("RWKV_VULKAN_LORA_FOLD");
      throw;
    }
    unsetenv("RWKV_VULKAN_LORA_FOLD");
    b->set_slots(2);
    return b;
  };
  std::unique_ptr<Backend> stage = load_with("0"), narrow = load_with("128");
  for (const char* bad : {"7", "300", "x"}) {
    try {
      load_with(bad);
      ADD_FAILURE() << "RWKV_VULKAN_LORA_FOLD=" << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::argument) << e.what();
    }
  }
  p.vk->set_slots(2);
  p.ref->set_slots(2);
  const int V = p.model->hparams().n_vocab;
  const int n = int(vk::Kernels::wkv_lora_max_rows);
  const std::vector<int32_t> a = random_tokens(n, V, 41), b = random_tokens(2, V, 42), d = random_tokens(8, V, 43);
  const SeqTokens prompts[] = {{0, a.data(), n, true}, {1, b.data(), 2, false}};
  std::vector<SeqTokens> decode = {{1, d.data(), 1, false}, {0, d.data() + 1, 1, false}};
  for (int i = 0; i < 4; ++i) {
    const std::span<const SeqTokens> batch = i == 0 ? std::span<const SeqTokens>(prompts) : decode;
    const size_t n = logits_rows(batch) * size_t(V);
    std::vector<float> got(n), want(n), plain(n), half(n);
    p.vk->step(batch, got.data());
    p.ref->step(batch, want.data());
    stage->step(batch, plain.data());
    narrow->step(batch, half.data());
    const std::string what = "step " + std::to_string(i);
    EXPECT_LE(testing::rel_l2(got, want), kLogitsTolerance) << what;
    EXPECT_LE(testing::rel_l2(got, plain), 1e-5) << what << ": folded and matrix-stage LoRA differ";
    EXPECT_LE(testing::rel_l2(half, plain), 1e-5) << what << ": 128 invocations";
    for (SeqTokens& s : decode) s.tokens += 2;
  }
}

// get_state / set_state / reset_slot: copies are exact, and match cpu-ref's state.
TEST(VulkanModel, StateCopiesAndReset) {
  Pair p = load_pair(testing::synthetic_model(small_spec(TensorType::F16)));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  const Hparams& hp = p.model->hparams();
  const size_t V = size_t(hp.n_vocab);
  p.vk->set_slots(2);
  p.ref->set_slots(1);
  const std::vector<int32_t> prompt = random_tokens(7, hp.n_vocab, 21);
  std::vector<float> logits(V), ref_logits(V);
  SeqTokens s{0, prompt.data(), 7, false};
  p.vk->step({&s, 1}, logits.data());
  p.ref->step({&s, 1}, ref_logits.data());
  std::vector<float> state(hp.state_floats()), ref_state(hp.state_floats());
  p.vk->get_state(0, state);
  p.ref->get_state(0, ref_state);
  EXPECT_LE(testing::rel_l2(state, ref_state), 1e-4);

  p.vk->set_state(1, state);
  const int32_t next = 3;
  std::vector<float> from1(V);
  SeqTokens both[] = {{0, &next, 1, false}, {1, &next, 1, false}};
  std::vector<float> two(2 * V);
  p.vk->step(both, two.data());
  EXPECT_TRUE(std::equal(two.begin(), two.begin() + std::ptrdiff_t(V), two.begin() + std::ptrdiff_t(V)))
      << "a copied state gives different logits";

  p.vk->reset_slot(1);
  std::vector<float> zero(hp.state_floats());
  p.vk->get_state(1, zero);
  for (float x : zero) ASSERT_EQ(x, 0.0f);
  SeqTokens fresh{1, prompt.data(), 7, false};
  p.vk->step({&fresh, 1}, from1.data());
  EXPECT_EQ(from1, logits) << "a reset slot does not replay like a fresh one";
}

// alloc_host gives host-visible memory the head writes directly: the same logits as a step
// into ordinary memory, for a prompt, one and two sequences, repeated steps (the recorded
// command buffers are reused), a pointer into the buffer past its start (copied as before),
// and a buffer freed and replaced between steps (the recordings that bound it are dropped).
TEST(VulkanModel, AllocHostLogitsBuffer) {
  Pair p = load_pair(testing::synthetic_model(small_spec(TensorType::F16)));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  std::unique_ptr<Backend> plain = vulkan_or_null();
  plain->load(p.model, {});
  const size_t V = size_t(p.model->hparams().n_vocab);
  p.vk->set_slots(2);
  plain->set_slots(2);
  std::vector<float> want(2 * V);
  const auto same = [&](Backend& b, std::span<const SeqTokens> batch, float* out, const std::string& what) {
    const size_t n = logits_rows(batch) * V;
    std::fill(out, out + n, NAN);
    plain->step(batch, want.data());
    b.step(batch, out);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], want[i]) << what << ", logit " << i;
  };
  HostFloats host = p.vk->alloc_host(3 * V);
  const std::vector<int32_t> prompt = random_tokens(6, int(V), 5);
  const SeqTokens first{0, prompt.data(), 6, false};
  same(*p.vk, {&first, 1}, host.get(), "prompt");
  const int32_t tokens[2] = {7, 11};
  for (int step = 0; step < 3; ++step) {
    for (int n : {1, 2}) {
      const SeqTokens batch[2] = {{0, &tokens[0], 1, false}, {1, &tokens[1], 1, false}};
      float* out = host.get() + size_t(step % 2) * V;  // the start, then past it
      same(*p.vk, std::span(batch, size_t(n)), out, "step " + std::to_string(step) + ", " + std::to_string(n));
    }
    host = p.vk->alloc_host(3 * V);  // the old buffer is freed after the new one exists
  }
}

// The device's copy bandwidth (`rwkv bench`'s limit): measured by timestamps (lavapipe has
// them too), plausible, its buffers freed afterwards, and the backend still steps.
TEST(VulkanModel, MeasuresCopyBandwidth) {
  Pair p = load_pair(testing::synthetic_model(small_spec(TensorType::Q8_0)));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  p.vk->set_slots(1);
  const size_t held = p.vk->memory_bytes();
  const double gbps = p.vk->measure_bandwidth();
  EXPECT_GT(gbps, 0.1);
  EXPECT_LT(gbps, 1e5);
  EXPECT_EQ(p.vk->memory_bytes(), held);
  std::vector<float> logits(size_t(p.model->hparams().n_vocab));
  const int32_t token = 5;
  const SeqTokens one{0, &token, 1, false};
  p.vk->step({&one, 1}, logits.data());
  EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
}

// Buffers capped far below the device limit: matrices split by rows over several buffers,
// prefill split into sub-steps of a few rows, logits rows limited per sub-step.
TEST(VulkanModel, SmallBufferLimitSplitsEverything) {
  ASSERT_EQ(setenv("RWKV_VULKAN_MAX_BUFFER", "262144", 1), 0);
  Pair p = load_pair(testing::synthetic_model(small_spec(TensorType::F32)));
  unsetenv("RWKV_VULKAN_MAX_BUFFER");
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  run_scenario(p, "f32 with 256 KiB buffers");
}

// A long generation (4096 tokens, one per step, greedy) on a tiny model completes; cpu-ref
// then reads the same 4096 tokens as one prompt, and the final logits and states agree.
TEST(VulkanModel, LongGeneration) {
  SyntheticSpec spec;
  spec.n_embd = 64, spec.n_layer = 1, spec.n_ffn = 128, spec.n_vocab = 320;
  spec.rank_w = 8, spec.rank_a = 8, spec.rank_v = 8, spec.rank_g = 8;
  spec.type = TensorType::Q8_0;
  spec.head_type = TensorType::Q8_0;
  Pair p = load_pair(testing::synthetic_model(spec));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  const size_t V = size_t(spec.n_vocab);
  std::vector<float> got(V), want(V);
  std::vector<int32_t> tokens = {1};
  for (int i = 0; i < 4096; ++i) {
    SeqTokens s{0, &tokens.back(), 1, false};
    p.vk->step({&s, 1}, got.data());
    ASSERT_TRUE(std::isfinite(got[0])) << "token " << i;
    if (i < 4095) tokens.push_back(int32_t(testing::argmax(got.data(), V)));
  }
  SeqTokens all{0, tokens.data(), int(tokens.size()), false};
  p.ref->step({&all, 1}, want.data());
  EXPECT_LE(testing::rel_l2(got, want), kLogitsTolerance);
  const Hparams& hp = p.model->hparams();
  std::vector<float> state(hp.state_floats()), ref_state(hp.state_floats());
  p.vk->get_state(0, state);
  p.ref->get_state(0, ref_state);
  EXPECT_LE(testing::rel_l2(state, ref_state), 1e-3);
}

TEST(VulkanModel, BadRequestsAreArgumentErrors) {
  Pair p = load_pair(testing::synthetic_model(small_spec(TensorType::F16)));
  if (p.vk == nullptr) GTEST_SKIP() << "no Vulkan device here";
  const int32_t ok = 1, bad = p.model->hparams().n_vocab;
  std::vector<float> logits(size_t(2 * p.model->hparams().n_vocab));
  const auto code = [&](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::ok;
  };
  SeqTokens out_of_vocab{0, &bad, 1, false};
  EXPECT_EQ(code([&] { p.vk->step({&out_of_vocab, 1}, logits.data()); }), ErrorCode::argument);
  SeqTokens bad_slot{5, &ok, 1, false};
  EXPECT_EQ(code([&] { p.vk->step({&bad_slot, 1}, logits.data()); }), ErrorCode::argument);
  SeqTokens twice[] = {{0, &ok, 1, false}, {0, &ok, 1, false}};
  EXPECT_EQ(code([&] { p.vk->step(twice, logits.data()); }), ErrorCode::argument);
  EXPECT_EQ(code([&] { p.vk->set_slots(0); }), ErrorCode::argument);
  EXPECT_EQ(code([&] { p.vk->set_slots(1 << 30); }), ErrorCode::argument);
}

TEST(VulkanDevices, ListsAdapters) {
  std::vector<VulkanDeviceInfo> devices;
  try {
    devices = list_vulkan_devices();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::backend);
    GTEST_SKIP() << e.what();
  }
  if (devices.empty()) GTEST_SKIP() << "no Vulkan adapters";
  for (size_t i = 0; i < devices.size(); ++i) {
    const VulkanDeviceInfo& d = devices[i];
    EXPECT_EQ(d.index, int(i));
    EXPECT_FALSE(d.name.empty());
    EXPECT_FALSE(d.driver.empty());
    EXPECT_GT(d.memory_bytes, 0u);
    EXPECT_TRUE(d.usable || !d.missing.empty()) << d.name;
    if (d.usable) {
      EXPECT_GT(d.subgroup_size, 0u);
    }
  }
  // An index past the end is a one-line backend error naming the count.
  BackendOptions options;
  options.device = int(devices.size());
  try {
    make_vulkan_backend(options, true);
    ADD_FAILURE() << "device " << options.device << " should not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::backend);
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkv
