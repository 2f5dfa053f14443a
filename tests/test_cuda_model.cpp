// Model-level tests of the CUDA backend against cpu-ref: logits (rel L2 <= 5e-3) and
// states on synthetic models of every weight type and on the demo models, through the
// decode (matvec + graph) and prefill (cuBLAS) paths, several sequences of different
// lengths, batches longer than one internal chunk, state save/restore and the debug hook.
// Without a CUDA device only the "no device" error is checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/ops.h"
#include "backend/registry.h"
#include "common/error.h"
#include "model/model.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

using testing::rel_l2;

constexpr double kLogitsTolerance = 5e-3;

bool have_gpu(std::string* why) { return cuda::device_count(why) > 0; }

#define REQUIRE_GPU()                         \
  do {                                        \
    std::string why;                          \
    if (!have_gpu(&why)) GTEST_SKIP() << why; \
  } while (0)

std::vector<int32_t> random_tokens(int n, int vocab, std::mt19937_64& rng) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(vocab));
  return t;
}

std::unique_ptr<Backend> open(const std::string& name, std::shared_ptr<const Model> m, int slots) {
  BackendOptions o;
  o.n_threads = 2;
  auto b = create_backend(name, o);
  b->load(std::move(m), nullptr);
  b->set_slots(slots);
  return b;
}

// Runs the same batch on both backends and compares every logits row.
void step_both(Backend& ref, Backend& gpu, const std::vector<SeqTokens>& batch, int V, const std::string& what) {
  size_t rows = 0;
  for (const SeqTokens& s : batch) rows += s.all_logits ? size_t(s.n_tokens) : 1;
  std::vector<float> want(rows * V), got(rows * V, NAN);
  ref.step(batch, want.data());
  gpu.step(batch, got.data());
  for (size_t r = 0; r < rows; ++r)
    EXPECT_LE(rel_l2(got.data() + r * V, want.data() + r * V, size_t(V)), kLogitsTolerance) << what << " row " << r;
}

void expect_states_close(Backend& ref, Backend& gpu, int slots, size_t n, const std::string& what) {
  std::vector<float> a(n), b(n);
  for (int s = 0; s < slots; ++s) {
    ref.get_state(s, a);
    gpu.get_state(s, b);
    EXPECT_LE(rel_l2(b, a), 1e-2) << what << " state of slot " << s;
  }
}

// Prefill (cuBLAS + WKV scan), decode of one sequence and of several sequences (matvec +
// graph, replayed), a mixed batch (matvec with multi-token sequences) and states.
void compare_model(const std::string& path, const std::string& what) {
  auto model = Model::load(path);
  const int V = model->hparams().n_vocab;
  auto ref = open("cpu-ref", model, 3);
  auto gpu = open("cuda", model, 3);
  std::mt19937_64 rng(42);

  const std::vector<int32_t> prompt = random_tokens(37, V, rng);
  step_both(*ref, *gpu, {SeqTokens{0, prompt.data(), int(prompt.size()), true}}, V, what + " prefill");
  for (int i = 0; i < 4; ++i) {  // one sequence, one token: the one-row kernels
    const std::vector<int32_t> t = random_tokens(1, V, rng);
    step_both(*ref, *gpu, {{i % 2, &t[0], 1, false}}, V, what + " single decode " + std::to_string(i));
  }
  for (int i = 0; i < 4; ++i) {
    const std::vector<int32_t> t = random_tokens(3, V, rng);
    step_both(*ref, *gpu, {{2, &t[0], 1, false}, {0, &t[1], 1, false}, {1, &t[2], 1, false}}, V,
              what + " decode " + std::to_string(i));
  }
  const std::vector<int32_t> a = random_tokens(5, V, rng), b = random_tokens(2, V, rng), c = random_tokens(1, V, rng);
  step_both(*ref, *gpu, {{1, a.data(), 5, false}, {2, b.data(), 2, true}, {0, c.data(), 1, false}}, V,
            what + " mixed batch");
  expect_states_close(*ref, *gpu, 3, model->hparams().state_floats(), what);
}

