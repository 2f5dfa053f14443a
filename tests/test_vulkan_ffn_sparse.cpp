// The Vulkan ReLU^2-sparse FFN value product of one-row decode (ffn_sparse.comp) against the
// reference dense product on the same encoded bytes, for F16, BF16 and Q8_0; the transposed
// Q8_0 layout byte by byte; the backend's work splits. Every run also checks that no guard
// word around the kernel's buffers was overwritten and that outputs are finite.
#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include "backend/vulkan/op_runner.h"
#include "common/error.h"
#include "tensor/blocks.h"
#include "tensor/transpose.h"
#include "testing/vulkan_ops.h"

namespace rwkv {
namespace {

using testing::expect_close;
using testing::hidden_vector;
using testing::make_weight;
using testing::reference_product;

// The sparse FFN value product (W [C x F] read through its transposed copy, one row h)
// against the dense reference, lossless up to fp32 rounding, for F16, BF16 and Q8_0: C not a
// multiple of the output slice (200, 136, 2056; Q8_0's 128: 208, 528, 2064), F not a
// multiple of the hidden-unit group (Q8_0's 512: 544, 800), hidden vectors with half, most,
// all and no units zero, whole blocks of 32 zero, a single non-zero unit; for F16 and BF16
// every team width (lanes 8, 16, 32) and units per invocation (groups of 64, 512, 1024
// units; one group and several). Each case runs twice in one command buffer: the results
// must be bit-identical (fixed order sums; the second run reuses the counters the first one
// reset).
TEST(VulkanOps, SparseFfnValueMatchesReference) {
  REQUIRE_DEVICE();
  struct Case {
    TensorType type;
    int64_t C, F;
    uint32_t lanes, units;  // 0: the backend's choice
  };
  std::vector<Case> cases;
  for (TensorType type : {TensorType::F16, TensorType::BF16}) {
    for (const Case c : {Case{type, 200, 1000, 0, 0}, Case{type, 2056, 520, 0, 0}, Case{type, 200, 1000, 32, 1024},
                         Case{type, 136, 1500, 16, 512}})
      cases.push_back(c);
  }
  for (const Case c : {Case{TensorType::Q8_0, 208, 1024, 0, 0}, Case{TensorType::Q8_0, 2064, 544, 0, 0},
                       Case{TensorType::Q8_0, 528, 800, 16, 512}})
    cases.push_back(c);
  for (const Case& c : cases) {
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(c.type, c.C, c.F, 90 + uint64_t(c.C), bytes);
    for (int pattern = 0; pattern < 6; ++pattern) {
      const double zeros[] = {0.5, 0.95, 1.0, 0.0, 0.5, 1.0};
      std::vector<float> h = hidden_vector(size_t(c.F), zeros[pattern], 91 + uint64_t(pattern), pattern == 4);
      if (pattern == 5) h[size_t(c.F) - 1] = 2.5f;  // a single non-zero unit, the last
      const std::vector<float> want = reference_product(w, h, 1);
      const std::array<std::vector<float>, 2> got = vk->ffn_sparse(w, h, c.lanes, c.units);
      const std::string what = std::string(type_name(c.type)) + " C=" + std::to_string(c.C) +
                               " F=" + std::to_string(c.F) + " lanes=" + std::to_string(c.lanes) +
                               " units=" + std::to_string(c.units) + " pattern=" + std::to_string(pattern);
      expect_close(got[0], want, 1e-5, what);
      EXPECT_EQ(got[0], got[1]) << what << ": a second run differs";
      EXPECT_EQ(vk->guards_broken(), 0u) << what;
    }
  }
}

// The transposed Q8_0 copy holds every stored byte where tensor/transpose.h says: quant j of
// row i at j R + i, d of block b of row i in the scale plane at 2 (b R + i); made in two
// slices of quant rows that cut a block, as the upload's staging slices may.
TEST(VulkanOps, Q8_0TransposeMovesEveryByte) {
  std::vector<uint8_t> storage;
  const uint64_t R = 48, K = 3 * 32;
  const Weight w = make_weight(TensorType::Q8_0, int64_t(R), int64_t(K), 43, storage);
  std::vector<uint8_t> out(R * K + R * (K / 32) * 2, 0xAB);
  q8_0_transpose_quants(w.data, R, K, 0, 40, out.data());
  q8_0_transpose_quants(w.data, R, K, 40, K - 40, out.data() + 40 * R);
  q8_0_transpose_scales(w.data, R, K, 0, K / 32, out.data() + R * K);
  for (uint64_t i = 0; i < R; ++i) {
    for (uint64_t b = 0; b < K / 32; ++b) {
      const uint8_t* block = w.data + (i * (K / 32) + b) * sizeof(BlockQ8_0);
      for (uint64_t e = 0; e < 32; ++e)
        EXPECT_EQ(out[(32 * b + e) * R + i], block[offsetof(BlockQ8_0, qs) + e]) << i << " " << b << " " << e;
      for (uint64_t k = 0; k < 2; ++k)
        EXPECT_EQ(out[R * K + (b * R + i) * 2 + k], block[offsetof(BlockQ8_0, d) + k]) << i << " " << b;
    }
  }
}

// The backend's work split: F16, BF16: about 256 workgroups where the shape allows, 64 to
// 1024 units per group, slices of 128 outputs from C = 2048 on (64 below); Q8_0: slices of
// 128 outputs, groups of 512 units, no other split.
TEST(VulkanOps, SparseFfnShapes) {
  const vk::SparseFfnShape s29 = vk::sparse_ffn_shape(TensorType::F16, 2560, 10240);  // 2.9B
  EXPECT_EQ(s29.lanes, 16u);
  EXPECT_EQ(s29.units, 512u);
  EXPECT_EQ(s29.slices * s29.groups, 400u);
  const vk::SparseFfnShape s01 = vk::sparse_ffn_shape(TensorType::BF16, 768, 3072);  // 0.1B
  EXPECT_EQ(s01.lanes, 8u);
  EXPECT_EQ(s01.units, 128u);
  EXPECT_EQ(s01.slices * s01.groups, 288u);
  EXPECT_EQ(vk::sparse_ffn_shape(TensorType::F16, 64, 100).units, 64u);
  EXPECT_EQ(s01.part_off(), 12u);
  EXPECT_EQ(s01.partial_words(768), 12u + 24u * 768u);
  const vk::SparseFfnShape q29 = vk::sparse_ffn_shape(TensorType::Q8_0, 2560, 10240);
  EXPECT_EQ(q29.per_lane * q29.lanes, 128u);
  EXPECT_EQ(q29.units, 512u);
  EXPECT_EQ(q29.slices, 20u);
  EXPECT_EQ(q29.groups, 20u);
  EXPECT_EQ(vk::sparse_ffn_shape(TensorType::Q8_0, 528, 800).slices, 5u);
  EXPECT_THROW(vk::sparse_ffn_shape(TensorType::F16, 256, 256, 12, 0), Error);
  EXPECT_THROW(vk::sparse_ffn_shape(TensorType::F16, 256, 256, 8, 96), Error);
  EXPECT_THROW(vk::sparse_ffn_shape(TensorType::Q8_0, 256, 256, 32, 0), Error);
  EXPECT_THROW(vk::sparse_ffn_shape(TensorType::Q8_0, 256, 256, 0, 256), Error);
  EXPECT_TRUE(vk::sparse_ffn_supported(TensorType::BF16, 256));
  EXPECT_TRUE(vk::sparse_ffn_supported(TensorType::Q8_0, 208));
  EXPECT_FALSE(vk::sparse_ffn_supported(TensorType::Q8_0, 200));
  EXPECT_FALSE(vk::sparse_ffn_supported(TensorType::Q4_0, 256));
  EXPECT_FALSE(vk::sparse_ffn_supported(TensorType::F16, 252));
}

}  // namespace
}  // namespace rwkv
