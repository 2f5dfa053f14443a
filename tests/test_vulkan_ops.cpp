// Vulkan kernels against the reference ops (backend/cpu/ref_ops.h) on the same encoded
// bytes: every matrix shader for every weight type (odd row counts, T = 1 and T > 1, both
// the matvec and the tiled paths, the tensor-core one where the device has cooperative
// matrices; row-split weights, gathered rows, every epilogue), the Q8_0 matvec at odd
// shapes, the tiled matmul's two tile widths and its K splits (partial tiles, empty splits,
// counters left at zero for the next dispatch), the matmuls' plans, the embedding lookup for
// every type, the fused LayerNorm/shift/lerp kernel, and the WKV kernels (fused, fused with
// the LoRA up-projections folded in, and the prefill scan in several work splits) with
// several sequences of different lengths. The tensor-core matmul's own shapes are in
// test_vulkan_coopmat.cpp, the sparse FFN value product in test_vulkan_ffn_sparse.cpp. Every
// run also checks that no guard word around the kernel's buffers was overwritten and that
// outputs are finite.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/ref_ops.h"
#include "backend/vulkan/grouped_layout.h"
#include "backend/vulkan/op_runner.h"
#include "common/error.h"
#include "tensor/blocks.h"
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
using vk::OpRunner;
using vk::OpSeq;

const TensorType kAllTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0,
                                TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0,
                                TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

// One type at a narrow width (352: a full Q8_0 group of 256 and a partial one; 360: the
// matvec's 16-element units and a final 8-element one; GPUs run both in the short-row
// workgroups) or a wide one (1056 = 4 full Q8_0 groups and one block).
void check_matrix_type(OpRunner* vk, TensorType type, bool wide, bool coopmat) {
  const int64_t block = type_info(type).block_size;
  const int64_t cols = block == 256 ? (wide ? 1024 : 512) : block == 1 ? (wide ? 1032 : 360) : (wide ? 1056 : 352);
  const int64_t rows = 37;  // odd: partial workgroups in both shaders
  std::vector<uint8_t> bytes;
  const Weight w = make_weight(type, rows, cols, 11 + uint64_t(type), bytes);
  for (int T : {1, 3, 13, 70}) {  // 13: matvec passes of 4 tokens, the last partial
    const std::vector<float> x = random_vector(size_t(T * cols), -1.0f, 1.0f, 100 + uint64_t(T));
    const std::vector<float> want = reference_product(w, x, T);
    for (MatPath path : {MatPath::matvec, MatPath::matmul, MatPath::matmul_coopmat}) {
      if (T == 70 && path == MatPath::matvec) continue;
      if (T == 1 && path != MatPath::matvec) continue;
      if (path == MatPath::matmul_coopmat && !coopmat) continue;
      const std::string what = std::string(type_name(type)) + " cols=" + std::to_string(cols) +
                               " T=" + std::to_string(T) +
                               (path == MatPath::matvec   ? " matvec"
                                : path == MatPath::matmul ? " matmul"
                                                          : " coopmat");
      const std::vector<float> got = vk->matrix(w, x, T, path);
      expect_close(got, want, path == MatPath::matmul_coopmat ? 3e-3 : 1e-5, what);
      EXPECT_EQ(vk->guards_broken(), 0u) << what;
      EXPECT_FALSE(vk->runs_differ()) << what;
    }
  }
}

// Every type, every shader path, T = 1, 3, 13 (matvec sizes: passes of 4 tokens) and 70 (two token tiles). The
// tensor-core path (where the device has one) rounds W and x to float16: looser tolerance.
TEST(VulkanOps, MatrixEveryTypeMatchesReference) {
  REQUIRE_DEVICE();
  const bool coopmat = vk->context().info().coopmat;
  for (TensorType type : kAllTypes) {
    for (const bool wide : {false, true}) check_matrix_type(vk, type, wide, coopmat);
  }
}

// The grouped types' matvec (grouped_layout.h; Q8_0 quants made floats from their bits, the
// block scale applied once per 16) at odd shapes: rows of whole groups and a partial one,
// several units per invocation, 37 rows (a partial workgroup); T = 1 (decode) and T = 3. The
// tiled matmul reads the same groups (T = 20).
TEST(VulkanOps, GroupedMatvecMatchesReference) {
  REQUIRE_DEVICE();
  const std::pair<TensorType, int64_t> cases[] = {
      {TensorType::Q8_0, 352}, {TensorType::Q8_0, 2592}, {TensorType::Q6_K, 2560}, {TensorType::Q6_K, 4352}};
  for (const auto& [type, cols] : cases) {
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, 37, cols, 5 + uint64_t(cols), bytes);
    for (int T : {1, 3, 20}) {
      const std::vector<float> x = random_vector(size_t(T * cols), -2.0f, 2.0f, 90 + uint64_t(T));
      const std::vector<float> want = reference_product(w, x, T);
      const std::string what =
          std::string(type_name(type)) + " cols=" + std::to_string(cols) + " T=" + std::to_string(T);
      expect_close(vk->matrix(w, x, T, T == 20 ? MatPath::matmul : MatPath::matvec), want, 1e-5, what);
      EXPECT_EQ(vk->guards_broken(), 0u) << what;
    }
  }
}

// The epilogues: bias, then tanh / sigmoid / relu^2 / the decay formula (spec §2.2 step 4).
TEST(VulkanOps, MatrixEpilogues) {
  REQUIRE_DEVICE();
  const int64_t rows = 45, cols = 64;
  std::vector<uint8_t> bytes;
  const Weight w = make_weight(TensorType::F16, rows, cols, 5, bytes);
  const std::vector<float> bias = random_vector(size_t(rows), -2.0f, 2.0f, 6);
  for (int T : {1, 2, 20}) {
    const std::vector<float> x = random_vector(size_t(T * cols), -2.0f, 2.0f, 7);
    const std::vector<float> y = reference_product(w, x, T);
    for (uint32_t act : kAllActs) {
      const std::vector<float> want = epilogue_reference(y, bias, act);
      const MatPath path = T <= int(vk::Kernels::matvec_max_tokens) ? MatPath::matvec : MatPath::matmul;
      const std::vector<float> got = vk->matrix(w, x, T, path, act, bias);
      expect_close(got, want, 1e-5, "act " + std::to_string(act) + " T=" + std::to_string(T));
      EXPECT_EQ(vk->guards_broken(), 0u);
    }
  }
}