// Three heads of 64, four layers, LoRA ranks of the real models, Q8_0.
SyntheticSpec wide_spec() {
  SyntheticSpec wide;
  wide.n_embd = 192;
  wide.n_layer = 4;
  wide.n_ffn = 768;
  wide.rank_w = wide.rank_a = 64;
  wide.rank_v = 32;
  wide.rank_g = 128;
  wide.type = wide.head_type = TensorType::Q8_0;
  return wide;
}

struct TypeCase {
  TensorType type;
  int n_embd;
};

class CudaVsRef : public ::testing::TestWithParam<TypeCase> {};

TEST_P(CudaVsRef, LogitsAndStatesMatch) {
  REQUIRE_GPU();
  SyntheticSpec spec;
  spec.type = spec.head_type = GetParam().type;
  spec.n_embd = GetParam().n_embd;
  spec.n_ffn = 4 * spec.n_embd;
  compare_model(testing::synthetic_model(spec), std::string(type_name(GetParam().type)));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaVsRef,
                         ::testing::Values(TypeCase{TensorType::F32, 128}, TypeCase{TensorType::F16, 128},
                                           TypeCase{TensorType::BF16, 128}, TypeCase{TensorType::Q8_0, 128},
                                           TypeCase{TensorType::Q4_0, 128}, TypeCase{TensorType::Q4_1, 128},
                                           TypeCase{TensorType::Q5_0, 128}, TypeCase{TensorType::Q5_1, 128},
                                           TypeCase{TensorType::Q4_K, 256}, TypeCase{TensorType::Q5_K, 256},
                                           TypeCase{TensorType::Q6_K, 256}),
                         [](const auto& info) { return std::string(type_name(info.param.type)); });

TEST(CudaModel, OtherShapes) {
  REQUIRE_GPU();
  const SyntheticSpec wide = wide_spec();
  compare_model(testing::synthetic_model(wide), "192x4 q8_0");
  SyntheticSpec mixed = wide;  // quantised body, Q6_K head as in Q4_K_M files
  mixed.n_embd = 256;
  mixed.n_ffn = 1024;
  mixed.type = TensorType::Q4_K;
  mixed.head_type = TensorType::Q6_K;
  compare_model(testing::synthetic_model(mixed), "256x4 q4_K + q6_K head");
}

// One-row decode with f16 x (MatvecJob::x16) end to end: the lerps', the first LoRA stage's
// and the WKV output's f16 copies feeding r/k/v, the second LoRA stage, W_o and the FFN key.
// 640 columns take it (CudaPack.F16InputWidths; the 128-column models above do not).
TEST(CudaModel, F16InputPath) {
  REQUIRE_GPU();
  for (TensorType type : {TensorType::F16, TensorType::BF16}) {
    SyntheticSpec spec;
    spec.type = spec.head_type = type;
    spec.n_embd = 640;
    spec.n_ffn = 4 * spec.n_embd;
    spec.rank_w = spec.rank_a = 96;  // 12 items a row: the second LoRA stage's full rounds
    compare_model(testing::synthetic_model(spec), std::string(type_name(type)) + " 640 columns");
  }
}

TEST(CudaModel, DemoModels) {
  REQUIRE_GPU();
  compare_model(testing::demo_model_f16(), "demo f16");
  compare_model(testing::demo_model_q8_0(), "demo q8_0");
}

