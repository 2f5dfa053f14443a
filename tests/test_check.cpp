// compare_backends (runtime/check.h): a correct backend passes, and a backend broken in
// one named op is caught at that op, not earlier and not only at the logits.
#include "runtime/check.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/error.h"
#include "testing/testing.h"
#include "tokenizer/tokenizer.h"

namespace rwkv {
namespace {

// Forwards everything to a real backend, but can misreport intermediates through the
// DebugHook: scale one (layer, name) by `scale`, hide one name entirely, or drop the last
// row of one name. With a scale it also perturbs the logits that step() returns, so that
// both the op and the outcome differ, as they would for a real bug in that op.
class FaultyBackend final : public Backend {
 public:
  struct Faults {
    int layer = -1;
    std::string scaled;  // intermediate to scale at `layer`
    float scale = 1.0f;
    std::string hidden;     // never reported
    std::string truncated;  // reported with one row fewer

    static Faults scaling(int layer, std::string name, float scale) {
      Faults f;
      f.layer = layer, f.scaled = std::move(name), f.scale = scale;
      return f;
    }
    static Faults hiding(std::string name) {
      Faults f;
      f.hidden = std::move(name);
      return f;
    }
    static Faults truncating(std::string name) {
      Faults f;
      f.truncated = std::move(name);
      return f;
    }
  };

  FaultyBackend(std::unique_ptr<Backend> inner, Faults faults) : inner_(std::move(inner)), faults_(std::move(faults)) {}

  std::string name() const override { return "faulty-" + inner_->name(); }
  std::string device_name() const override { return inner_->device_name(); }
  void load(std::shared_ptr<const Model> model, const ProgressFn& progress) override {
    n_vocab_ = model->hparams().n_vocab;
    inner_->load(std::move(model), progress);
  }
  void set_slots(int n) override { inner_->set_slots(n); }
  int slots() const override { return inner_->slots(); }
  void reset_slot(int slot) override { inner_->reset_slot(slot); }
  void get_state(int slot, std::span<float> out) override { inner_->get_state(slot, out); }
  void set_state(int slot, std::span<const float> in) override { inner_->set_state(slot, in); }
  size_t memory_bytes() const override { return inner_->memory_bytes(); }

  void step(std::span<const SeqTokens> batch, float* logits) override {
    inner_->step(batch, logits);
    if (faults_.scaled.empty()) return;
    size_t rows = 0;
    for (const SeqTokens& s : batch) rows += s.all_logits ? size_t(s.n_tokens) : 1;
    for (size_t i = 0; i < rows * size_t(n_vocab_); ++i) logits[i] *= faults_.scale;
  }

  void set_debug_hook(DebugHook hook) override {
    if (!hook) return inner_->set_debug_hook({});
    inner_->set_debug_hook([this, hook](int layer, std::string_view name, int rows, int width, const float* data) {
      if (name == faults_.hidden) return;
      if (name == faults_.truncated) return hook(layer, name, rows - 1, width, data);
      if (layer == faults_.layer && name == faults_.scaled) {
        std::vector<float> changed(data, data + size_t(rows) * size_t(width));
        for (float& x : changed) x *= faults_.scale;
        return hook(layer, name, rows, width, changed.data());
      }
      hook(layer, name, rows, width, data);
    });
  }

 private:
  std::unique_ptr<Backend> inner_;
  Faults faults_;
  int n_vocab_ = 0;
};

class CheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Model::load(testing::demo_model_f16());
    tokens_ = Tokenizer::from_gguf(model_->file()).encode("The jury said it did not find any evidence.");
    ref_ = create_backend("cpu-ref", {});
    ref_->load(model_, {});
  }

  std::unique_ptr<Backend> cpu() {
    auto b = create_backend("cpu", {});
    b->load(model_, {});
    return b;
  }

  std::unique_ptr<Backend> faulty(FaultyBackend::Faults f) {
    auto b = std::make_unique<FaultyBackend>(create_backend("cpu", {}), std::move(f));
    b->load(model_, {});
    return b;
  }

  const CheckEntry* find(const CheckReport& r, const std::string& phase, int layer, const std::string& name) {
    for (const CheckEntry& e : r.entries)
      if (e.phase == phase && e.layer == layer && e.name == name) return &e;
    return nullptr;
  }

  std::shared_ptr<Model> model_;
  std::vector<int32_t> tokens_;
  std::unique_ptr<Backend> ref_;
};

