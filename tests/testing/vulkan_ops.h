// Helpers shared by the Vulkan kernel tests (test_vulkan_ops.cpp, test_vulkan_coopmat.cpp):
// one device per test program, random inputs and encoded weights, output checks, and the
// matrix epilogues' expected outputs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/ref_ops.h"
#include "backend/vulkan/op_runner.h"
#include "common/error.h"
#include "model/model.h"
#include "tensor/quant.h"
#include "tensor/types.h"
#include "testing/testing.h"

namespace rwkv::testing {

// One device for the whole test program; null (tests skip) when there is none.
inline vk::OpRunner* vulkan_runner() {
  static std::unique_ptr<vk::OpRunner> r = [] {
    try {
      return std::make_unique<vk::OpRunner>();
    } catch (const Error& e) {
      std::fprintf(stderr, "no Vulkan device: %s\n", e.what());
      return std::unique_ptr<vk::OpRunner>();
    }
  }();
  return r.get();
}

inline bool all_finite(const std::vector<float>& v) {
  for (float x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

// Relative L2 error of `got` against `want` at most `tol`, every output finite.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_TRUE(all_finite(got)) << what << ": non-finite output (an element left unwritten?)";
  EXPECT_LE(rel_l2(got, want), tol) << what;
}

// act(y + bias) for products y [T x rows]: the matrix epilogues' expected outputs.
inline std::vector<float> epilogue_reference(const std::vector<float>& y, const std::vector<float>& bias,
                                             uint32_t act) {
  const auto sigmoid = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  std::vector<float> want(y.size());
  for (size_t i = 0; i < y.size(); ++i) {
    const double z = double(y[i]) + double(bias[i % bias.size()]);
    switch (act) {
      case vk::kActTanh:
        want[i] = float(std::tanh(z));
        break;
      case vk::kActSigmoid:
        want[i] = float(sigmoid(z));
        break;
      case vk::kActReluSq:
        want[i] = float(z > 0 ? z * z : 0.0);
        break;
      case vk::kActDecay:
        want[i] = float(std::exp(-0.6065306597126334 * sigmoid(z)));
        break;
      default:
        want[i] = float(z);
    }
  }
  return want;
}

// A tiled-matmul shape: rows x cols (rounded up to the weight type's block) over T tokens,
// K split `splits` ways (0: the backend's plan).
struct MatrixCase {
  int64_t rows, cols;
  int T;
  uint32_t splits;
};
// Every case of every type through `path` against ref::matmul on the same encoded bytes:
// relative error within tol, guard words intact, and a split product's second run in the
// same command buffer bit-identical to the first. Weights use seed + rows, x seed + 1 + T.
inline void expect_matrix_cases(vk::OpRunner& vk, vk::MatPath path, std::initializer_list<TensorType> types,
                                std::span<const MatrixCase> cases, double tol, uint64_t seed) {
  for (TensorType type : types) {
    for (const MatrixCase& c : cases) {
      const int64_t block = type_info(type).block_size, cols = (c.cols + block - 1) / block * block;
      std::vector<uint8_t> bytes;
      const Weight w = make_weight(type, c.rows, cols, seed + uint64_t(c.rows), bytes);
      const std::vector<float> x = random_vector(size_t(c.T * cols), -1.0f, 1.0f, seed + 1 + uint64_t(c.T));
      const std::vector<float> want = reference_product(w, x, c.T);
      const std::string what = std::string(type_name(type)) + " rows=" + std::to_string(c.rows) +
                               " cols=" + std::to_string(cols) + " T=" + std::to_string(c.T) +
                               " splits=" + std::to_string(c.splits);
      expect_close(vk.matrix(w, x, c.T, path, vk::kActNone, {}, 0, {}, 1.0f, c.splits), want, tol, what);
      EXPECT_EQ(vk.guards_broken(), 0u) << what;
      EXPECT_FALSE(vk.runs_differ()) << what << ": a second run differs";
    }
  }
}

inline constexpr uint32_t kAllActs[] = {vk::kActNone, vk::kActTanh, vk::kActSigmoid, vk::kActReluSq, vk::kActDecay};

}  // namespace rwkv::testing

// Declares `vk`, the program's device, in a test; skips the test when there is none.
#define REQUIRE_DEVICE()                                       \
  ::rwkv::vk::OpRunner* vk = ::rwkv::testing::vulkan_runner(); \
  if (vk == nullptr) GTEST_SKIP() << "no Vulkan device here";  \
  static_assert(true)