// The tiled matmul's shapes: 64-token tiles (T <= 64) and 128-token ones, rows and T not
// multiples of the tiles (partial tiles in both directions), K splits chosen by the backend
// and forced (1; 3, which leaves a short last split; 8 over 72 F16 columns, which leaves
// five splits empty). Quantised types round the widths up to their blocks. A product with K
// split runs twice in one command buffer: the second must match the first bit for bit
// (each dispatch leaves its counters at zero; the partial sums are added in a fixed order).
TEST(VulkanOps, MatrixTilesAndSplits) {
  REQUIRE_DEVICE();
  const testing::MatrixCase cases[] = {{130, 1056, 20, 0}, {37, 1056, 70, 0}, {130, 264, 130, 0}, {37, 1056, 70, 1},
                                       {130, 1056, 20, 3}, {37, 72, 20, 8},   {37, 72, 130, 8}};
  testing::expect_matrix_cases(*vk, MatPath::matmul, {TensorType::F16, TensorType::Q8_0, TensorType::Q4_K}, cases, 1e-5,
                               17);
}

// The bandwidth copy (copy.comp, Backend::measure_bandwidth): every 16-byte word of a buffer
// whose size leaves a partial trip of four strides and a tail on a grid of two workgroups
// (and one word on one), nothing written past its end.
TEST(VulkanOps, CopyMovesEveryWord) {
  REQUIRE_DEVICE();
  vk::Context& ctx = vk->context();
  for (const uint32_t words : {1u, 4u * 512u * 3u + 2u * 512u + 37u}) {
    const uint32_t guard = 8;  // words after the copy's end, left as they were
    vk::Buffer src(ctx, uint64_t(words + guard) * 16, vk::MemoryKind::staging, "copy source");
    vk::Buffer dst(ctx, uint64_t(words + guard) * 16, vk::MemoryKind::readback, "copy destination");
    auto* in = reinterpret_cast<uint32_t*>(src.mapped());
    for (uint32_t i = 0; i < 4 * (words + guard); ++i) in[i] = i * 2654435761u + 1;
    std::memset(dst.mapped(), 0xA5, size_t(words + guard) * 16);
    ctx.run([&](VkCommandBuffer cmd) {
      vk->kernels().copy(cmd, src.handle(), dst.handle(), words, words == 1 ? 1 : 2);
      vk->kernels().host_barrier(cmd);
    });
    ctx.invalidate(dst);
    const auto* out = reinterpret_cast<const uint32_t*>(dst.mapped());
    for (uint32_t i = 0; i < 4 * words; ++i) ASSERT_EQ(out[i], in[i]) << "word " << i / 4 << " of " << words;
    for (uint32_t i = 4 * words; i < 4 * (words + guard); ++i)
      ASSERT_EQ(out[i], 0xA5A5A5A5u) << "written past the end: word " << i / 4;
  }
}

// The matmuls' plans at the 2.9B shapes (T = 256): 128 x 128 tiles, and K split so that
// each dispatch has about 256 workgroups of 256: W_value (2560 x 10240, 40 tiles) 6 ways,
// W_key (10240 x 2560, 160 tiles) 2 ways; fewer splits where the scratch is short, none
// where no scratch is bound or K is short (the LoRA up-projections, K = 96); 64-token
// tiles for T <= 64 in the float32 matmul, 128 always in the tensor-core one (a plan is
// host arithmetic: checked on every device).
TEST(VulkanOps, MatmulPlans) {
  REQUIRE_DEVICE();
  if (vk->context().limits().max_shared_bytes < 32768) GTEST_SKIP() << "no room for 128-token tiles";
  const vk::Kernels& k = vk->kernels();
  const auto jobs = [](uint32_t rows, uint32_t cols, uint32_t n = 1) {
    return vk::MatJobs{.n_jobs = n, .max_rows = rows, .max_cols = cols, .row_tiles = n * ((rows + 127) / 128)};
  };
  const uint64_t lots = uint64_t(1) << 40;
  for (const MatPath path : {MatPath::matmul, MatPath::matmul_coopmat}) {
    const std::string what = path == MatPath::matmul ? "float32" : "coopmat";
    const vk::MatmulPlan value = k.matmul_plan(jobs(2560, 10240), 256, lots, lots, path);
    EXPECT_EQ(value.threads, 256u) << what;
    EXPECT_EQ(value.tokens, 128u) << what;
    EXPECT_EQ(value.splits, 6u) << what;
    EXPECT_EQ(value.count_words, 40u) << what;
    EXPECT_EQ(value.part_words, 40u * 6u * 128u * 128u) << what;
    EXPECT_EQ(k.matmul_plan(jobs(10240, 2560), 256, lots, lots, path).splits, 2u) << what;
    EXPECT_EQ(k.matmul_plan(jobs(2560, 96, 4), 256, lots, lots, path).splits, 1u) << what;
    EXPECT_EQ(k.matmul_plan(jobs(2560, 10240), 256, 0, 0, path).splits, 1u) << what;
    EXPECT_EQ(k.matmul_plan(jobs(2560, 10240), 256, 39, lots, path).splits, 1u) << what;
    EXPECT_EQ(k.matmul_plan(jobs(2560, 10240), 256, lots, value.part_words - 1, path).splits, 5u) << what;
    vk::MatJobs forced = jobs(2560, 2560);
    forced.splits = 3;
    EXPECT_EQ(k.matmul_plan(forced, 256, lots, lots, path).splits, 3u) << what;
    EXPECT_THROW(k.matmul_plan(forced, 256, lots, 0, path), Error) << what;
  }
  const vk::MatmulPlan narrow = k.matmul_plan(jobs(2560, 2560), 40, lots, lots, MatPath::matmul);
  EXPECT_EQ(narrow.threads, 128u);
  EXPECT_EQ(narrow.tokens, 64u);
  const vk::MatmulPlan narrow_cm = k.matmul_plan(jobs(2560, 2560), 40, lots, lots, MatPath::matmul_coopmat);
  EXPECT_EQ(narrow_cm.threads, 256u);
  EXPECT_EQ(narrow_cm.tokens, 128u);
  EXPECT_EQ(narrow_cm.splits, 10u);  // 20 tiles; at most 2560 / 256 splits
  // The backend's own plan (MatPath::automatic) is that of the path prefill takes.
  const MatPath prefill = k.uses_coopmat() ? MatPath::matmul_coopmat : MatPath::matmul;
  EXPECT_EQ(k.matmul_plan(jobs(2560, 2560), 40, lots, lots).tokens,
            k.matmul_plan(jobs(2560, 2560), 40, lots, lots, prefill).tokens);
}

