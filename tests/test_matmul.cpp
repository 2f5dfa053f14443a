// matmul() against a double-precision reference built from dequantize_row, for every
// weight type, odd shapes, several token counts and thread counts.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "common/threadpool.h"
#include "tensor/blocks.h"
#include "tensor/matmul.h"
#include "tensor/quant.h"

namespace rwkv {

// gtest prints parameters with this instead of their bytes.
void PrintTo(TensorType type, std::ostream* os) { *os << type_name(type); }

namespace {

const TensorType kTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0, TensorType::Q4_0,
                             TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1, TensorType::Q4_K, TensorType::Q5_K,
                             TensorType::Q6_K, TensorType::Q2_K, TensorType::Q3_K};

// Weight bytes for rows x cols: quantised from random floats where quantize_row can encode
// the type, otherwise random block bytes with sane f16 scale fields.
std::vector<uint8_t> make_weights(TensorType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t stride = row_bytes(type, cols);
  std::vector<uint8_t> w(stride * size_t(rows));
  if (can_quantize(type)) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const float row_scale = 0.02f * float(1 + r % 5);
      for (float& v : row) v = dist(rng) * row_scale;
      quantize_row(type, row.data(), w.data() + size_t(r) * stride, cols);
    }
    return w;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : w) b = uint8_t(byte(rng));
  // Q2_K / Q3_K: make the f16 scales small and finite.
  const uint16_t d = f32_to_f16(0.01f), dmin = f32_to_f16(0.005f);
  for (size_t off = 0; off < w.size(); off += size_t(type_info(type).block_bytes)) {
    if (type == TensorType::Q2_K) {
      memcpy(w.data() + off + offsetof(BlockQ2_K, d), &d, 2);
      memcpy(w.data() + off + offsetof(BlockQ2_K, dmin), &dmin, 2);
    } else {
      memcpy(w.data() + off + offsetof(BlockQ3_K, d), &d, 2);
    }
  }
  return w;
}

// Random block bytes with every scale field overwritten by a small finite f16 value:
// exercises bit patterns the quantisers never produce (e.g. Q8_0 level -128).
std::vector<uint8_t> random_block_bytes(TensorType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint8_t> w(row_bytes(type, cols) * size_t(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : w) b = uint8_t(byte(rng));
  const size_t block = size_t(type_info(type).block_bytes);
  std::vector<size_t> scale_offsets;  // f16 fields within a block
  switch (type) {
    case TensorType::Q4_0:
      scale_offsets = {offsetof(BlockQ4_0, d)};
      break;
    case TensorType::Q4_1:
      scale_offsets = {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};
      break;
    case TensorType::Q5_0:
      scale_offsets = {offsetof(BlockQ5_0, d)};
      break;
    case TensorType::Q5_1:
      scale_offsets = {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};
      break;
    case TensorType::Q8_0:
      scale_offsets = {offsetof(BlockQ8_0, d)};
      break;
    case TensorType::Q4_K:
      scale_offsets = {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)};
      break;
    case TensorType::Q5_K:
      scale_offsets = {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)};
      break;
    case TensorType::Q6_K:
      scale_offsets = {offsetof(BlockQ6_K, d)};
      break;
    default:
      ADD_FAILURE() << "no block layout for " << type_name(type);
  }
  std::uniform_real_distribution<float> scale(-0.01f, 0.01f);
  for (size_t off = 0; off < w.size(); off += block) {
    for (size_t field : scale_offsets) {
      const uint16_t h = f32_to_f16(scale(rng));
      memcpy(w.data() + off + field, &h, 2);
    }
  }
  return w;
}

// Activations with a few large outliers and one all-zero token (t == 1).
std::vector<float> make_inputs(int64_t T, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(size_t(T * cols));
  for (float& v : x) v = dist(rng);
  for (size_t i = 0; i < x.size(); i += 97) x[i] *= 30.0f;
  if (T > 1) std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);
  return x;
}

// x as the integer kernels see it: per block, levels nearest-even(x * 127 / amax) with
// step amax / 127 (blocks of 32), or the spec §4.4 Q8_K rule (blocks of 256). `step`
// receives each input's quantisation step.
std::vector<double> quantised_inputs(int64_t block, const float* x, int64_t cols, std::vector<double>& step) {
  std::vector<double> out(static_cast<size_t>(cols));
  step.assign(size_t(cols), 0.0);
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const float* xb = x + b0;
    float hi = xb[0], lo = xb[0];
    for (int64_t i = 1; i < block; ++i) hi = std::max(hi, xb[i]), lo = std::min(lo, xb[i]);
    float inv, d;
    if (block == 32) {
      const float amax = std::max(hi, -lo);
      d = amax / 127.0f;
      inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    } else {
      const float xm = hi >= -lo ? hi : lo;
      inv = xm != 0.0f ? -127.0f / xm : 0.0f;
      d = xm != 0.0f ? 1.0f / inv : 0.0f;
    }
    for (int64_t i = 0; i < block; ++i) {
      out[size_t(b0 + i)] = double(std::min(127.0f, std::nearbyint(xb[i] * inv))) * double(d);
      step[size_t(b0 + i)] = std::fabs(double(d));
    }
  }
  return out;
}

// Runs matmul with a guard region after y and checks every output against two
// double-precision references from the dequantised weights: the exact float inputs, and
// the inputs as the type's integer kernel quantises them. y must match one of them to
// within float32 accumulation error (2e-6 of sum |w x|); against the quantised reference
// a further 2 x max |w * step| allows a level or two of rounding to fall the other way.
// The portable path (no SIMD kernel) computes with float inputs and matches the first.
void check_matmul(TensorType type, const std::vector<uint8_t>& w, int64_t rows, int64_t cols,
                  const std::vector<float>& x, int64_t T, int threads) {
  ThreadPool pool(threads);
  constexpr size_t kGuard = 16;
  constexpr float kGuardValue = 12345.0f;
  std::vector<float> y(size_t(rows * T) + kGuard, std::nanf(""));
  std::fill(y.end() - kGuard, y.end(), kGuardValue);
  matmul(pool, type, w.data(), rows, cols, x.data(), T, y.data());
  for (size_t g = 0; g < kGuard; ++g)
    EXPECT_EQ(y[size_t(rows * T) + g], kGuardValue) << "guard " << g << " overwritten";

  const int64_t act_block = matmul_activation_block(type, T);
  std::vector<std::vector<double>> xq(static_cast<size_t>(T)), steps(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    if (act_block > 0)
      xq[size_t(t)] = quantised_inputs(act_block, x.data() + t * cols, cols, steps[size_t(t)]);
    else
      xq[size_t(t)].assign(x.begin() + t * cols, x.begin() + (t + 1) * cols),
          steps[size_t(t)].assign(size_t(cols), 0.0);
  }
  const size_t stride = row_bytes(type, cols);
  std::vector<float> wrow(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(type, w.data() + size_t(r) * stride, wrow.data(), cols);
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x.data() + t * cols;
      double exact = 0, quantised = 0, abs_sum = 0, step_max = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double wc = wrow[size_t(c)];
        exact += wc * xt[c];
        quantised += wc * xq[size_t(t)][size_t(c)];
        abs_sum += std::fabs(wc * xt[c]);
        step_max = std::max(step_max, std::fabs(wc) * steps[size_t(t)][size_t(c)]);
      }
      const float got = y[size_t(t * rows + r)];
      ASSERT_FALSE(std::isnan(got)) << type_name(type) << " y[" << t << "][" << r << "]";
      const double float_tolerance = 2e-6 * abs_sum;
      const bool ok =
          std::fabs(got - exact) <= float_tolerance || std::fabs(got - quantised) <= float_tolerance + 2.0 * step_max;
      ASSERT_TRUE(ok) << type_name(type) << " rows=" << rows << " cols=" << cols << " T=" << T << " threads=" << threads
                      << ": y[" << t << "][" << r << "] = " << got << ", reference " << exact << " (float inputs) / "
                      << quantised << " (quantised inputs), sum |w x| = " << abs_sum;
    }
  }
}

class MatmulTypes : public ::testing::TestWithParam<TensorType> {};

TEST_P(MatmulTypes, MatchesReferenceOnOddShapes) {
  const TensorType type = GetParam();
  const int64_t block = type_info(type).block_size;
  const int64_t min_cols = std::max<int64_t>(block, 32);
  std::mt19937 rng(1234 + uint32_t(type));
  const int64_t shapes[][2] = {
      {1, min_cols}, {7, min_cols}, {67, 2 * min_cols}, {13, 3 * std::max<int64_t>(block, 64)}};
  for (const auto& shape : shapes) {
    const int64_t rows = shape[0], cols = shape[1];
    const std::vector<uint8_t> w = make_weights(type, rows, cols, rng);
    for (const int64_t T : {1, 3, 5, 17}) {
      const std::vector<float> x = make_inputs(T, cols, rng);
      for (const int threads : {1, 3}) check_matmul(type, w, rows, cols, x, T, threads);
    }
  }
}

TEST_P(MatmulTypes, ZeroInputsGiveZeros) {
  const TensorType type = GetParam();
  std::mt19937 rng(5);
  const int64_t rows = 9, cols = 256, T = 6;
  const std::vector<uint8_t> w = make_weights(type, rows, cols, rng);
  const std::vector<float> x(size_t(T * cols), 0.0f);
  std::vector<float> y(size_t(rows * T), std::nanf(""));
  ThreadPool pool(2);
  matmul(pool, type, w.data(), rows, cols, x.data(), T, y.data());
  for (float v : y) ASSERT_EQ(v, 0.0f) << type_name(type);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulTypes, ::testing::ValuesIn(kTypes),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// Quantised block types whose scale fields random_block_bytes knows.
class MatmulBlockTypes : public ::testing::TestWithParam<TensorType> {};

TEST_P(MatmulBlockTypes, MatchesReferenceOnRandomBlockBytes) {
  const TensorType type = GetParam();
  std::mt19937 rng(99 + uint32_t(type));
  const int64_t rows = 37, cols = 512;
  const std::vector<uint8_t> w = random_block_bytes(type, rows, cols, rng);
  for (const int64_t T : {1, 4, 9}) {
    const std::vector<float> x = make_inputs(T, cols, rng);
    check_matmul(type, w, rows, cols, x, T, 2);
  }
}

INSTANTIATE_TEST_SUITE_P(QuantisedTypes, MatmulBlockTypes,
                         ::testing::Values(TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0,
                                           TensorType::Q5_1, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K),
                         [](const auto& info) { return std::string(type_name(info.param)); });

TEST(Matmul, FloatColumnsNotAMultipleOfTheVectorWidth) {
  std::mt19937 rng(11);
  for (const TensorType type : {TensorType::F32, TensorType::F16, TensorType::BF16}) {
    for (const int64_t cols : {1, 7, 37}) {
      const std::vector<uint8_t> w = make_weights(type, 10, cols, rng);
      for (const int64_t T : {5, 40}) {
        const std::vector<float> x = make_inputs(T, cols, rng);
        check_matmul(type, w, 10, cols, x, T, 2);
      }
    }
  }
}

TEST(Matmul, FloatWeightsManyTokens) {
  // Prefill-sized T: token counts around the blocking of the float kernels (multiples of
  // 8, 16, 24, 64 and one past), rows around a 4- or 6-row panel.
  std::mt19937 rng(17);
  for (const TensorType type : {TensorType::F32, TensorType::F16, TensorType::BF16}) {
    for (const int64_t rows : {1, 7, 13}) {
      for (const int64_t cols : {45, 256}) {
        const std::vector<uint8_t> w = make_weights(type, rows, cols, rng);
        for (const int64_t T : {24, 33, 70, 130}) {
          const std::vector<float> x = make_inputs(T, cols, rng);
          for (const int threads : {1, 3}) check_matmul(type, w, rows, cols, x, T, threads);
        }
      }
    }
  }
}

TEST(Matmul, BlockWeightsManyTokens) {
  // Prefill-sized T for the block-quantised types (the int8 kernel where the CPU has VNNI):
  // token counts around its 8- or 16-token vectors and 2 or 3 vectors per micro-kernel,
  // rows around its 2- or 4-row panels, one block or several.
  std::mt19937 rng(19);
  for (const TensorType type : {TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0,
                                TensorType::Q5_1, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
    const int64_t block = type_info(type).block_size;
    for (const int64_t rows : {1, 5, 13}) {
      for (const int64_t cols : {block, 3 * block, 8 * std::max<int64_t>(block, 32)}) {
        const std::vector<uint8_t> w = random_block_bytes(type, rows, cols, rng);
        for (const int64_t T : {12, 16, 17, 47, 48, 49, 130}) {
          const std::vector<float> x = make_inputs(T, cols, rng);
          for (const int threads : {1, 3}) check_matmul(type, w, rows, cols, x, T, threads);
        }
      }
    }
  }
}

TEST(Matmul, BlockWeightsInCacheBlocks) {
  // The int8 kernel decodes weight rows a slab at a time (256 KB of levels: 24 rows of 10,240
  // columns) and runs tokens in chunks (512 KB of activations: 48 tokens of 10,240 columns).
  // On one thread all 203 rows are one range: nine slabs, the last ragged; 60 tokens make two
  // chunks.
  std::mt19937 rng(23);
  for (const TensorType type : {TensorType::Q8_0, TensorType::Q4_1, TensorType::Q4_K, TensorType::Q6_K}) {
    const int64_t rows = 203, cols = 10240, T = 60;
    const std::vector<uint8_t> w = random_block_bytes(type, rows, cols, rng);
    const std::vector<float> x = make_inputs(T, cols, rng);
    check_matmul(type, w, rows, cols, x, T, 1);
  }
}

TEST(Matmul, FloatWeightsInCacheBlocks) {
  // The float many-token kernel converts a slab of rows at a time (256 KB of floats: 24 rows of
  // 2,560 columns, 60 of 1,024) and runs chunks of 64-token blocks (512 KB: two blocks of 1,024
  // columns). Rows of more than 2,048 columns (5,461 with 256-bit vectors) run in column ranges
  // that add up, over slabs of 2 MB (84 rows of 6,001). On one thread all rows are one range:
  // several slabs (2,560 columns: one), chunks and column ranges ragged.
  std::mt19937 rng(29);
  for (const TensorType type : {TensorType::F32, TensorType::F16, TensorType::BF16}) {
    for (const auto [rows, cols, T] : {std::array<int64_t, 3>{203, 2560, 130}, std::array<int64_t, 3>{403, 1024, 200},
                                       std::array<int64_t, 3>{343, 6001, 40}}) {
      const std::vector<uint8_t> w = make_weights(type, rows, cols, rng);
      const std::vector<float> x = make_inputs(T, cols, rng);
      check_matmul(type, w, rows, cols, x, T, 1);
    }
  }
}

TEST(Matmul, LargeShapesAcrossThreads) {
  // Big enough to be split over the pool (small calls run on the calling thread), with
  // ragged row and token ends.
  std::mt19937 rng(21);
  for (const TensorType type : kTypes) {
    const int64_t rows = 203, cols = 768;
    const std::vector<uint8_t> w = make_weights(type, rows, cols, rng);
    for (const int64_t T : {1, 33}) {
      const std::vector<float> x = make_inputs(T, cols, rng);
      check_matmul(type, w, rows, cols, x, T, 3);
    }
  }
}

TEST(Matmul, RejectsRaggedColumns) {
  ThreadPool pool(1);
  std::vector<uint8_t> w(1024);
  std::vector<float> x(48), y(4);
  try {
    matmul(pool, TensorType::Q8_0, w.data(), 1, 48, x.data(), 1, y.data());
    FAIL() << "48 columns of Q8_0 should be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::argument);
    EXPECT_NE(std::string(e.what()).find("q8_0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkv
