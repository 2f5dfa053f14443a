// The fast CPU backend's ReLU^2-sparse FFN value product (backend/cpu/ffn_sparse.h) against
// the reference dense product on the same encoded bytes: every type with a transposed copy
// (F32, F16, BF16, Q8_0, Q4_K, Q5_K, Q6_K),
// odd shapes, one and several tokens, hidden vectors from all zero to dense, the same bits
// on any thread count; its choice between sparse and dense; the copy's size.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/ffn_sparse.h"
#include "common/error.h"
#include "common/threadpool.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

using testing::hidden_vector;
using testing::make_weight;
using testing::reference_product;
using testing::rel_l2;

constexpr TensorType kSparseTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,
                                       TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

// T hidden rows of F units, token t with the share zeros[t % 3] of zero units.
std::vector<float> hidden_rows(int64_t T, int64_t F, const double* zeros, uint64_t seed, bool blocks) {
  std::vector<float> h;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<float> row = hidden_vector(size_t(F), zeros[t % 3], seed + uint64_t(t), blocks);
    h.insert(h.end(), row.begin(), row.end());
  }
  return h;
}

// Lossless copy, float32 sums: the product is the reference's up to rounding, whatever the
// thread count (1, 3, 8) and bit-identical across them. C: even (Q4_K packs two output rows a
// byte) and not a multiple of the 8-wide vectors (202, 14), of the 16-column ranges (2056), or
// below one range (14); F: one super-block of 256 to four.
TEST(CpuSparseFfn, MatchesReferenceOnEveryThreadCount) {
  struct Shape {
    int64_t C, F;
  };
  for (const TensorType type : kSparseTypes) {
    for (const Shape s : {Shape{202, 1024}, Shape{40, 256}, Shape{14, 512}, Shape{2056, 768}}) {
      std::vector<uint8_t> bytes;
      const Weight w = make_weight(type, s.C, s.F, 70 + uint64_t(s.C), bytes);
      const SparseFfnValue sparse(w);
      for (const int64_t T : {1, 3}) {
        for (int pattern = 0; pattern < 3; ++pattern) {
          const double zeros[3][3] = {{0.95, 0.98, 0.99}, {1.0, 1.0, 1.0}, {0.85, 0.98, 0.99}};
          std::vector<float> h = hidden_rows(T, s.F, zeros[pattern], 80 + uint64_t(pattern), pattern == 2);
          if (pattern == 1) h[size_t(s.F) - 1] = 2.5f;  // one non-zero unit, the last of token 0
          const std::vector<float> want = reference_product(w, h, int(T));
          const std::string what = std::string(type_name(type)) + " C=" + std::to_string(s.C) +
                                   " F=" + std::to_string(s.F) + " T=" + std::to_string(T) +
                                   " pattern=" + std::to_string(pattern);
          std::vector<float> first;
          for (const int threads : {1, 3, 8}) {
            ThreadPool pool(threads);
            std::vector<float> y(want.size(), NAN);
            ASSERT_TRUE(sparse.multiply(pool, h.data(), T, y.data())) << what;
            EXPECT_LE(rel_l2(y, want), 1e-5) << what << " threads=" << threads;
            if (first.empty())
              first = y;
            else
              EXPECT_EQ(y, first) << what << ": " << threads << " threads sum differently";
          }
        }
      }
    }
  }
}

// Where the non-zero units' rows (and their scale rows) are more than kSparseShare of the
// dense product's bytes, multiply declines and leaves y alone: random weights' half of the
// units, or several tokens of a trained model's share.
TEST(CpuSparseFfn, DeclinesWhenDenseReadsLess) {
  ThreadPool pool(2);
  for (const TensorType type : kSparseTypes) {
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, 64, 512, 5, bytes);
    const SparseFfnValue sparse(w);
    const double half[3] = {0.5, 0.5, 0.5}, trained[3] = {0.88, 0.88, 0.88};
    for (const auto& [T, zeros] : {std::pair{int64_t(1), half}, std::pair{int64_t(8), trained}}) {
      const std::vector<float> h = hidden_rows(T, 512, zeros, 6, false);
      std::vector<float> y(size_t(T) * 64, 7.0f);
      EXPECT_FALSE(sparse.multiply(pool, h.data(), T, y.data())) << type_name(type) << " T=" << T;
      EXPECT_EQ(y, std::vector<float>(y.size(), 7.0f)) << type_name(type);
    }
    const std::vector<float> h = hidden_rows(1, 512, trained, 7, false);
    std::vector<float> y(64);
    EXPECT_TRUE(sparse.multiply(pool, h.data(), 1, y.data())) << type_name(type);
  }
}

// A NaN or infinite unit reaches every output, as in the dense product.
TEST(CpuSparseFfn, NonFiniteUnitsPropagate) {
  ThreadPool pool(2);
  for (const TensorType type : kSparseTypes) {
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, 72, 256, 9, bytes);
    const SparseFfnValue sparse(w);
    std::vector<float> h(256, 0.0f);
    h[3] = 1.0f;
    h[100] = NAN;
    std::vector<float> y(72);
    ASSERT_TRUE(sparse.multiply(pool, h.data(), 1, y.data()));
    for (float v : y) EXPECT_TRUE(std::isnan(v)) << type_name(type);
  }
}

// The copy holds the matrix's quants once and its scales as stored (Q8_0: a float16 a block of
// 32 and output row; Q4_K, Q5_K: a scale and a min byte a sub-block of 32, float16 d and dmin a
// super-block of 256; Q6_K: an int8 scale a group of 16, a float16 d a super-block); types
// without a transposed layout, and Q4_K with an odd row count, are refused by name.
TEST(CpuSparseFfn, CopySizeAndSupportedTypes) {
  for (const TensorType type : kSparseTypes) {
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, 48, 512, 3, bytes);
    EXPECT_TRUE(SparseFfnValue::supports(type, 48));
    EXPECT_EQ(SparseFfnValue(w).bytes(), SparseFfnValue::copy_bytes(type, 48, 512)) << type_name(type);
  }
  EXPECT_EQ(SparseFfnValue::copy_bytes(TensorType::Q8_0, 48, 512), 48u * 512u + 48u * 16u * 2u);
  EXPECT_EQ(SparseFfnValue::copy_bytes(TensorType::BF16, 48, 512), 48u * 512u * 2u);
  EXPECT_EQ(SparseFfnValue::copy_bytes(TensorType::Q4_K, 48, 512), 48u * 256u + 48u * 16u * 2u + 48u * 2u * 4u);
  EXPECT_EQ(SparseFfnValue::copy_bytes(TensorType::Q6_K, 48, 512), 48u * 512u + 48u * 32u + 48u * 2u * 2u);
  EXPECT_FALSE(SparseFfnValue::supports(TensorType::Q4_K, 47));
  for (const auto& [type, rows] : {std::pair{TensorType::Q4_0, 8}, std::pair{TensorType::Q5_1, 8},
                                   std::pair{TensorType::Q4_1, 8}, std::pair{TensorType::Q4_K, 7}}) {
    EXPECT_FALSE(SparseFfnValue::supports(type, rows));
    std::vector<uint8_t> bytes;
    const Weight w = make_weight(type, rows, 256, 4, bytes);
    try {
      const SparseFfnValue sparse(w);
      ADD_FAILURE() << type_name(type) << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(w.name), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace rwkv
