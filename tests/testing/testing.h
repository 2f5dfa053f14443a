// Helpers shared by the tests: error norms, temporary files, generated models.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/synthetic.h"

namespace rwkv::testing {

// ||a - b|| / ||b|| over n values (b is the reference); +inf when either has NaN/Inf.
double rel_l2(const float* a, const float* b, size_t n);
double rel_l2(const std::vector<float>& a, const std::vector<float>& b);
// Index of the largest value.
size_t argmax(const float* x, size_t n);

// n values uniform in [lo, hi), the same for the same seed.
std::vector<float> random_vector(size_t n, float lo, float hi, uint64_t seed);
// A weight of `rows` x `cols` random values encoded as `type`; bytes owned by `storage`.
Weight make_weight(TensorType type, int64_t rows, int64_t cols, uint64_t seed, std::vector<uint8_t>& storage);
// ref::matmul's W x for T rows of x on the same encoded bytes: every matrix test's oracle.
std::vector<float> reference_product(const Weight& w, std::span<const float> x, int T);
// An FFN hidden vector like relu(z)^2: a fraction `zeros` (0 to 1) of exact zeros, the
// rest in [0, 4); with `blocks`, also every unit of each third block of 32 zero.
std::vector<float> hidden_vector(size_t n, double zeros, uint64_t seed, bool blocks = false);

// A fresh path under the test temp dir (removed at exit of the process is not promised).
std::string temp_path(const std::string& name);
// Writes (once per process and spec) a synthetic model and returns its path.
std::string synthetic_model(const SyntheticSpec& spec);
// The demo models shipped in models/.
std::string demo_model_f16();
std::string demo_model_q8_0();
std::string source_path(const std::string& relative);

}  // namespace rwkv::testing