TEST_F(CheckTest, CpuAgreesWithCpuRef) {
  auto test = cpu();
  const CheckReport r = compare_backends(*model_, *test, *ref_, tokens_);
  EXPECT_TRUE(r.passed()) << r.summary();
  EXPECT_EQ(r.summary().rfind("no divergence", 0), 0u) << r.summary();
  // Every intermediate of every layer, in both steps, plus logits and states.
  const Hparams& hp = model_->hparams();
  for (const char* phase : {"prefill", "decode"}) {
    for (int l = 0; l < hp.n_layer; ++l)
      for (const char* name : {"att.k", "att.wkv", "ffn.hidden", "layer.out", "state.wkv"}) {
        const CheckEntry* e = find(r, phase, l, name);
        ASSERT_NE(e, nullptr) << phase << " " << l << " " << name;
        EXPECT_FALSE(e->missing);
        EXPECT_LE(e->rel_l2, e->tolerance);
      }
    const CheckEntry* logits = find(r, phase, -1, "step.logits");
    ASSERT_NE(logits, nullptr);
    EXPECT_EQ(logits->tolerance, CheckTolerance{}.logits);
  }
  EXPECT_EQ(find(r, "prefill", -1, "embed")->rows, int(tokens_.size()) - 1);
  EXPECT_EQ(find(r, "decode", -1, "embed")->rows, 1);
}

TEST_F(CheckTest, NamesTheBrokenOp) {
  auto test = faulty(FaultyBackend::Faults::scaling(3, "att.k", 1.05f));
  const CheckReport r = compare_backends(*model_, *test, *ref_, tokens_);
  ASSERT_FALSE(r.passed());
  const CheckEntry& first = r.entries[*r.first_divergence];
  EXPECT_EQ(first.phase, "prefill");
  EXPECT_EQ(first.layer, 3);
  EXPECT_EQ(first.name, "att.k");
  EXPECT_NEAR(first.rel_l2, 0.05, 1e-3);
  EXPECT_EQ(r.summary().rfind("first divergence: layer 3 att.k (rel 0.05", 0), 0u) << r.summary();
  // What came before it is clean; the outcome is off too.
  EXPECT_FALSE(find(r, "prefill", 3, "att.r")->diverged());
  EXPECT_FALSE(find(r, "prefill", 2, "layer.out")->diverged());
  EXPECT_TRUE(find(r, "prefill", -1, "step.logits")->diverged());
  EXPECT_TRUE(find(r, "decode", 3, "att.k")->diverged());
}

TEST_F(CheckTest, UnreportedIntermediatesAreListedButDoNotFail) {
  auto test = faulty(FaultyBackend::Faults::hiding("att.kk"));
  const CheckReport r = compare_backends(*model_, *test, *ref_, tokens_);
  EXPECT_TRUE(r.passed()) << r.summary();
  const CheckEntry* e = find(r, "decode", 0, "att.kk");
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->missing);
  EXPECT_FALSE(e->diverged());
}

TEST_F(CheckTest, ShapeMismatchIsADivergence) {
  auto test = faulty(FaultyBackend::Faults::truncating("ffn.hidden"));
  const CheckReport r = compare_backends(*model_, *test, *ref_, tokens_);
  ASSERT_FALSE(r.passed());
  const CheckEntry& first = r.entries[*r.first_divergence];
  EXPECT_EQ(first.layer, 0);
  EXPECT_EQ(first.name, "ffn.hidden");
  EXPECT_NE(first.problem.find("reference"), std::string::npos) << first.problem;
  EXPECT_NE(r.summary().find("layer 0 ffn.hidden"), std::string::npos) << r.summary();
}

TEST_F(CheckTest, OneTokenRunsOnlyTheDecodeStep) {
  auto test = cpu();
  const CheckReport r = compare_backends(*model_, *test, *ref_, std::span(tokens_).first(1));
  EXPECT_TRUE(r.passed()) << r.summary();
  EXPECT_TRUE(std::all_of(r.entries.begin(), r.entries.end(), [](const CheckEntry& e) { return e.phase == "decode"; }));
}

TEST_F(CheckTest, NoTokensIsAnError) {
  auto test = cpu();
  EXPECT_THROW(compare_backends(*model_, *test, *ref_, {}), Error);
}

TEST(CheckTolerance, LooserForQuantisedModels) {
  const CheckTolerance f16 = CheckTolerance::for_model(*Model::load(testing::demo_model_f16()));
  const CheckTolerance q8 = CheckTolerance::for_model(*Model::load(testing::demo_model_q8_0()));
  EXPECT_EQ(f16.activations, CheckTolerance{}.activations);
  EXPECT_EQ(f16.logits, CheckTolerance{}.logits);
  EXPECT_GT(q8.activations, f16.activations);
  EXPECT_GT(q8.logits, f16.logits);
}

}  // namespace
}  // namespace rwkv
