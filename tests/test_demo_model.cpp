// The trained demo model: reference perplexity (models/README.md) on its held-out text.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "runtime/perplexity.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

std::string heldout() {
  std::ifstream in(testing::source_path("models/heldout.txt"), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Case {
  std::string file, backend;
  double nats, tolerance;  // reference nats/token and allowed relative error of perplexity
};

class DemoPerplexity : public ::testing::TestWithParam<Case> {};

TEST_P(DemoPerplexity, ReproducesReference) {
  EngineOptions o;
  o.backend = GetParam().backend;
  o.backend_options.n_threads = 2;
  auto e = Engine::open(testing::source_path("models/" + GetParam().file), o);
  const PerplexityResult r = perplexity(*e, heldout());
  EXPECT_EQ(r.n_tokens, 15276);
  const double want_ppl = std::exp(GetParam().nats);
  EXPECT_NEAR(r.perplexity() / want_ppl, 1.0, GetParam().tolerance)
      << "nats/token " << r.nats_per_token() << " vs reference " << GetParam().nats;
}

// cpu-ref must agree far better than 0.1%; the fast path within 1% (it quantises activations).
INSTANTIATE_TEST_SUITE_P(Files, DemoPerplexity,
                         ::testing::Values(Case{"rwkv7-demo-6x256-f16.gguf", "cpu-ref", 3.71081, 2e-4},
                                           Case{"rwkv7-demo-6x256-q8_0.gguf", "cpu-ref", 3.71076, 2e-4},
                                           Case{"rwkv7-demo-6x256-f16.gguf", "cpu", 3.71081, 1e-2},
                                           Case{"rwkv7-demo-6x256-q8_0.gguf", "cpu", 3.71076, 1e-2}),
                         [](const auto& info) {
                           return (info.param.file.find("f16") != std::string::npos ? std::string("f16_")
                                                                                    : std::string("q8_0_")) +
                                  (info.param.backend == "cpu" ? "cpu" : "cpu_ref");
                         });

}  // namespace
}  // namespace rwkv