// The bytes of a grouped row that no block field went to (`used`) are zero padding.
void expect_zero_padding(const std::vector<uint8_t>& out, const std::vector<bool>& used, const std::string& what) {
  for (size_t i = 0; i < out.size(); ++i) {
    if (!used[i]) {
      EXPECT_EQ(out[i], 0) << what << "padding byte " << i;
    }
  }
}

// The grouped Q8_0 rows the device reads hold every stored byte where grouped_layout.h says:
// three full groups and a partial one of 3 blocks per row, zero padding.
TEST(VulkanOps, Q8_0GroupingMovesEveryByte) {
  std::vector<uint8_t> storage;
  const int rows = 3, cols = 27 * 32;
  const Weight w = make_weight(TensorType::Q8_0, rows, cols, 41, storage);
  const uint32_t out_row = vk::q8_0_grouped_row_bytes(cols);
  ASSERT_EQ(out_row, 3 * vk::kQ8GroupBytes + vk::kQ8GroupScaleBytes + 3 * 32);
  ASSERT_EQ(out_row % 16, 0u);
  std::vector<uint8_t> out(size_t(rows) * out_row, 0xAB);
  vk::q8_0_to_grouped(w.data, out.data(), rows, cols);
  std::vector<bool> used(out.size(), false);
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < cols / 32; ++b) {
      const uint8_t* block = w.data + (size_t(r) * (cols / 32) + size_t(b)) * sizeof(BlockQ8_0);
      const size_t group = size_t(r) * out_row + size_t(b / 8) * vk::kQ8GroupBytes;
      for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(out[group + 2 * size_t(b % 8) + i], block[offsetof(BlockQ8_0, d) + i]) << r << " " << b;
        used[group + 2 * size_t(b % 8) + i] = true;
      }
      for (size_t i = 0; i < 32; ++i) {
        const size_t at = group + vk::kQ8GroupScaleBytes + 32 * size_t(b % 8) + i;
        EXPECT_EQ(out[at], block[offsetof(BlockQ8_0, qs) + i]) << r << " " << b << " " << i;
        used[at] = true;
      }
    }
  }
  expect_zero_padding(out, used, "");
}

// The grouped Q4_0 / Q4_1 / Q5_0 / Q5_1 rows likewise: per block, d, m and qh (where the type
// has them) in their arrays and the 16 quant bytes; two full groups and a partial one of 5.
TEST(VulkanOps, LegacyGroupingMovesEveryByte) {
  for (TensorType type : {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1}) {
    std::vector<uint8_t> storage;
    const int rows = 2, cols = 21 * 32;
    const Weight w = make_weight(type, rows, cols, 47, storage);
    const vk::LegacyGroup g = vk::legacy_group(type);
    const size_t block_bytes = type_info(type).block_bytes, full = g.qs_off + 128;
    ASSERT_EQ(full, 8 * block_bytes) << type_name(type);
    const uint32_t out_row = vk::legacy_grouped_row_bytes(type, cols);
    ASSERT_EQ(out_row, 2 * full + g.qs_off + 5 * 16) << type_name(type);
    ASSERT_EQ(out_row % 16, 0u);
    std::vector<uint8_t> out(size_t(rows) * out_row, 0xAB);
    vk::legacy_to_grouped(type, w.data, out.data(), rows, cols);
    std::vector<bool> used(out.size(), false);
    // Where field bytes sit in a stored block: d at 0, then m (2 bytes) and qh (4) if present, qs last.
    const size_t m_in = 2, qh_in = g.m_off ? 4 : 2, qs_in = block_bytes - 16;
    for (int r = 0; r < rows; ++r) {
      for (int b = 0; b < cols / 32; ++b) {
        const uint8_t* block = w.data + (size_t(r) * (cols / 32) + size_t(b)) * block_bytes;
        const size_t group = size_t(r) * out_row + size_t(b / 8) * full, j = size_t(b % 8);
        const auto expect = [&](size_t at, size_t from, size_t n) {
          for (size_t i = 0; i < n; ++i) {
            EXPECT_EQ(out[at + i], block[from + i]) << type_name(type) << " " << r << " " << b << " " << i;
            used[at + i] = true;
          }
        };
        expect(group + 2 * j, 0, 2);
        if (g.m_off) expect(group + g.m_off + 2 * j, m_in, 2);
        if (g.qh_off) expect(group + g.qh_off + 4 * j, qh_in, 4);
        expect(group + g.qs_off + 16 * j, qs_in, 16);
      }
    }
    expect_zero_padding(out, used, std::string(type_name(type)) + " ");
  }
}

// The grouped Q6_K rows likewise: one full group of 8 super-blocks and a partial one of 3.
TEST(VulkanOps, Q6_KGroupingMovesEveryByte) {
  std::vector<uint8_t> storage;
  const int rows = 3, cols = 11 * 256;
  const Weight w = make_weight(TensorType::Q6_K, rows, cols, 43, storage);
  const uint32_t out_row = vk::q6_k_grouped_row_bytes(cols);
  ASSERT_EQ(out_row, vk::kQ6GroupBytes + vk::kQ6GroupScaleBytes + 3 * vk::kQ6GroupBlockBytes);
  ASSERT_EQ(out_row % 16, 0u);
  std::vector<uint8_t> out(size_t(rows) * out_row, 0xAB);
  vk::q6_k_to_grouped(w.data, out.data(), rows, cols);
  std::vector<bool> used(out.size(), false);
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < cols / 256; ++b) {
      const uint8_t* block = w.data + (size_t(r) * (cols / 256) + size_t(b)) * sizeof(BlockQ6_K);
      const size_t group = size_t(r) * out_row + size_t(b / 8) * vk::kQ6GroupBytes;
      for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(out[group + 2 * size_t(b % 8) + i], block[offsetof(BlockQ6_K, d) + i]) << r << " " << b;
        used[group + 2 * size_t(b % 8) + i] = true;
      }
      for (size_t i = 0; i < vk::kQ6GroupBlockBytes; ++i) {  // ql, qh, scales as stored
        const size_t at = group + vk::kQ6GroupScaleBytes + vk::kQ6GroupBlockBytes * size_t(b % 8) + i;
        EXPECT_EQ(out[at], block[i]) << r << " " << b << " " << i;
        used[at] = true;
      }
    }
  }
  expect_zero_padding(out, used, "");
}

// Scale and min of sub-block j of a Q4_K / Q5_K block's 12 packed bytes, as spec §4.3 writes
// get_scale_min (the oracle of the grouping below).
void get_scale_min_k4(int j, const uint8_t* q, int& sc, int& mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// The grouped Q4_K / Q5_K rows: one full group of 8 super-blocks and a partial one of 3; d,
// dmin, quants and fifth bits moved, the packed 6-bit scales and mins unpacked (checked
// against the spec's get_scale_min, tensor/quant_k.h).
TEST(VulkanOps, K4GroupingUnpacksScales) {
  for (TensorType type : {TensorType::Q4_K, TensorType::Q5_K}) {
    std::vector<uint8_t> storage;
    const int rows = 3, cols = 11 * 256;
    const Weight w = make_weight(type, rows, cols, 47, storage);
    const bool five = type == TensorType::Q5_K;
    const uint32_t sb = vk::k4_block_bytes(type), group_bytes = vk::kK4GroupHeaderBytes + 8 * sb;
    const uint32_t out_row = vk::k4_grouped_row_bytes(type, cols);
    ASSERT_EQ(out_row, group_bytes + vk::kK4GroupHeaderBytes + 3 * sb);
    ASSERT_EQ(out_row % 16, 0u);
    std::vector<uint8_t> out(size_t(rows) * out_row, 0xAB);
    vk::k4_to_grouped(type, w.data, out.data(), rows, cols);
    std::vector<bool> used(out.size(), false);
    const size_t block_bytes = type_info(type).block_bytes;
    const size_t scales = five ? offsetof(BlockQ5_K, scales) : offsetof(BlockQ4_K, scales);
    const size_t qs = five ? offsetof(BlockQ5_K, qs) : offsetof(BlockQ4_K, qs);
    for (int r = 0; r < rows; ++r) {
      for (int b = 0; b < cols / 256; ++b) {
        const uint8_t* block = w.data + (size_t(r) * (cols / 256) + size_t(b)) * block_bytes;
        const size_t group = size_t(r) * out_row + size_t(b / 8) * group_bytes, j = size_t(b % 8);
        const std::string what = std::string(type_name(type)) + " " + std::to_string(r) + " " + std::to_string(b);
        const auto expect_at = [&](size_t at, uint8_t want, const std::string& field) {
          EXPECT_EQ(out[at], want) << what << " " << field;
          used[at] = true;
        };
        const size_t header = group + vk::kK4HeaderBytes * j;
        for (size_t i = 0; i < 4; ++i) expect_at(header + i, block[i], "d, dmin");
        for (uint32_t i = 0; i < 8; ++i) {
          int sc = 0, mn = 0;
          get_scale_min_k4(int(i), block + scales, sc, mn);
          expect_at(header + 4 + 2 * i, uint8_t(sc), "scale " + std::to_string(i));
          expect_at(header + 5 + 2 * i, uint8_t(mn), "min " + std::to_string(i));
        }
        const size_t quants = group + vk::kK4GroupHeaderBytes + sb * j;
        for (size_t i = 0; i < 128; ++i) expect_at(quants + i, block[qs + i], "qs");
        if (five) {
          for (size_t i = 0; i < 32; ++i) expect_at(quants + 128 + i, block[offsetof(BlockQ5_K, qh) + i], "qh");
        }
      }
    }
    expect_zero_padding(out, used, std::string(type_name(type)) + " ");
  }
}

// A matrix split by rows over several buffers (as large matrices are on real devices).
TEST(VulkanOps, MatrixSplitOverBuffers) {
  REQUIRE_DEVICE();
  for (TensorType type : {TensorType::Q8_0, TensorType::Q6_K}) {
    const int64_t cols = 256, rows = 51;
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, rows, cols, 9, bytes);
    const uint64_t limit = w.row_stride() * 20;  // 20 rows a buffer: three pieces
    for (int T : {1, 5, 66}) {
      const std::vector<float> x = random_vector(size_t(T * cols), -1.0f, 1.0f, 10);
      const std::vector<float> want = reference_product(w, x, T);
      const MatPath path = T <= int(vk::Kernels::matvec_max_tokens) ? MatPath::matvec : MatPath::matmul;
      const std::vector<float> got = vk->matrix(w, x, T, path, vk::kActNone, {}, limit);
      expect_close(got, want, 1e-5, std::string(type_name(type)) + " split, T=" + std::to_string(T));
      EXPECT_EQ(vk->guards_broken(), 0u);
      if (path == MatPath::matmul) {  // the three pieces' tiles, K split two ways
        const std::vector<float> halves = vk->matrix(w, x, T, path, vk::kActNone, {}, limit, {}, 1.0f, 2);
        expect_close(halves, want, 1e-5, std::string(type_name(type)) + " split over buffers and K");
        EXPECT_EQ(vk->guards_broken(), 0u);
        EXPECT_FALSE(vk->runs_differ());
      }
    }
  }
}

// Gathered activation rows (the head computes logits only for the rows that want them).
TEST(VulkanOps, MatrixGatheredRows) {
  REQUIRE_DEVICE();
  const int64_t rows = 33, cols = 64;
  std::vector<uint8_t> bytes;
  const Weight w = make_weight(TensorType::Q4_0, rows, cols, 12, bytes);
  const int T = 6;
  const std::vector<float> x = random_vector(size_t(T * cols), -1.0f, 1.0f, 13);
  const std::vector<uint32_t> gather = {5, 0, 3};
  const std::vector<float> all = reference_product(w, x, T);
  std::vector<float> want;
  for (uint32_t g : gather) want.insert(want.end(), all.begin() + g * rows, all.begin() + (g + 1) * rows);
  for (MatPath path : {MatPath::matvec, MatPath::matmul}) {
    const std::vector<float> got = vk->matrix(w, x, T, path, vk::kActNone, {}, 0, gather);
    expect_close(got, want, 1e-5, path == MatPath::matvec ? "gather matvec" : "gather matmul");
    EXPECT_EQ(vk->guards_broken(), 0u);
  }
}

// Embedding rows of every type, and ln0 over them.
TEST(VulkanOps, EmbedEveryTypeMatchesReference) {
  REQUIRE_DEVICE();
  const std::vector<int32_t> tokens = {0, 39, 17, 17, 5};
  for (TensorType type : kAllTypes) {
    const int64_t C = 256, V = 40;
    std::vector<uint8_t> bytes;
    const Weight table = make_weight(type, V, C, 21 + uint64_t(type), bytes);
    const std::vector<float> ln_w = random_vector(size_t(C), 0.5f, 1.5f, 22);
    const std::vector<float> ln_b = random_vector(size_t(C), -0.2f, 0.2f, 23);
    std::vector<float> want_emb(tokens.size() * size_t(C)), want_h(want_emb.size());
    for (size_t t = 0; t < tokens.size(); ++t) ref::weight_row(table, tokens[t], want_emb.data() + t * size_t(C));
    ref::layer_norm(want_emb.data(), ln_w.data(), ln_b.data(), int64_t(tokens.size()), C, 1e-5f, want_h.data());
    std::vector<float> emb, h;
    vk->embed(table, tokens, ln_w, ln_b, 1e-5f, emb, h);
    const std::string what(type_name(type));
    expect_close(emb, want_emb, 1e-6, what + " embed");
    expect_close(h, want_h, 1e-5, what + " embed.ln");
    EXPECT_EQ(vk->guards_broken(), 0u) << what;
  }
}

// Three sequences of 3, 1 and 4 rows in slots 2, 0, 1 (spec pitfall P10).
const OpSeq kSeqs[] = {{2, 3}, {0, 1}, {1, 4}};
constexpr int kSlots = 3;

// One ln_mix case against ref::layer_norm and ref::token_shift_lerp, per sequence (slots
// below kSlots); mix16: the mixes as float16 (prefill steps on tensor cores).
void check_ln_mix(OpRunner* vk, int C, int nmix, std::span<const OpSeq> seqs, bool mix16 = false) {
  int T = 0;
  for (const OpSeq& s : seqs) T += s.rows;
  OpRunner::LnMixIo io;
  io.h_in = random_vector(size_t(T * C), -3.0f, 3.0f, 31);
  if (nmix != 1) io.delta = random_vector(size_t(T * C), -1.0f, 1.0f, 32);
  io.ln_w = random_vector(size_t(C), 0.5f, 1.5f, 33);
  io.ln_b = random_vector(size_t(C), -0.3f, 0.3f, 34);
  io.mu = random_vector(size_t(nmix * C), 0.0f, 1.0f, 35);
  // A state slot: [att shift C][ffn shift C][something else C]; the shift read is the
  // second vector, the commit goes to the first.
  io.slot_stride = uint32_t(3 * C);
  io.shift_off = uint32_t(C);
  io.commit_off = 0;
  io.state = random_vector(size_t(kSlots * 3 * C), -1.0f, 1.0f, 36);
  if (nmix == 0) io.commit_src = random_vector(size_t(T * C), -1.0f, 1.0f, 37);
  const std::vector<float> state_before = io.state;
  const OpRunner::LnMixIo in = io;
  vk->ln_mix(io, C, nmix, seqs, mix16);
  const std::string what = "C=" + std::to_string(C) + " nmix=" + std::to_string(nmix) + " T=" + std::to_string(T) +
                           (mix16 ? " float16 mixes" : "");
  EXPECT_EQ(vk->guards_broken(), 0u) << what;

  std::vector<float> h(in.h_in);
  for (size_t i = 0; i < h.size() && !in.delta.empty(); ++i) h[i] += in.delta[i];
  std::vector<float> xln(h.size());
  ref::layer_norm(h.data(), in.ln_w.data(), in.ln_b.data(), T, C, in.eps, xln.data());
  expect_close(io.h_out, h, 1e-7, "h_out " + what);
  expect_close(io.xln, xln, 1e-5, "xln " + what);
  std::vector<float> want_mix(size_t(nmix * T * C)), want_state = state_before;
  int row = 0;
  for (const OpSeq& s : seqs) {
    const float* shift = state_before.data() + size_t(s.slot) * 3 * C + C;
    for (int m = 0; m < nmix; ++m) {
      ref::token_shift_lerp(xln.data() + size_t(row) * C, shift, in.mu.data() + size_t(m) * C, s.rows, C,
                            want_mix.data() + (size_t(m) * T + size_t(row)) * C);
    }
    if (!in.commit_src.empty()) {
      const float* last = in.commit_src.data() + size_t(row + s.rows - 1) * C;
      std::copy(last, last + C, want_state.begin() + std::ptrdiff_t(size_t(s.slot) * 3 * C));
    }
    row += s.rows;
  }
  expect_close(io.mix, want_mix, mix16 ? 1e-3 : 1e-5, "mix " + what);
  EXPECT_EQ(io.state, want_state) << "state after " << what;
}

// C = 320 is not a multiple of the kernel's 256-channel workgroups, and C = 4352 is wider
// than the 4096 channels the kernel keeps in registers.
TEST(VulkanOps, LnMixMatchesReference) {
  REQUIRE_DEVICE();
  for (const auto& [C, nmix] : {std::pair{320, 6}, std::pair{320, 1}, std::pair{320, 0}, std::pair{4352, 6}}) {
    check_ln_mix(vk, C, nmix, kSeqs);
  }
}

// Prefill steps: from Kernels::ln_mix_row_min_rows rows a workgroup takes a whole row (C up
// to 4096; 4352 keeps the blocks), with float32 and float16 mixes; float16 mixes also with
// a workgroup per 256 channels.
TEST(VulkanOps, LnMixPrefillRowsMatchReference) {
  REQUIRE_DEVICE();
  const OpSeq many[] = {{2, 100}, {0, 1}, {1, 40}};
  static_assert(100 + 1 + 40 >= vk::Kernels::ln_mix_row_min_rows);
  for (const int C : {320, 2560, 4352}) {
    for (const int nmix : {6, 1, 0}) {
      check_ln_mix(vk, C, nmix, many);
      if (nmix > 0) check_ln_mix(vk, C, nmix, many, true);
    }
  }
  for (const int nmix : {6, 1}) check_ln_mix(vk, 320, nmix, kSeqs, true);
}

// Decode: one row per sequence (each reads the shift state and commits), at the 0.1B and
// 2.9B widths (3 and 10 workgroups per row).
TEST(VulkanOps, LnMixDecodeRowsMatchReference) {
  REQUIRE_DEVICE();
  const OpSeq one[] = {{1, 1}};
  const OpSeq two[] = {{2, 1}, {0, 1}};
  for (const int C : {768, 2560}) {
    for (const int nmix : {6, 1, 0}) {
      check_ln_mix(vk, C, nmix, one);
      check_ln_mix(vk, C, nmix, two);
    }
  }
}

// Random WKV inputs for T rows of C channels (layer 0: no value residual, v_first written).
OpRunner::WkvIo wkv_inputs(int C, int N, int T, bool layer0) {
  const size_t n = size_t(T) * size_t(C), stride = size_t(2 * C + C * N);
  OpRunner::WkvIo io;
  io.r = random_vector(n, -1.0f, 1.0f, 41);
  io.k = random_vector(n, -1.0f, 1.0f, 42);
  io.v = random_vector(n, -1.0f, 1.0f, 43);
  io.a = random_vector(n, 0.0f, 1.0f, 44);
  io.decay = random_vector(n, 0.55f, 1.0f, 45);
  io.g = random_vector(n, -1.0f, 1.0f, 46);
  io.xa = random_vector(n, -1.0f, 1.0f, 47);
  if (!layer0) {
    io.nu = random_vector(n, 0.0f, 1.0f, 48);
    io.v_first = random_vector(n, -1.0f, 1.0f, 49);
  }
  io.k_k = random_vector(size_t(C), 0.5f, 1.5f, 50);
  io.k_a = random_vector(size_t(C), 0.0f, 1.0f, 51);
  io.r_k = random_vector(size_t(C), -0.5f, 0.5f, 52);
  io.lnx_w = random_vector(size_t(C), 0.5f, 1.5f, 53);
  io.lnx_b = random_vector(size_t(C), -0.2f, 0.2f, 54);
  io.state = random_vector(size_t(kSlots) * stride, -0.5f, 0.5f, 55);
  return io;
}

// The outputs of a WKV run on `in` by the spec's per-token formulas built from the reference
// ops (spec §2.2 steps 6, 9-13 and §2.3).
OpRunner::WkvIo wkv_reference(const OpRunner::WkvIo& in, int C, int N, std::span<const OpSeq> seqs) {
  const int H = C / N;
  const size_t n = in.r.size(), stride = size_t(2 * C + C * N);
  const int T = int(n / size_t(C));
  OpRunner::WkvIo out = in;
  std::vector<float>& v = out.v_mixed;
  v = in.v;
  std::vector<float> kk(n), alpha(n), beta(n);
  out.k_mod.resize(n);
  out.kk.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = i % size_t(C);
    if (!in.nu.empty()) v[i] = in.v[i] + in.nu[i] * (in.v_first[i] - in.v[i]);
    kk[i] = in.k[i] * in.k_k[c];
    out.k_mod[i] = in.k[i] * (1.0f + (in.a[i] - 1.0f) * in.k_a[c]);
  }
  if (in.nu.empty()) out.v_first = in.v;
  ref::l2_normalize_heads(kk.data(), T, C, N, 1e-12f, out.kk.data());
  for (size_t i = 0; i < n; ++i) {
    alpha[i] = -out.kk[i];
    beta[i] = out.kk[i] * in.a[i];
  }
  out.wkv.assign(n, 0.0f);
  int row = 0;
  for (const OpSeq& s : seqs) {
    const size_t o = size_t(row) * C;
    float* S = out.state.data() + size_t(s.slot) * stride;
    ref::wkv7(S + 2 * C, in.r.data() + o, in.decay.data() + o, out.k_mod.data() + o, v.data() + o, alpha.data() + o,
              beta.data() + o, s.rows, H, N, out.wkv.data() + o);
    std::copy(in.xa.begin() + std::ptrdiff_t(o + size_t(s.rows - 1) * C),
              in.xa.begin() + std::ptrdiff_t(o + size_t(s.rows) * C), S);  // attention shift commit
    row += s.rows;
  }
  out.lnx.resize(n);
  out.out.resize(n);
  ref::group_norm(out.wkv.data(), in.lnx_w.data(), in.lnx_b.data(), T, C, N, in.gn_eps, out.lnx.data());
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      double bonus = 0;
      for (int j = 0; j < N; ++j) {
        const size_t i = size_t(t) * C + size_t(h * N + j);
        bonus += double(in.r[i]) * out.k_mod[i] * in.r_k[size_t(h * N + j)];
      }
      for (int j = 0; j < N; ++j) {
        const size_t i = size_t(t) * C + size_t(h * N + j);
        out.lnx[i] = float(out.lnx[i] + bonus * v[i]);
        out.out[i] = out.lnx[i] * in.g[i];
      }
    }
  }
  return out;
}

// The outputs both WKV forms (plain and LoRA-folded) write, against the reference.
void expect_wkv_outputs(const OpRunner::WkvIo& io, const OpRunner::WkvIo& want, bool layer0, const std::string& what) {
  expect_close(io.k_mod, want.k_mod, 1e-6, what + "k_mod");
  expect_close(io.v_mixed, want.v_mixed, 1e-6, what + "v");
  expect_close(io.wkv, want.wkv, 1e-5, what + "wkv");
  expect_close(io.out, want.out, 1e-5, what + "out");
  expect_close(io.state, want.state, 1e-5, what + "state");
  if (layer0) expect_close(io.v_first, want.v_first, 0, what + "v_first");
}

// One WKV run (fused, or the prefill form with scan split `shape`) against the reference,
// for layer 0 (v_first written) and a later layer (value residual read).
void check_wkv(OpRunner* vk, int C, int N, std::span<const OpSeq> seqs, bool prefill, vk::WkvScanShape shape = {},
               bool out16 = false) {
  int T = 0;
  for (const OpSeq& s : seqs) T += s.rows;
  for (bool layer0 : {true, false}) {
    OpRunner::WkvIo io = wkv_inputs(C, N, T, layer0);
    const OpRunner::WkvIo want = wkv_reference(io, C, N, seqs);
    vk->wkv(io, C, N, seqs, prefill, shape, out16);
    const std::string what = std::string(layer0 ? "layer 0" : "layer 1") + (prefill ? " scan" : " fused") +
                             (out16 ? " float16 out" : "") + " N=" + std::to_string(N) + " T=" + std::to_string(T) +
                             " rows=" + std::to_string(shape.rows) + " lanes=" + std::to_string(shape.lanes) +
                             " chunk=" + std::to_string(shape.chunk) + " ";
    EXPECT_EQ(vk->guards_broken(), 0u) << what;
    expect_close(io.kk, want.kk, 1e-5, what + "kk");
    expect_close(io.lnx, want.lnx, 1e-5, what + "lnx");
    if (out16) {  // the rest as float32; out rounded to float16
      expect_close(io.out, want.out, 1e-3, what + "out");
      io.out = want.out;
    }
    expect_wkv_outputs(io, want, layer0, what);
  }
}

// The fused WKV kernel: three short sequences (3, 1, 4 rows) in slots 2, 0, 1.
TEST(VulkanOps, WkvMatchesReference) {
  REQUIRE_DEVICE();
  check_wkv(vk, 128, 64, kSeqs, false);
}

// The prefill form (prep, scan, post): sequences of 37, 1 and 20 rows (several chunks, a
// partial last one, a single token), the backend's split, and forced ones that cover each
// lane count, row count and chunk size the scan takes, and head sizes 32 and 64.
TEST(VulkanOps, WkvPrefillMatchesReference) {
  REQUIRE_DEVICE();
  const OpSeq seqs[] = {{2, 37}, {0, 1}, {1, 20}};
  check_wkv(vk, 128, 64, seqs, true);
  const uint32_t sg = vk->context().limits().subgroup_size;
  for (const vk::WkvScanShape shape : {vk::WkvScanShape{16, 8, 8}, vk::WkvScanShape{32, 8, 4},
                                       vk::WkvScanShape{8, 4, 16}, vk::WkvScanShape{64, 2, 1}}) {
    if (shape.lanes > sg) continue;
    check_wkv(vk, 128, 64, seqs, true, shape);
  }
  check_wkv(vk, 96, 32, seqs, true);
  check_wkv(vk, 96, 32, seqs, true, vk::WkvScanShape{32, 4, 16});
  check_wkv(vk, 128, 64, seqs, true, {}, true);  // the output as float16 (prefill on tensor cores)
}

// The folded WKV (the LoRA up-projections inside the fused kernel) against the reference:
// decay, a, g and nu from ref::matmul on the same encoded up matrices and the matrix
// epilogues' formulas, then the WKV reference; layer 0 and a later layer.
struct LoraCase {
  int C, N;
  std::vector<OpSeq> seqs;
  TensorType w_type, type;       // W2's type; A2, G2 and V2's
  std::array<int64_t, 4> ranks;  // Dw, Da, Dg, Dv
  uint32_t invocations;          // 0: the backend's default
};

void check_wkv_lora(OpRunner* vk, const LoraCase& lc) {
  const int C = lc.C, N = lc.N;
  int T = 0;
  for (const OpSeq& s : lc.seqs) T += s.rows;
  std::array<std::vector<uint8_t>, 4> bytes;
  std::array<Weight, 4> up;
  for (size_t m = 0; m < 4; ++m) up[m] = make_weight(m == 0 ? lc.w_type : lc.type, C, lc.ranks[m], 70 + m, bytes[m]);
  for (bool layer0 : {true, false}) {
    OpRunner::WkvIo io = wkv_inputs(C, N, T, layer0);
    OpRunner::LoraIo lora;
    lora.w_mid = random_vector(size_t(T * lc.ranks[0]), -1.0f, 1.0f, 61);  // tanh outputs
    lora.a_mid = random_vector(size_t(T * lc.ranks[1]), -1.5f, 1.5f, 62);
    lora.g_mid = random_vector(size_t(T * lc.ranks[2]), 0.0f, 1.0f, 63);  // sigmoid outputs
    lora.w2 = &up[0], lora.a2 = &up[1], lora.g2 = &up[2], lora.v2 = &up[3];
    lora.w0 = random_vector(size_t(C), -1.0f, 1.0f, 64);
    lora.a0 = random_vector(size_t(C), -1.0f, 1.0f, 65);
    if (!layer0) {
      lora.v_mid = random_vector(size_t(T * lc.ranks[3]), -1.5f, 1.5f, 66);
      lora.v0 = random_vector(size_t(C), -1.0f, 1.0f, 67);
    }
    const auto up_proj = [&](const Weight& w, const std::vector<float>& mid, const std::vector<float>& bias,
                             uint32_t act) {
      return epilogue_reference(reference_product(w, mid, T), bias.empty() ? std::vector<float>(size_t(C), 0.0f) : bias,
                                act);
    };
    io.decay = up_proj(up[0], lora.w_mid, lora.w0, vk::kActDecay);
    io.a = up_proj(up[1], lora.a_mid, lora.a0, vk::kActSigmoid);
    io.g = up_proj(up[2], lora.g_mid, {}, vk::kActNone);
    if (!layer0) io.nu = up_proj(up[3], lora.v_mid, lora.v0, vk::kActSigmoid);
    const OpRunner::WkvIo want = wkv_reference(io, C, N, lc.seqs);
    vk->wkv_lora(io, lora, C, N, lc.seqs, lc.invocations);
    const std::string what = std::string(layer0 ? "layer 0" : "layer 1") + " C=" + std::to_string(C) +
                             " N=" + std::to_string(N) + " T=" + std::to_string(T) + " " +
                             std::string(type_name(lc.w_type)) + "/" + std::string(type_name(lc.type)) +
                             " invocations=" + std::to_string(lc.invocations) + " ";
    EXPECT_EQ(vk->guards_broken(), 0u) << what;
    expect_wkv_outputs(io, want, layer0, what);
  }
}

// The folded WKV: the 0.1B ranks (64/64/128/32) with F32 W2 and F16 others, as in real
// models, over three short sequences and one decode row; head size 32 with ranks that leave
// partial quad runs and odd partial-sum rows (24/40/56/16), sequences of 1-2 rows, F32, BF16
// and F16 matrices, and 48 invocations (fewer than the outputs: several per invocation);
// Q8_0 A2, G2, V2 (as llama.cpp quantises them), G2 with a full group of 256 columns and a
// partial one.
TEST(VulkanOps, WkvLoraFoldMatchesReference) {
  REQUIRE_DEVICE();
  const std::vector<OpSeq> short_seqs = {{2, 1}, {0, 2}, {1, 1}};
  const LoraCase cases[] = {
      {128, 64, {kSeqs, kSeqs + 3}, TensorType::F32, TensorType::F16, {64, 64, 128, 32}, 0},
      {128, 64, {{1, 1}}, TensorType::F32, TensorType::F16, {64, 64, 128, 32}, 0},
      {96, 32, short_seqs, TensorType::F32, TensorType::F32, {24, 40, 56, 16}, 0},
      {96, 32, short_seqs, TensorType::BF16, TensorType::F16, {24, 40, 56, 16}, 0},
      {96, 32, short_seqs, TensorType::F32, TensorType::BF16, {24, 40, 56, 16}, 48},
      {96, 32, short_seqs, TensorType::F32, TensorType::Q8_0, {24, 32, 288, 64}, 0},
  };
  for (const LoraCase& lc : cases) check_wkv_lora(vk, lc);
}

// The folded WKV's shapes: quads and shared memory at the 2.9B shape (head size 64, ranks
// 96/96/320/64, F32 W2; F16 or Q8_0 others: a grouped Q8_0 row of 320 has 17 + 5 quads), and
// the shapes the backend refuses (then the layer keeps its matrix stage): a k-quant up
// matrix, a rank not a multiple of 8 (Q8_0: of 32), fewer invocations than channels or more
// than 256, more quads than an invocation may hold.
TEST(VulkanOps, WkvLoraShapes) {
  REQUIRE_DEVICE();
  const vk::Kernels& k = vk->kernels();
  vk::WkvLoraShape s{.head_size = 64,
                     .invocations = vk::Kernels::wkv_lora_invocations(64),
                     .types = {TensorType::F32, TensorType::F16, TensorType::F16, TensorType::F16},
                     .ranks = {96, 96, 320, 64}};
  EXPECT_EQ(s.invocations, 256u);
  EXPECT_EQ(s.quads(), 7u + 4u + 11u + 2u);  // rows of 24, 12, 40, 8 quads: 10, 21, 6, 32 a pass
  EXPECT_EQ(s.shared_bytes(), 4u * (64u * (25u + 13u + 41u + 9u) + 9u * 64u) + 512u);
  if (s.shared_bytes() <= vk->context().limits().max_shared_bytes) {
    EXPECT_EQ(k.wkv_lora_unfit(s), "");
  }
  const auto refused = [&](auto change) {
    vk::WkvLoraShape t = s;
    change(t);
    return !k.wkv_lora_unfit(t).empty();
  };
  vk::WkvLoraShape q8 = s;
  q8.types = {TensorType::F32, TensorType::Q8_0, TensorType::Q8_0, TensorType::Q8_0};
  EXPECT_EQ(q8.quads(), 7u + 2u + 6u + 2u);  // rows of 7, 22 and 5 quads: 36, 11, 51 a pass
  EXPECT_EQ(q8.shared_bytes(), 4u * (64u * (25u + 7u + 23u + 5u) + 9u * 64u) + 512u);
  EXPECT_TRUE(refused([](vk::WkvLoraShape& t) { t.types[2] = TensorType::Q4_K; }));
  EXPECT_TRUE(refused([](vk::WkvLoraShape& t) { t.ranks[1] = 92; }));
  EXPECT_TRUE(refused([](vk::WkvLoraShape& t) {
    t.types[3] = TensorType::Q8_0;
    t.ranks[3] = 48;
  }));
  EXPECT_TRUE(refused([](vk::WkvLoraShape& t) { t.invocations = 32; }));
  EXPECT_TRUE(refused([](vk::WkvLoraShape& t) { t.invocations = 512; }));
  EXPECT_TRUE(refused([](vk::WkvLoraShape& t) { t.invocations = 128; }));  // 46 quads
}

}  // namespace
}  // namespace rwkv
