// Helpers shared by the tests: error norms, temporary files, generated models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/synthetic.h"

namespace rwkv::testing {

// ||a - b|| / ||b|| over n values (b is the reference); +inf when either has NaN/Inf.
double rel_l2(const float* a, const float* b, size_t n);
double rel_l2(const std::vector<float>& a, const std::vector<float>& b);
// Index of the largest value.
size_t argmax(const float* x, size_t n);

// A fresh path under the test temp dir (removed at exit of the process is not promised).
std::string temp_path(const std::string& name);
// Writes (once per process and spec) a synthetic model and returns its path.
std::string synthetic_model(const SyntheticSpec& spec);
// The demo models shipped in models/.
std::string demo_model_f16();
std::string demo_model_q8_0();
std::string source_path(const std::string& relative);

}  // namespace rwkv::testing
