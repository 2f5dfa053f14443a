// The Vulkan tensor-core matmul (matmul_cm.comp, prefill's matrix products where the device
// has VK_NV_cooperative_matrix) against the reference ops on the same encoded bytes: rows
// and tokens not multiples of its 128 x 128 tiles, K not a multiple of its 32-element slices,
// K splits chosen and forced (short and empty splits, bit-identical reruns), every epilogue,
// gathered rows, matrices split over buffers, and activations beyond float16's range kept
// in range by the job's x scale. Every test skips on devices without cooperative matrices
// (lavapipe); every run also checks the guard words around the kernel's buffers. The
// float16-activation forms of prefill steps are checked the same way. The other
// matrix paths, and this one on every weight type, are in test_vulkan_ops.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/vulkan/op_runner.h"
#include "tensor/types.h"
#include "testing/vulkan_ops.h"

namespace rwkv {
namespace {

using testing::epilogue_reference;
using testing::expect_close;
using testing::kAllActs;
using testing::make_weight;
using testing::random_vector;
using testing::reference_product;
using vk::MatPath;

// The tensor-core path with activations far beyond float16's range, kept in range by the
// job's x scale (as for the FFN's relu^2 values).
TEST(VulkanOps, CoopmatScalesLargeActivations) {
  REQUIRE_DEVICE();
  if (!vk->context().info().coopmat) GTEST_SKIP() << "no cooperative matrices on this device";
  const int64_t rows = 70, cols = 512;
  std::vector<uint8_t> bytes;
  const Weight w = make_weight(TensorType::F16, rows, cols, 80, bytes);
  const int T = 33;
  const std::vector<float> x = random_vector(size_t(T * cols), -2e5f, 2e5f, 81);
  const std::vector<float> want = reference_product(w, x, T);
  const std::vector<float> got = vk->matrix(w, x, T, MatPath::matmul_coopmat, vk::kActNone, {}, 0, {}, 1.0f / 256);
  expect_close(got, want, 3e-3, "coopmat, |x| up to 2e5");
  EXPECT_EQ(vk->guards_broken(), 0u);
}

// The tensor-core matmul (prefill's default where the device has it) on the shapes that
// stress its tiles: rows and tokens not multiples of 128 (partial tiles both ways; T = 257
// leaves one token in the last tile), K not a multiple of its 32-element slices, K splits
// chosen and forced (3: a short last split; 8 over 72 columns: empty splits; a split
// product runs twice and the second run must match bit for bit), every epilogue with a
// bias, gathered rows, a matrix split over buffers. W and x are rounded to float16: looser
// tolerance than the float32 paths.
TEST(VulkanOps, CoopmatMatchesReference) {
  REQUIRE_DEVICE();
  if (!vk->context().info().coopmat) {
    GTEST_SKIP() << "no cooperative matrices on this device: the tensor-core matmul is not tested here";
  }
  constexpr double tol = 3e-3;
  const MatPath cm = MatPath::matmul_coopmat;
  const testing::MatrixCase cases[] = {{130, 1056, 20, 0}, {37, 1056, 70, 0},  {130, 264, 130, 0},
                                       {37, 1056, 70, 1},  {130, 1056, 20, 3}, {37, 72, 20, 8},
                                       {37, 72, 130, 8},   {200, 520, 257, 0}, {129, 40, 17, 1}};
  testing::expect_matrix_cases(*vk, cm, {TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q4_K}, cases,
                               tol, 21);
  {  // epilogues, unsplit and split
    const int64_t rows = 45, cols = 64;
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(TensorType::F16, rows, cols, 5, bytes);
    const std::vector<float> bias = random_vector(size_t(rows), -2.0f, 2.0f, 6);
    for (int T : {20, 130}) {
      const std::vector<float> x = random_vector(size_t(T * cols), -2.0f, 2.0f, 7);
      const std::vector<float> y = reference_product(w, x, T);
      for (uint32_t act : kAllActs) {
        for (uint32_t splits : {1u, 2u}) {
          const std::string what =
              "coopmat act " + std::to_string(act) + " T=" + std::to_string(T) + " splits=" + std::to_string(splits);
          expect_close(vk->matrix(w, x, T, cm, act, bias, 0, {}, 1.0f, splits), epilogue_reference(y, bias, act), tol,
                       what);
          EXPECT_EQ(vk->guards_broken(), 0u) << what;
        }
      }
    }
  }
  {  // gathered rows
    const int64_t rows = 33, cols = 64;
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(TensorType::Q4_0, rows, cols, 12, bytes);
    const int T = 6;
    const std::vector<float> x = random_vector(size_t(T * cols), -1.0f, 1.0f, 13);
    const std::vector<uint32_t> gather = {5, 0, 3};
    const std::vector<float> all = reference_product(w, x, T);
    std::vector<float> want;
    for (uint32_t g : gather) want.insert(want.end(), all.begin() + g * rows, all.begin() + (g + 1) * rows);
    expect_close(vk->matrix(w, x, T, cm, vk::kActNone, {}, 0, gather), want, tol, "coopmat gather");
    EXPECT_EQ(vk->guards_broken(), 0u);
  }
  for (TensorType type : {TensorType::F16, TensorType::Q6_K}) {  // three buffers, K unsplit and split
    const int64_t cols = 256, rows = 51;
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, rows, cols, 9, bytes);
    const uint64_t limit = w.row_stride() * 20;
    const int T = 66;
    const std::vector<float> x = random_vector(size_t(T * cols), -1.0f, 1.0f, 10);
    const std::vector<float> want = reference_product(w, x, T);
    for (uint32_t splits : {1u, 2u}) {
      const std::string what = std::string(type_name(type)) + " coopmat over buffers, splits=" + std::to_string(splits);
      expect_close(vk->matrix(w, x, T, cm, vk::kActNone, {}, limit, {}, 1.0f, splits), want, tol, what);
      EXPECT_EQ(vk->guards_broken(), 0u) << what;
      EXPECT_FALSE(vk->runs_differ()) << what;
    }
  }
}

// The float16 forms prefill steps take (kernels.h MatF16): x read as float16 (already times
// x_scale), y written as float16 times the consumer's scale, every epilogue with a bias, K
// unsplit and split (the split's last workgroup writes the pairs), partial tiles and an odd
// row count (y rows padded to an even stride, as the backend's are; the last pair's second
// half is zero), x16 over buffers, and the FFN's
// key -> value chain: relu^2 outputs far beyond float16's range, scaled by 2^-8 on the way.
TEST(VulkanOps, CoopmatFloat16Activations) {
  REQUIRE_DEVICE();
  if (!vk->context().info().coopmat) GTEST_SKIP() << "no cooperative matrices on this device";
  constexpr double tol = 3e-3;
  const MatPath cm = MatPath::matmul_coopmat;
  const vk::MatF16 x16{.x = true}, xy16{.x = true, .y = true};
  for (const auto& [rows, cols, T] : {std::array<int, 3>{45, 64, 20}, {131, 288, 130}, {200, 1056, 257}}) {
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(TensorType::Q8_0, rows, cols, 30, bytes);
    const std::vector<float> bias = random_vector(size_t(rows), -2.0f, 2.0f, 31);
    const std::vector<float> x = random_vector(size_t(T * cols), -2.0f, 2.0f, 32);
    const std::vector<float> y = reference_product(w, x, T);
    for (uint32_t act : kAllActs) {
      for (uint32_t splits : {1u, 3u}) {
        const std::string what = "rows " + std::to_string(rows) + " T " + std::to_string(T) + " act " +
                                 std::to_string(act) + " splits " + std::to_string(splits);
        const std::vector<float> want = epilogue_reference(y, bias, act);
        expect_close(vk->matrix(w, x, T, cm, act, bias, 0, {}, 1.0f, splits, x16), want, tol, "x16 " + what);
        EXPECT_EQ(vk->guards_broken(), 0u) << what;
        expect_close(vk->matrix(w, x, T, cm, act, bias, 0, {}, 1.0f, splits, xy16), want, tol, "x16 y16 " + what);
        EXPECT_EQ(vk->guards_broken(), 0u) << what;
        EXPECT_FALSE(vk->runs_differ()) << what;
      }
    }
  }
  {  // over three buffers
    const int64_t rows = 51, cols = 256;
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(TensorType::F16, rows, cols, 33, bytes);
    const int T = 66;
    const std::vector<float> x = random_vector(size_t(T * cols), -1.0f, 1.0f, 34);
    const std::vector<float> want = reference_product(w, x, T);
    expect_close(vk->matrix(w, x, T, cm, vk::kActNone, {}, w.row_stride() * 20, {}, 1.0f, 0, x16), want, tol,
                 "x16 over buffers");
    EXPECT_EQ(vk->guards_broken(), 0u);
  }
  {  // relu^2 of a key product beyond float16, written scaled by 2^-8, read by the value product
    const int64_t F = 96, C = 64;
    const int T = 40;
    std::vector<uint8_t> kb, vb;
    const Weight key = make_weight(TensorType::F16, F, C, 35, kb), value = make_weight(TensorType::F16, C, F, 36, vb);
    const std::vector<float> x = random_vector(size_t(T * C), -40.0f, 40.0f, 37);
    std::vector<float> hidden = reference_product(key, x, T);
    for (float& h : hidden) h = h > 0 ? h * h : 0.0f;
    ASSERT_GT(*std::max_element(hidden.begin(), hidden.end()), 65504.0f) << "the case must pass float16's range";
    const std::vector<float> want = reference_product(value, hidden, T);
    const vk::MatF16 key_out{.x = true, .y = true, .y_scale = 1.0f / 256};
    const std::vector<float> got_hidden = vk->matrix(key, x, T, cm, vk::kActReluSq, {}, 0, {}, 1.0f, 0, key_out);
    expect_close(got_hidden, hidden, tol, "key, relu^2 out in float16 / 256");
    expect_close(vk->matrix(value, hidden, T, cm, vk::kActNone, {}, 0, {}, 1.0f / 256, 0, x16), want, tol,
                 "value, x in float16 / 256");
    EXPECT_EQ(vk->guards_broken(), 0u);
  }
}

}  // namespace
}  // namespace rwkv