// Decode steps of more sequences than the matvec path takes (cuBLAS with the batched LoRA
// and v/r/k GEMMs, then the fused WKV kernel), one and two tokens per sequence.
void compare_batched_decode(const std::string& path, const std::string& what) {
  auto model = Model::load(path);
  const int V = model->hparams().n_vocab, n = 12;
  auto ref = open("cpu-ref", model, n);
  auto gpu = open("cuda", model, n);
  std::mt19937_64 rng(11);
  for (int s = 0; s < n; ++s) {
    const std::vector<int32_t> p = random_tokens(3 + s % 4, V, rng);
    step_both(*ref, *gpu, {SeqTokens{s, p.data(), int(p.size()), false}}, V, what + " prompt");
  }
  for (int step = 0; step < 3; ++step) {
    const std::vector<int32_t> t = random_tokens(2 * n, V, rng);
    std::vector<SeqTokens> batch;
    for (int s = 0; s < n; ++s) batch.push_back({s, &t[size_t(2 * s)], step == 2 && s % 2 == 0 ? 2 : 1, false});
    step_both(*ref, *gpu, batch, V, what + " batched step " + std::to_string(step));
  }
  expect_states_close(*ref, *gpu, n, model->hparams().state_floats(), what + " batched");
}

TEST(CudaModel, BatchedDecodeMatchesReference) {
  REQUIRE_GPU();
  compare_batched_decode(testing::synthetic_model(wide_spec()), "192x4 q8_0");
  SyntheticSpec f16;
  f16.type = f16.head_type = TensorType::F16;
  compare_batched_decode(testing::synthetic_model(f16), "f16");
}

// The ReLU^2-sparse FFN value product (taken by default only where its grid fills the card,
// i.e. not on these small shapes), forced on, against cpu-ref for each type it handles. Its
// sum does the next layer's attention LayerNorm in a cluster of 6 blocks of 32 channels at
// width 192, of 8 blocks of 32 at 256 and of 64 at 512 (where the device has clusters), and
// in a launch of its own with RWKV_CUDA_SUM_LN=0; a model whose odd layers have a value type
// without a sparse layout (Q5_0) mixes sparse and dense layers.
TEST(CudaModel, SparseFfnMatchesReference) {
  REQUIRE_GPU();
  setenv("RWKV_CUDA_SPARSE_FFN", "all", 1);
  for (const TensorType t :
       {TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::F16, TensorType::BF16}) {
    SyntheticSpec spec = wide_spec();
    spec.type = spec.head_type = t;
    if (type_info(t).block_size == 256) {  // rows of whole super-blocks
      spec.n_embd = 256;
      spec.n_ffn = 1024;
    }
    compare_model(testing::synthetic_model(spec),
                  "sparse ffn " + std::to_string(spec.n_embd) + "x4 " + std::string(type_name(t)));
  }
  SyntheticSpec mixed = wide_spec();  // Q5_0 value matrices (no sparse layout: dense) in layers 1 and 3
  mixed.type = mixed.head_type = TensorType::Q4_K;
  mixed.n_embd = 256;
  mixed.n_ffn = 1024;
  mixed.odd_ffn_value_type = TensorType::Q5_0;
  compare_model(testing::synthetic_model(mixed), "sparse ffn 256x4 q4_K, q5_0 values in odd layers");
  SyntheticSpec wider = wide_spec();
  wider.n_embd = 512;
  wider.n_ffn = 2048;
  compare_model(testing::synthetic_model(wider), "sparse ffn 512x4 q8_0");
  setenv("RWKV_CUDA_SUM_LN", "0", 1);
  compare_model(testing::synthetic_model(wide_spec()), "sparse ffn 192x4 q8_0, LayerNorm apart");
  unsetenv("RWKV_CUDA_SUM_LN");
  unsetenv("RWKV_CUDA_SPARSE_FFN");
}

// Without the f16 weight copies (RWKV_CUDA_F16_COPIES=0, as where they do not fit) every
// GEMM-path matrix is converted on use and the LoRA products run one by one.
TEST(CudaModel, GemmPathWithoutF16Copies) {
  REQUIRE_GPU();
  setenv("RWKV_CUDA_F16_COPIES", "0", 1);
  compare_model(testing::synthetic_model(wide_spec()), "no f16 copies 192x4 q8_0");
  compare_batched_decode(testing::synthetic_model(wide_spec()), "no f16 copies 192x4 q8_0");
  unsetenv("RWKV_CUDA_F16_COPIES");
}

// alloc_host gives page-locked memory, which the head product writes directly (no
// download after the step), and a step writes the same logits there as into ordinary
// memory: a prompt, then one and two sequences, repeated steps (the graphs are reused),
// and a pinned buffer used from an offset.
TEST(CudaModel, PageLockedLogitsBuffer) {
  REQUIRE_GPU();
  auto model = Model::load(testing::synthetic_model(wide_spec()));
  const int V = model->hparams().n_vocab;
  auto plain_gpu = open("cuda", model, 2);
  auto pinned_gpu = open("cuda", model, 2);
  const HostFloats pinned = pinned_gpu->alloc_host(3 * size_t(V));
  ASSERT_TRUE(cuda::host_page_locked(pinned.get()));
  std::vector<float> plain(2 * size_t(V), NAN);
  EXPECT_FALSE(cuda::host_page_locked(plain.data()));
  const int32_t prompt[6] = {3, 1, 4, 1, 5, 9};  // a prefill step: its last row's logits, written the same way
  plain_gpu->step(std::vector<SeqTokens>{{0, prompt, 6, false}}, plain.data());
  pinned_gpu->step(std::vector<SeqTokens>{{0, prompt, 6, false}}, pinned.get());
  for (size_t i = 0; i < size_t(V); ++i) ASSERT_EQ(pinned[i], plain[i]) << "prompt, logit " << i;
  const int32_t tokens[2] = {7, 11};
  for (int step = 0; step < 3; ++step) {
    for (int n : {1, 2}) {
      std::vector<SeqTokens> batch{{0, &tokens[0], 1, false}};
      if (n == 2) batch.push_back({1, &tokens[1], 1, false});
      float* out = pinned.get() + size_t(step % 2) * V;  // from the start, then from row 1
      std::fill(out, out + size_t(n) * V, NAN);
      plain_gpu->step(batch, plain.data());
      pinned_gpu->step(batch, out);
      for (size_t i = 0; i < size_t(n) * V; ++i)
        ASSERT_EQ(out[i], plain[i]) << "step " << step << ", " << n << " sequences, logit " << i;
    }
  }
}

// The device's copy bandwidth (`rwkv bench`'s limit): plausible for a GPU's memory, its
// buffers gone afterwards, and the backend still steps.
TEST(CudaModel, MeasuresCopyBandwidth) {
  REQUIRE_GPU();
  auto model = Model::load(testing::synthetic_model(SyntheticSpec{}));
  auto gpu = open("cuda", model, 1);
  const size_t held = gpu->memory_bytes();
  const double gbps = gpu->measure_bandwidth();
  EXPECT_GT(gbps, 100);
  EXPECT_LT(gbps, 1e5);
  EXPECT_EQ(gpu->memory_bytes(), held);
  std::vector<float> logits(size_t(model->hparams().n_vocab));
  const int32_t token = 5;
  gpu->step(std::vector<SeqTokens>{{0, &token, 1, false}}, logits.data());
  EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
}

// More tokens than one internal chunk: the sequence continues across chunks.
TEST(CudaModel, LongPrefillAcrossChunks) {
  REQUIRE_GPU();
  SyntheticSpec spec;
  auto model = Model::load(testing::synthetic_model(spec));
  const int V = model->hparams().n_vocab;
  auto ref = open("cpu-ref", model, 2);
  auto gpu = open("cuda", model, 2);
  std::mt19937_64 rng(7);
  const std::vector<int32_t> a = random_tokens(700, V, rng), b = random_tokens(400, V, rng);
  step_both(*ref, *gpu, {{1, a.data(), 700, false}, {0, b.data(), 400, false}}, V, "1100 tokens");
  expect_states_close(*ref, *gpu, 2, model->hparams().state_floats(), "1100 tokens");
}

// A state read from one slot and written to another continues identically; a reset
// slot equals a fresh one.
TEST(CudaModel, StateCopyAndReset) {
  REQUIRE_GPU();
  SyntheticSpec spec;
  spec.type = spec.head_type = TensorType::Q8_0;
  auto model = Model::load(testing::synthetic_model(spec));
  const int V = model->hparams().n_vocab;
  auto gpu = open("cuda", model, 2);
  std::mt19937_64 rng(9);
  const std::vector<int32_t> p = random_tokens(12, V, rng);
  const size_t n_vocab = size_t(V);
  std::vector<float> logits(n_vocab), l0(n_vocab), l1(n_vocab);
  gpu->step(std::vector<SeqTokens>{{0, p.data(), 12, false}}, logits.data());
  std::vector<float> st(model->hparams().state_floats());
  gpu->get_state(0, st);
  gpu->set_state(1, st);
  const int32_t tok = 5;
  gpu->step(std::vector<SeqTokens>{{0, &tok, 1, false}}, l0.data());
  gpu->step(std::vector<SeqTokens>{{1, &tok, 1, false}}, l1.data());
  EXPECT_EQ(l0, l1);
  gpu->reset_slot(1);
  gpu->get_state(1, st);
  for (float x : st) ASSERT_EQ(x, 0.f);
  EXPECT_THROW(gpu->get_state(2, st), Error);
  const int32_t bad = V;
  EXPECT_THROW(gpu->step(std::vector<SeqTokens>{{0, &bad, 1, false}}, logits.data()), Error);
  EXPECT_GT(gpu->memory_bytes(), model->weight_bytes() / 2);
}

// Every named intermediate is reported for every layer and matches cpu-ref's.
TEST(CudaModel, DebugHookMatchesReference) {
  REQUIRE_GPU();
  SyntheticSpec spec;
  spec.type = spec.head_type = TensorType::F16;
  auto model = Model::load(testing::synthetic_model(spec));
  const int V = model->hparams().n_vocab;
  auto ref = open("cpu-ref", model, 2);
  auto gpu = open("cuda", model, 2);
  using Captured = std::map<std::string, std::vector<float>>;
  auto capture = [](Captured& into) {
    return [&into](int layer, std::string_view name, int rows, int width, const float* data) {
      into[std::to_string(layer) + ":" + std::string(name)].assign(data, data + size_t(rows) * width);
    };
  };
  std::mt19937_64 rng(3);
  for (int tokens : {1, 6}) {  // fused WKV and the prefill kernels
    Captured want, got;
    ref->set_debug_hook(capture(want));
    gpu->set_debug_hook(capture(got));
    const std::vector<int32_t> a = random_tokens(tokens, V, rng), b = random_tokens(2, V, rng);
    step_both(*ref, *gpu, {{0, a.data(), tokens, false}, {1, b.data(), 2, true}}, V, "hooked");
    const char* per_layer[] = {"att.ln", "att.xr", "att.xw",     "att.xk",  "att.xv",   "att.xa",
                               "att.xg", "att.r",  "att.decay",  "att.k",   "att.v",    "att.a",
                               "att.g",  "att.kk", "att.k_mod",  "att.wkv", "att.lnx",  "att.out",
                               "ffn.ln", "ffn.xk", "ffn.hidden", "ffn.out", "layer.out"};
    for (int l = 0; l < model->hparams().n_layer; ++l)
      for (const char* n : per_layer) EXPECT_TRUE(got.count(std::to_string(l) + ":" + n)) << l << " " << n;
    for (const char* n : {"embed", "embed.ln", "head.ln", "logits"})
      EXPECT_TRUE(got.count(std::string("-1:") + n)) << n;
    for (const auto& [key, values] : want) {
      auto it = got.find(key);
      if (it == got.end()) continue;
      EXPECT_LE(rel_l2(it->second, values), 1e-2) << key << " with " << tokens << " tokens";
    }
    ref->set_debug_hook(nullptr);
    gpu->set_debug_hook(nullptr);
  }
}

TEST(CudaModel, NoDeviceIsAOneLineBackendError) {
  std::string why;
  if (have_gpu(&why)) GTEST_SKIP() << "a CUDA device is present";
  try {
    make_cuda_backend(BackendOptions{});
    FAIL() << "make_cuda_backend succeeded without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::backend);
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkv
