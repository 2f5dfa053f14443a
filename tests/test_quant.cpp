// Reference conversions of quant.h: hand-built blocks with known bytes against values
// computed per element from the spec's formulas (§4.3), special f16/bf16 values,
// quantise -> dequantise error bounds and the edge cases of the quantisers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "tensor/blocks.h"
#include "tensor/quant.h"
#include "tensor/transpose.h"

namespace rwkv {
namespace {

template <class Block>
std::vector<float> dequantize_block(TensorType type, const Block& block) {
  std::vector<float> out(size_t(type_info(type).block_size));
  dequantize_row(type, &block, out.data(), int64_t(out.size()));
  return out;
}

TEST(Dequantize, F16SpecialValues) {
  const uint16_t bits[] = {0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xC000, 0x7BFF, 0x7C00, 0xFC00, 0x7E00};
  const float expected[] = {0.0f,
                            -0.0f,
                            std::ldexp(1.0f, -24),
                            1023.0f * std::ldexp(1.0f, -24),
                            std::ldexp(1.0f, -14),
                            1.0f,
                            -2.0f,
                            65504.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  float out[11];
  dequantize_row(TensorType::F16, bits, out, 11);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(out[i], expected[i]) << "f16 bits " << std::hex << bits[i];
    EXPECT_EQ(std::signbit(out[i]), std::signbit(expected[i])) << "f16 bits " << std::hex << bits[i];
  }
  EXPECT_TRUE(std::isnan(out[10]));
}

TEST(Quantize, F16RoundsToNearestEvenAndSaturatesToInf) {
  const float in[] = {1.0f + std::ldexp(1.0f, -11),      // halfway 1 .. 1+2^-10: even is 1
                      1.0f + 3 * std::ldexp(1.0f, -11),  // halfway: even is 1 + 2^-9
                      1.5f * std::ldexp(1.0f, -24),      // subnormal halfway 1 .. 2 ulp: even is 2
                      65519.0f,                          // below the rounding edge: max finite
                      65520.0f,                          // rounds up past max: inf
                      std::numeric_limits<float>::quiet_NaN(),
                      1e-9f};
  const uint16_t expected[] = {0x3C00, 0x3C02, 0x0002, 0x7BFF, 0x7C00};
  uint16_t out[7];
  EXPECT_EQ(quantize_row(TensorType::F16, in, out, 7), 14u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], expected[i]) << "input " << in[i];
  EXPECT_EQ(out[5] & 0x7C00, 0x7C00);
  EXPECT_NE(out[5] & 0x03FF, 0);
  EXPECT_EQ(out[6], 0x0000);
}

TEST(Quantize, BF16RoundsToNearestEvenAndKeepsNaN) {
  const float in[] = {1.0f + std::ldexp(1.0f, -8),                          // halfway 0x3F80 .. 0x3F81: even 0x3F80
                      1.0f + 3 * std::ldexp(1.0f, -8),                      // halfway 0x3F81 .. 0x3F82: even 0x3F82
                      1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20),  // just above half
                      -5.0f, std::numeric_limits<float>::quiet_NaN()};
  uint16_t out[5];
  quantize_row(TensorType::BF16, in, out, 5);
  EXPECT_EQ(out[0], 0x3F80);
  EXPECT_EQ(out[1], 0x3F82);
  EXPECT_EQ(out[2], 0x3F81);
  EXPECT_EQ(out[3], 0xC0A0);
  float back[5];
  dequantize_row(TensorType::BF16, out, back, 5);
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[3], -5.0f);
  EXPECT_TRUE(std::isnan(back[4]));
}

TEST(Dequantize, Q4_0LowNibblesFirstHalf) {
  BlockQ4_0 b;
  b.d = f32_to_f16(0.5f);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  const auto y = dequantize_block(TensorType::Q4_0, b);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], float(j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], float(7 - j) * 0.5f) << j;
  }
}

TEST(Dequantize, Q4_1AddsMin) {
  BlockQ4_1 b;
  b.d = f32_to_f16(0.25f);
  b.m = f32_to_f16(-1.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(((j * 5) & 0xF) | (j << 4));
  const auto y = dequantize_block(TensorType::Q4_1, b);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], float((j * 5) & 0xF) * 0.25f - 1.0f) << j;
    EXPECT_EQ(y[j + 16], float(j) * 0.25f - 1.0f) << j;
  }
}

// qh bit j is the fifth bit of element j (elements 16..31 come from the high nibbles).
TEST(Dequantize, Q5_0FifthBitPlacement) {
  BlockQ5_0 b;
  b.d = f32_to_f16(2.0f);
  const uint32_t qh = (1u << 3) | (1u << 20) | (1u << 31);
  memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | (j << 4));
  const auto y = dequantize_block(TensorType::Q5_0, b);
  for (int e = 0; e < 32; ++e) {
    const int q = (e % 16) + ((qh >> e) & 1 ? 16 : 0);
    EXPECT_EQ(y[e], float(q - 16) * 2.0f) << "element " << e;
  }
  EXPECT_EQ(y[3], float(3 + 16 - 16) * 2.0f);
  EXPECT_EQ(y[20], float(4 + 16 - 16) * 2.0f);
  EXPECT_EQ(y[31], float(15 + 16 - 16) * 2.0f);
}

TEST(Dequantize, Q5_1FifthBitPlacement) {
  BlockQ5_1 b;
  b.d = f32_to_f16(0.5f);
  b.m = f32_to_f16(-3.0f);
  const uint32_t qh = 0xA5C3F00Fu;
  memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t((15 - j) | (j << 4));
  const auto y = dequantize_block(TensorType::Q5_1, b);
  for (int e = 0; e < 32; ++e) {
    const int nibble = e < 16 ? 15 - e : e - 16;
    const int q = nibble + ((qh >> e) & 1 ? 16 : 0);
    EXPECT_EQ(y[e], float(q) * 0.5f - 3.0f) << "element " << e;
  }
}

TEST(Dequantize, Q8_0AndQ8_1) {
  BlockQ8_0 b0;
  BlockQ8_1 b1;
  b0.d = b1.d = f32_to_f16(0.125f);
  b1.s = f32_to_f16(1000.0f);  // auxiliary sum: must not affect values
  for (int j = 0; j < 32; ++j) b0.qs[j] = b1.qs[j] = int8_t(j * 8 - 128);
  const auto y0 = dequantize_block(TensorType::Q8_0, b0);
  const auto y1 = dequantize_block(TensorType::Q8_1, b1);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(y0[j], float(j * 8 - 128) * 0.125f);
    EXPECT_EQ(y1[j], y0[j]);
  }
}

// Bytes filled with a fixed pseudo-random pattern so every bit position is exercised.
void fill_pattern(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = uint8_t(seed >> 24);
  }
}

TEST(Dequantize, Q2_KPerElement) {
  BlockQ2_K b;
  fill_pattern(b.scales, sizeof(b.scales), 1);
  fill_pattern(b.qs, sizeof(b.qs), 2);
  b.d = f32_to_f16(0.5f);
  b.dmin = f32_to_f16(0.25f);
  const auto y = dequantize_block(TensorType::Q2_K, b);
  for (int e = 0; e < 256; ++e) {
    // element e: half e/128, shift 2 * ((e % 128) / 32), byte qs[32 * half + e % 32], scale e/16
    const int q = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const uint8_t s = b.scales[e / 16];
    EXPECT_EQ(y[e], 0.5f * float(s & 0xF) * float(q) - 0.25f * float(s >> 4)) << "element " << e;
  }
}

TEST(Dequantize, Q3_KPerElement) {
  BlockQ3_K b;
  fill_pattern(b.hmask, sizeof(b.hmask), 3);
  fill_pattern(b.qs, sizeof(b.qs), 4);
  const uint8_t scale_bytes[12] = {0x21, 0x43, 0x65, 0x87, 0xA9, 0xCB, 0xED, 0x0F, 0xE4, 0x1B, 0x00, 0xFF};
  memcpy(b.scales, scale_bytes, 12);
  // The 16 six-bit scales these bytes encode (spec §4.3 unpacking, worked by hand), minus 32.
  const int scales[16] = {1 - 32,  51 - 32, 5 - 32, 55 - 32, 25 - 32, 43 - 32, 13 - 32, 63 - 32,
                          34 - 32, 20 - 32, 6 - 32, 56 - 32, 58 - 32, 12 - 32, 14 - 32, 48 - 32};
  b.d = f32_to_f16(0.5f);
  const auto y = dequantize_block(TensorType::Q3_K, b);
  for (int e = 0; e < 256; ++e) {
    const int q = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const bool high = (b.hmask[e % 32] >> (e / 32)) & 1;  // hmask bit 4 * half + shift / 2
    EXPECT_EQ(y[e], 0.5f * float(scales[e / 16]) * float(q - (high ? 0 : 4))) << "element " << e;
  }
}

// Spec §4.3 test vector for get_scale_min.
const uint8_t kScaleMinBytes[12] = {0xC1, 0x42, 0x83, 0x04, 0x45, 0x86, 0xC7, 0x08, 0x9A, 0xBC, 0xDE, 0xF0};
const int kScale[8] = {1, 2, 3, 4, 58, 28, 46, 0};
const int kMin[8] = {5, 6, 7, 8, 25, 43, 61, 15};

TEST(Dequantize, Q4_KScaleMinVector) {
  BlockQ4_K b;
  b.d = f32_to_f16(1.0f);
  b.dmin = f32_to_f16(0.5f);
  memcpy(b.scales, kScaleMinBytes, 12);
  for (int i = 0; i < 128; ++i) b.qs[i] = uint8_t((i % 16) | ((15 - i % 16) << 4));
  const auto y = dequantize_block(TensorType::Q4_K, b);
  for (int e = 0; e < 256; ++e) {
    // element e: sub-block j = e / 32 reads byte 32 * (j / 2) + e % 32, high nibble when j odd
    const int j = e / 32;
    const uint8_t byte = b.qs[32 * (j / 2) + e % 32];
    const int q = j % 2 ? byte >> 4 : byte & 0xF;
    EXPECT_EQ(y[e], float(kScale[j] * q) - 0.5f * float(kMin[j])) << "element " << e;
  }
}

TEST(Dequantize, Q5_KFifthBitPerSubBlock) {
  BlockQ5_K b;
  b.d = f32_to_f16(0.25f);
  b.dmin = f32_to_f16(1.0f);
  memcpy(b.scales, kScaleMinBytes, 12);
  fill_pattern(b.qh, sizeof(b.qh), 5);
  fill_pattern(b.qs, sizeof(b.qs), 6);
  const auto y = dequantize_block(TensorType::Q5_K, b);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32;  // sub-block; its fifth bits are bit j of qh[e % 32]
    const uint8_t byte = b.qs[32 * (j / 2) + e % 32];
    const int q = (j % 2 ? byte >> 4 : byte & 0xF) + ((b.qh[e % 32] >> j) & 1) * 16;
    EXPECT_EQ(y[e], 0.25f * float(kScale[j] * q) - float(kMin[j])) << "element " << e;
  }
}

// Element e of a Q6_K block: half n = e / 128, r = e % 128, k = r / 32, l = r % 32;
// low nibble k / 2 of ql[64n + l + 32 (k % 2)], two bits 2k of qh[32n + l], scale e / 16.
TEST(Dequantize, Q6_KBitPlacement) {
  BlockQ6_K b;
  fill_pattern(b.ql, sizeof(b.ql), 7);
  fill_pattern(b.qh, sizeof(b.qh), 8);
  for (int i = 0; i < 16; ++i) b.scales[i] = int8_t(i * 9 - 70);
  b.d = f32_to_f16(0.125f);
  const auto y = dequantize_block(TensorType::Q6_K, b);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, k = (e % 128) / 32, l = e % 32;
    const uint8_t low_byte = b.ql[64 * n + l + 32 * (k % 2)];
    const int low = k / 2 ? low_byte >> 4 : low_byte & 0xF;
    const int high = (b.qh[32 * n + l] >> (2 * k)) & 3;
    EXPECT_EQ(y[e], 0.125f * float(b.scales[e / 16]) * float((low | high << 4) - 32)) << "element " << e;
  }
}

TEST(Dequantize, Q6_KSingleElement) {
  // Only element 200 (n = 1, k = 2, l = 8) gets level 63; every other element has level 0.
  BlockQ6_K b;
  memset(&b, 0, sizeof(b));
  b.ql[64 + 8] = 0xF0;    // high nibble = k / 2 == 1
  b.qh[32 + 8] = 3 << 4;  // bits 4..5 = k == 2
  for (int i = 0; i < 16; ++i) b.scales[i] = 1;
  b.d = f32_to_f16(1.0f);
  const auto y = dequantize_block(TensorType::Q6_K, b);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], e == 200 ? 31.0f : -32.0f) << "element " << e;
}

TEST(Dequantize, Q8_KNegativeScale) {
  BlockQ8_K b;
  b.d = -0.5f;
  for (int j = 0; j < 256; ++j) b.qs[j] = int8_t(j - 128);
  const auto y = dequantize_block(TensorType::Q8_K, b);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], -0.5f * float(j - 128));
}

TEST(Quantize, Q8_KMatchesSpec) {
  std::vector<float> x(256);
  for (int j = 0; j < 256; ++j) x[j] = std::sin(float(j)) * 3.0f;
  x[77] = 4.0f;  // largest magnitude, positive: d must be negative
  BlockQ8_K b;
  EXPECT_EQ(quantize_row(TensorType::Q8_K, x.data(), &b, 256), sizeof(BlockQ8_K));
  EXPECT_FLOAT_EQ(b.d, -4.0f / 127.0f);
  EXPECT_EQ(b.qs[77], -127);
  for (int i = 0; i < 16; ++i) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += b.qs[16 * i + j];
    EXPECT_EQ(b.bsums[i], sum) << i;
  }
  for (int j = 0; j < 256; ++j) EXPECT_EQ(b.qs[j], int(std::nearbyint(x[j] * (-127.0f / 4.0f)))) << j;
}

struct RoundTrip {
  TensorType type;
  double max_rel_rms;  // ||dequant(quant(x)) - x|| / ||x|| on N(0, 1) data
};

void PrintTo(const RoundTrip& p, std::ostream* os) { *os << type_name(p.type); }

class QuantRoundTrip : public ::testing::TestWithParam<RoundTrip> {};

double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> round_trip(TensorType type, const std::vector<float>& x) {
  std::vector<uint8_t> bytes(row_bytes(type, int64_t(x.size())));
  EXPECT_EQ(quantize_row(type, x.data(), bytes.data(), int64_t(x.size())), bytes.size());
  std::vector<float> y(x.size());
  dequantize_row(type, bytes.data(), y.data(), int64_t(y.size()));
  return y;
}

TEST_P(QuantRoundTrip, GaussianErrorBound) {
  const RoundTrip p = GetParam();
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(8192);
  for (float& v : x) v = dist(rng);
  // Scale some blocks up and down so block-local scales matter.
  for (size_t i = 0; i < x.size(); ++i) x[i] *= (i / 256) % 3 == 0 ? 20.0f : (i / 256) % 3 == 1 ? 0.05f : 1.0f;
  const double err = rel_rms(round_trip(p.type, x), x);
  EXPECT_LT(err, p.max_rel_rms) << type_name(p.type);
  RecordProperty("rel_rms", std::to_string(err));
}

TEST_P(QuantRoundTrip, ShiftedDataErrorBound) {
  // All-positive data with a large offset: affine types must use their min/offset.
  const RoundTrip p = GetParam();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(4096);
  for (float& v : x) v = 3.0f + dist(rng);
  std::vector<float> centred(x.size());
  const std::vector<float> y = round_trip(p.type, x);
  std::vector<float> diff(x.size());
  for (size_t i = 0; i < x.size(); ++i) diff[i] = y[i] - x[i];
  // Error relative to the spread of the data (rms 1/sqrt(3)), not to its offset.
  double rms = 0;
  for (float d : diff) rms += double(d) * d;
  rms = std::sqrt(rms / double(x.size()));
  EXPECT_LT(rms / (1.0 / std::sqrt(3.0)), 4.0 * p.max_rel_rms) << type_name(p.type);
}

TEST_P(QuantRoundTrip, ZeroRowStaysZero) {
  const RoundTrip p = GetParam();
  const std::vector<float> zeros(512, 0.0f);
  for (float v : round_trip(p.type, zeros)) ASSERT_EQ(v, 0.0f) << type_name(p.type);
}

TEST_P(QuantRoundTrip, ConstantRows) {
  const RoundTrip p = GetParam();
  for (const float c : {2.5f, -0.75f}) {
    const std::vector<float> x(512, c);
    for (float v : round_trip(p.type, x)) ASSERT_NEAR(v, c, std::fabs(c) * p.max_rel_rms) << type_name(p.type);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantRoundTrip,
                         ::testing::Values(RoundTrip{TensorType::F32, 1e-9}, RoundTrip{TensorType::F16, 4e-4},
                                           RoundTrip{TensorType::BF16, 3e-3}, RoundTrip{TensorType::Q8_0, 0.01},
                                           RoundTrip{TensorType::Q8_1, 0.01}, RoundTrip{TensorType::Q8_K, 0.01},
                                           RoundTrip{TensorType::Q4_0, 0.1}, RoundTrip{TensorType::Q4_1, 0.09},
                                           RoundTrip{TensorType::Q5_0, 0.05}, RoundTrip{TensorType::Q5_1, 0.045},
                                           RoundTrip{TensorType::Q4_K, 0.08}, RoundTrip{TensorType::Q5_K, 0.04},
                                           RoundTrip{TensorType::Q6_K, 0.02}),
                         [](const auto& info) { return std::string(type_name(info.param.type)); });

TEST(Quantize, KQuantSearchBeatsPlainRounding) {
  // Q4_K's fitted scales should do better than Q4_1's min/max rounding on the same data.
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(4096);
  for (float& v : x) v = dist(rng);
  EXPECT_LT(rel_rms(round_trip(TensorType::Q4_K, x), x), rel_rms(round_trip(TensorType::Q4_1, x), x));
}

// A random matrix of R rows of K quantised to `type`: its stored rows and their dequantised
// values (the reference the transpositions must reproduce).
struct StoredMatrix {
  std::vector<uint8_t> stored;
  std::vector<float> back;
};
StoredMatrix stored_matrix(TensorType type, uint64_t R, uint64_t K, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> w(R * K);
  for (float& v : w) v = nd(rng);
  const size_t rb = row_bytes(type, int64_t(K));
  StoredMatrix m{std::vector<uint8_t>(R * rb), std::vector<float>(R * K)};
  for (uint64_t i = 0; i < R; ++i) {
    quantize_row(type, w.data() + i * K, m.stored.data() + i * rb, int64_t(K));
    dequantize_row(type, m.stored.data() + i * rb, m.back.data() + i * K, int64_t(K));
  }
  return m;
}

// The sparse FFN's transposed Q4_K: every weight of the matrix is D q - M from the row of
// its column and the pair of its sub-block (66 rows: a partial tile of 64).
TEST(Transpose, Q4_KGivesEveryWeight) {
  const uint64_t R = 66, K = 512;
  const StoredMatrix m = stored_matrix(TensorType::Q4_K, R, K, 5);
  std::vector<uint8_t> quants(K * R / 2, 0xAB);
  std::vector<float> dm(K / 32 * R * 2, -1.f);
  q4_k_transpose(m.stored.data(), R, uint32_t(K), quants.data(), dm.data());
  for (uint64_t i = 0; i < R; ++i) {
    for (uint64_t j = 0; j < K; ++j) {
      const int q = (quants[j * R / 2 + i / 2] >> (i % 2 ? 4 : 0)) & 0xF;
      const float* p = dm.data() + 2 * ((j / 32) * R + i);
      EXPECT_FLOAT_EQ(p[0] * float(q) - p[1], m.back[i * K + j]) << i << " " << j;
    }
  }
}

// The transposed Q5_K: every weight is D q - M, quants as bytes.
TEST(Transpose, Q5_KGivesEveryWeight) {
  const uint64_t R = 66, K = 512;
  const StoredMatrix m = stored_matrix(TensorType::Q5_K, R, K, 7);
  std::vector<uint8_t> quants(K * R, 0xAB);
  std::vector<float> dm(K / 32 * R * 2, -1.f);
  q5_k_transpose(m.stored.data(), R, uint32_t(K), quants.data(), dm.data());
  for (uint64_t i = 0; i < R; ++i) {
    for (uint64_t j = 0; j < K; ++j) {
      const float* p = dm.data() + 2 * ((j / 32) * R + i);
      ASSERT_LT(quants[j * R + i], 32) << i << " " << j;
      EXPECT_FLOAT_EQ(p[0] * float(quants[j * R + i]) - p[1], m.back[i * K + j]) << i << " " << j;
    }
  }
}

// The transposed Q6_K: every weight is D q from the row of its column and its group of 16.
TEST(Transpose, Q6_KGivesEveryWeight) {
  const uint64_t R = 66, K = 512;
  const StoredMatrix m = stored_matrix(TensorType::Q6_K, R, K, 6);
  std::vector<int8_t> quants(K * R, 99);
  std::vector<float> scales(K / 16 * R, -1.f);
  q6_k_transpose(m.stored.data(), R, uint32_t(K), quants.data(), scales.data());
  for (uint64_t i = 0; i < R; ++i)
    for (uint64_t j = 0; j < K; ++j)
      EXPECT_FLOAT_EQ(scales[(j / 16) * R + i] * float(quants[j * R + i]), m.back[i * K + j]) << i << " " << j;
}

TEST(Quantize, CanQuantize) {
  for (TensorType t :
       {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1,
        TensorType::Q5_0, TensorType::Q5_1, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::Q8_K})
    EXPECT_TRUE(can_quantize(t)) << type_name(t);
  EXPECT_FALSE(can_quantize(TensorType::Q2_K));
  EXPECT_FALSE(can_quantize(TensorType::Q3_K));
}

TEST(Quantize, RejectsBadRequests) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(1024);
  try {
    quantize_row(TensorType::Q2_K, x.data(), out.data(), 256);
    FAIL() << "Q2_K quantisation should be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
  }
  try {
    quantize_row(TensorType::Q8_0, x.data(), out.data(), 33);
    FAIL() << "a ragged row should be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::argument);
    EXPECT_NE(std::string(e.what()).find("q8_0"), std::string::npos) << e.what();
  }
  float y[256];
  EXPECT_THROW(dequantize_row(TensorType::Q4_K, out.data(), y, 128), Error);
  EXPECT_THROW(dequantize_row(TensorType(5), out.data(), y, 32), Error);  // id 5 (old Q4_3) unknown
}

}  // namespace
}  // namespace rwkv
