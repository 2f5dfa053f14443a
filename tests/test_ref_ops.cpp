// Unit tests of the reference operators (src/backend/cpu/ref_ops.h) against the spec's
// worked examples (§2.3), hand-computed values and independent double-precision loops.
#include "backend/cpu/ref_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "tensor/blocks.h"
#include "tensor/quant.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

using testing::random_vector;

// ---------------------------------------------------------------------------------------
// WKV7

// Spec §2.3 worked example, N = 3: exact decimal results, so float inputs agree to ~1e-7.
TEST(Wkv7, WorkedExampleOfSpec) {
  float S[9] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f};  // S[i][j], row i = value
  const float decay[3] = {0.9f, 0.8f, 0.7f};
  const float k[3] = {1.0f, -1.0f, 0.5f};
  const float v[3] = {2.0f, 0.0f, -1.0f};
  const float r[3] = {0.5f, 1.0f, -0.5f};
  const float kk_hat[3] = {0.6f, 0.8f, 0.0f};
  const float a[3] = {0.5f, 0.25f, 1.0f};
  float alpha[3], beta[3];
  for (int j = 0; j < 3; ++j) {
    alpha[j] = -kk_hat[j];
    beta[j] = kk_hat[j] * a[j];
  }
  float y[3];
  ref::wkv7_head_step(S, r, decay, k, v, alpha, beta, 3, y);

  const float want_S[9] = {2.024f, -1.884f, 1.21f, 0.168f, 0.272f, 0.42f, -0.688f, 1.428f, 0.13f};
  const float want_y[3] = {-1.477f, 0.146f, 1.019f};
  for (int e = 0; e < 9; ++e) EXPECT_NEAR(S[e], want_S[e], 1e-6) << "S'[" << e / 3 << "][" << e % 3 << "]";
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(y[i], want_y[i], 1e-6) << "y[" << i << "]";
}

// Random inputs of a T-token, H-head sequence in the ranges the model produces.
struct Wkv7Inputs {
  int64_t T, H, N;
  std::vector<float> r, decay, k, v, alpha, beta, state;

  Wkv7Inputs(int64_t T_, int64_t H_, int64_t N_) : T(T_), H(H_), N(N_) {
    const size_t n = size_t(T * H * N);
    r = random_vector(n, -1, 1, 1);
    decay = random_vector(n, 0.55f, 1.0f, 2);
    k = random_vector(n, -1, 1, 3);
    v = random_vector(n, -1, 1, 4);
    // alpha = -kk_hat, beta = kk_hat * a with a in (0, 1): per-head unit kk_hat.
    const std::vector<float> kk = random_vector(n, -1, 1, 5), a = random_vector(n, 0, 1, 6);
    alpha.resize(n);
    beta.resize(n);
    for (size_t h0 = 0; h0 < n; h0 += size_t(N)) {
      double ss = 0;
      for (size_t i = 0; i < size_t(N); ++i) ss += double(kk[h0 + i]) * kk[h0 + i];
      for (size_t i = 0; i < size_t(N); ++i) {
        const float unit = float(kk[h0 + i] / std::sqrt(ss));
        alpha[h0 + i] = -unit;
        beta[h0 + i] = unit * a[h0 + i];
      }
    }
    state = random_vector(size_t(H * N * N), -0.5f, 0.5f, 7);
  }
};

// The recurrence of spec §2.3 written directly in double: state [h][i][j], inputs [t][h*N+n].
void wkv7_double(const Wkv7Inputs& in, std::vector<double>& S, std::vector<double>& y) {
  const int64_t N = in.N, C = in.H * in.N;
  y.assign(size_t(in.T * C), 0.0);
  for (int64_t t = 0; t < in.T; ++t) {
    for (int64_t h = 0; h < in.H; ++h) {
      double* Sh = S.data() + h * N * N;
      const size_t o = size_t(t * C + h * N);
      for (int64_t i = 0; i < N; ++i) {
        double sa = 0;
        for (int64_t j = 0; j < N; ++j) sa += double(in.alpha[o + size_t(j)]) * Sh[i * N + j];
        double out = 0;
        for (int64_t j = 0; j < N; ++j) {
          double& s = Sh[i * N + j];
          s = s * in.decay[o + size_t(j)] + double(in.v[o + size_t(i)]) * in.k[o + size_t(j)] +
              sa * in.beta[o + size_t(j)];
          out += s * in.r[o + size_t(j)];
        }
        y[o + size_t(i)] = out;
      }
    }
  }
}

TEST(Wkv7, SequenceEqualsSingleStepsAndDoubleLoop) {
  const Wkv7Inputs in(7, 3, 8);
  const int64_t C = in.H * in.N;

  std::vector<float> state_seq = in.state, y_seq(size_t(in.T * C));
  ref::wkv7(state_seq.data(), in.r.data(), in.decay.data(), in.k.data(), in.v.data(), in.alpha.data(), in.beta.data(),
            in.T, in.H, in.N, y_seq.data());

  // T calls of one token each, carrying the state.
  std::vector<float> state_steps = in.state, y_steps(size_t(in.T * C));
  for (int64_t t = 0; t < in.T; ++t) {
    const int64_t o = t * C;
    ref::wkv7(state_steps.data(), in.r.data() + o, in.decay.data() + o, in.k.data() + o, in.v.data() + o,
              in.alpha.data() + o, in.beta.data() + o, 1, in.H, in.N, y_steps.data() + o);
  }
  for (size_t e = 0; e < y_seq.size(); ++e) ASSERT_EQ(y_seq[e], y_steps[e]) << "y element " << e;
  for (size_t e = 0; e < state_seq.size(); ++e) ASSERT_EQ(state_seq[e], state_steps[e]) << "state element " << e;

  std::vector<double> S(in.state.begin(), in.state.end()), y;
  wkv7_double(in, S, y);
  for (size_t e = 0; e < y.size(); ++e) EXPECT_NEAR(y_seq[e], y[e], 1e-5 * (1 + std::abs(y[e]))) << "y " << e;
  for (size_t e = 0; e < S.size(); ++e) EXPECT_NEAR(state_seq[e], S[e], 1e-5 * (1 + std::abs(S[e]))) << "S " << e;
}

// Heads are independent: head h of a multi-head call equals a one-head call on its slices.
TEST(Wkv7, HeadsAreIndependentSlices) {
  const Wkv7Inputs in(1, 2, 4);
  std::vector<float> state = in.state, y(size_t(in.H * in.N));
  ref::wkv7(state.data(), in.r.data(), in.decay.data(), in.k.data(), in.v.data(), in.alpha.data(), in.beta.data(), 1,
            in.H, in.N, y.data());
  for (int64_t h = 0; h < in.H; ++h) {
    const int64_t o = h * in.N;
    std::vector<float> Sh(in.state.begin() + h * in.N * in.N, in.state.begin() + (h + 1) * in.N * in.N);
    std::vector<float> yh(size_t(in.N));
    ref::wkv7_head_step(Sh.data(), in.r.data() + o, in.decay.data() + o, in.k.data() + o, in.v.data() + o,
                        in.alpha.data() + o, in.beta.data() + o, in.N, yh.data());
    for (int64_t i = 0; i < in.N; ++i) EXPECT_EQ(y[size_t(o + i)], yh[size_t(i)]) << "head " << h << " row " << i;
    for (int64_t e = 0; e < in.N * in.N; ++e) EXPECT_EQ(state[size_t(h * in.N * in.N + e)], Sh[size_t(e)]);
  }
}

// ---------------------------------------------------------------------------------------
// Norms

// x = [1,2,3,4]: mean 2.5, population variance 1.25.
TEST(LayerNorm, HandComputedRow) {
  const float x[4] = {1, 2, 3, 4};
  const float w[4] = {1, 2, 1, 0.5f};
  const float b[4] = {0, 0.5f, -1, 0};
  float y[4];
  ref::layer_norm(x, w, b, 1, 4, 0.0f, y);
  const double inv = 1 / std::sqrt(1.25);
  const double want[4] = {-1.5 * inv, -0.5 * inv * 2 + 0.5, 0.5 * inv - 1, 1.5 * inv * 0.5};
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(y[c], want[c], 1e-6) << "channel " << c;
}

// eps is added to the variance: x = [1,-1] has variance 1, so eps = 3 halves the output.
TEST(LayerNorm, EpsIsAddedToVariance) {
  const float x[2] = {1, -1}, w[2] = {1, 1}, b[2] = {0, 0};
  float y[2];
  ref::layer_norm(x, w, b, 1, 2, 3.0f, y);
  EXPECT_NEAR(y[0], 0.5, 1e-7);
  EXPECT_NEAR(y[1], -0.5, 1e-7);
}

// A constant row has zero variance: eps keeps it finite and the output is exactly b.
TEST(LayerNorm, ConstantRowGivesBias) {
  const float x[8] = {3, 3, 3, 3, -7, -7, -7, -7};  // two rows
  const float w[4] = {1, 2, 3, 4}, b[4] = {0.25f, -0.5f, 1, 0};
  float y[8];
  ref::layer_norm(x, w, b, 2, 4, 1e-5f, y);
  for (int e = 0; e < 8; ++e) EXPECT_EQ(y[e], b[e % 4]) << "element " << e;
}

// Groups of 2 normalised alone: [1,3] (mean 2, var 1) and [10,14] (mean 12, var 4),
// eps = 3, then the per-channel affine over the whole row.
TEST(GroupNorm, EachGroupNormalisedAlone) {
  const float x[4] = {1, 3, 10, 14};
  const float w[4] = {1, 2, 3, 4}, b[4] = {0, 1, 0, -1};
  float y[4];
  ref::group_norm(x, w, b, 1, 4, 2, 3.0f, y);
  const double g1 = 2 / std::sqrt(7.0);
  const double want[4] = {-0.5, 0.5 * 2 + 1, -g1 * 3, g1 * 4 - 1};
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(y[c], want[c], 1e-6) << "channel " << c;
}

TEST(GroupNorm, ConstantGroupGivesBias) {
  const float x[4] = {5, 5, 1, 3};
  const float w[4] = {2, 2, 1, 1}, b[4] = {0.5f, -0.5f, 0, 0};
  float y[4];
  ref::group_norm(x, w, b, 1, 4, 2, 64e-5f, y);
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[1], -0.5f);
  const double inv = 1 / std::sqrt(1 + 64e-5);
  EXPECT_NEAR(y[2], -inv, 1e-6);
  EXPECT_NEAR(y[3], inv, 1e-6);
}

// torch F.normalize semantics: x / max(||x||, eps), per head of N channels.
TEST(L2NormalizeHeads, UnitNormZeroHeadAndClampOnNorm) {
  const int64_t N = 3, C = 9;
  // head 0: a 3-4-5 triangle; head 1: all zero; head 2: norm 1e-13 below eps = 1e-12.
  const float x[C] = {3, 0, 4, 0, 0, 0, 1e-13f, 0, 0};
  float y[C];
  ref::l2_normalize_heads(x, 1, C, N, 1e-12f, y);
  EXPECT_NEAR(y[0], 0.6, 1e-7);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_NEAR(y[2], 0.8, 1e-7);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(y[i], 0.0f) << "all-zero head must stay zero, not NaN";
  // Clamping the norm gives 1e-13/1e-12 = 0.1; clamping the squared norm would give 1e-7.
  EXPECT_NEAR(y[6], 0.1, 1e-6);
  EXPECT_EQ(y[7], 0.0f);
}

TEST(L2NormalizeHeads, RowsAreIndependent) {
  const float x[4] = {0, 2, 5, 0};  // T = 2 rows of one head of 2
  float y[4];
  ref::l2_normalize_heads(x, 2, 2, 2, 1e-12f, y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[2], 1.0f);
  EXPECT_EQ(y[3], 0.0f);
}

// ---------------------------------------------------------------------------------------
// Token shift and decay

// prev[0] = shift, prev[t] = x[t-1]; mu = 0 keeps x, mu = 1 picks prev, 0.25 lerps.
TEST(TokenShiftLerp, PrevIsShiftThenPreviousRow) {
  const int64_t T = 3, C = 3;
  const float x[T * C] = {1, 2, 3, 10, 20, 30, 100, 200, 300};
  const float shift[C] = {-1, -2, -3};
  const float mu[C] = {0, 1, 0.25f};
  float out[T * C];
  ref::token_shift_lerp(x, shift, mu, T, C, out);
  const float want[T * C] = {1,   -2, 3 + (-3 - 3) * 0.25f,   // t = 0: prev = shift
                             10,  2,  30 + (3 - 30) * 0.25f,  // t = 1: prev = x[0]
                             100, 20, 300 + (30 - 300) * 0.25f};
  for (int e = 0; e < T * C; ++e) EXPECT_NEAR(out[e], want[e], 1e-5) << "t " << e / C << " channel " << e % C;
}

constexpr double kInvSqrtE = 0.6065306597126334;  // e^-0.5

TEST(DecayFromLogit, ValueAtZeroAndFormula) {
  const float z[5] = {0, -3, 1.5f, 6, -0.25f};
  float d[5];
  ref::decay_from_logit(z, 5, d);
  EXPECT_NEAR(d[0], std::exp(-0.6065306597 / 2), 1e-7);
  for (int i = 0; i < 5; ++i) {
    const double sig = 1 / (1 + std::exp(-double(z[i])));
    EXPECT_NEAR(d[i], std::exp(-kInvSqrtE * sig), 1e-7) << "z = " << z[i];
  }
}

// decay in (e^-0.6065, 1) = (0.54524, 1), decreasing in z; the ends are reached only in
// float rounding for |z| far beyond the model's range.
TEST(DecayFromLogit, RangeAndMonotone) {
  std::vector<float> z;
  for (float v = -10; v <= 10; v += 0.125f) z.push_back(v);
  std::vector<float> d(z.size());
  ref::decay_from_logit(z.data(), int64_t(z.size()), d.data());
  const float lower = float(std::exp(-kInvSqrtE));
  for (size_t i = 0; i < z.size(); ++i) {
    EXPECT_GT(d[i], lower) << "z = " << z[i];
    EXPECT_LT(d[i], 1.0f) << "z = " << z[i];
    if (i > 0) {
      EXPECT_LT(d[i], d[i - 1]) << "z = " << z[i];
    }
  }
  const float extreme[2] = {-100, 100};
  float de[2];
  ref::decay_from_logit(extreme, 2, de);
  EXPECT_LE(de[0], 1.0f);
  EXPECT_NEAR(de[1], std::exp(-kInvSqrtE), 1e-7);
}

// ---------------------------------------------------------------------------------------
// Matmul and weight access

// A weight of `rows` x `cols` encoded as `type`, kept alive with its bytes.
struct OwnedWeight {
  std::vector<uint8_t> bytes;
  Weight w;

  OwnedWeight(TensorType type, int64_t cols, int64_t rows, const std::vector<float>& values) {
    const size_t rb = row_bytes(type, cols);
    bytes.resize(rb * size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(type, values.data() + r * cols, bytes.data() + size_t(r) * rb, cols);
    w.name = "test.weight";
    w.type = type;
    w.ne[0] = cols;
    w.ne[1] = rows;
    w.data = bytes.data();
    w.nbytes = bytes.size();
  }
};

// Element (row, col) decoded here from the block layout, independently of dequantize_row.
double decode_element(const OwnedWeight& ow, int64_t row, int64_t col) {
  const uint8_t* row_ptr = ow.bytes.data() + size_t(row) * ow.w.row_stride();
  switch (ow.w.type) {
    case TensorType::F32: {
      float f;
      std::memcpy(&f, row_ptr + col * 4, 4);
      return f;
    }
    case TensorType::F16: {
      uint16_t h;
      std::memcpy(&h, row_ptr + col * 2, 2);
      return f16_to_f32(h);
    }
    case TensorType::Q8_0: {
      BlockQ8_0 blk;
      std::memcpy(&blk, row_ptr + (col / QK4_0) * int64_t(sizeof(BlockQ8_0)), sizeof blk);
      return double(f16_to_f32(blk.d)) * blk.qs[col % QK4_0];
    }
    default:
      ADD_FAILURE() << "decode_element: type not handled";
      return NAN;
  }
}

class RefMatmul : public ::testing::TestWithParam<TensorType> {};

TEST_P(RefMatmul, MatchesDequantisedDoubleDot) {
  const int64_t rows = 5, cols = 96, T = 3;  // 3 Q8_0 blocks per row; non-square
  const OwnedWeight ow(GetParam(), cols, rows, random_vector(size_t(rows * cols), -1, 1, 11));
  const std::vector<float> x = random_vector(size_t(T * cols), -2, 2, 12);
  std::vector<float> y(size_t(T * rows));
  ref::matmul(ow.w, x.data(), T, y.data());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double want = 0;
      for (int64_t c = 0; c < cols; ++c) want += decode_element(ow, r, c) * x[size_t(t * cols + c)];
      EXPECT_NEAR(y[size_t(t * rows + r)], want, 1e-6 * (1 + std::abs(want))) << "token " << t << " row " << r;
    }
  }
}

TEST_P(RefMatmul, WeightRowDecodesOneRow) {
  const int64_t rows = 4, cols = 64;
  const OwnedWeight ow(GetParam(), cols, rows, random_vector(size_t(rows * cols), -1, 1, 13));
  std::vector<float> out(static_cast<size_t>(cols));
  ref::weight_row(ow.w, 2, out.data());
  for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(double(out[size_t(c)]), decode_element(ow, 2, c)) << "col " << c;
}

INSTANTIATE_TEST_SUITE_P(Types, RefMatmul, ::testing::Values(TensorType::F32, TensorType::F16, TensorType::Q8_0),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// The fused lerp {C,1,1,6}: slot s is the s-th run of C values.
TEST(WeightVector, FusedLerpSlots) {
  const int64_t C = 8;
  std::vector<float> values(size_t(6 * C));
  for (size_t i = 0; i < values.size(); ++i) values[i] = float(i);
  OwnedWeight ow(TensorType::F32, C, 6, values);
  ow.w.ne[1] = 1;
  ow.w.ne[3] = 6;
  std::vector<float> out(static_cast<size_t>(C));
  for (int64_t slot = 0; slot < 6; ++slot) {
    ref::weight_vector(ow.w, out.data(), slot);
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[size_t(c)], float(slot * C + c)) << "slot " << slot;
  }
}

}  // namespace
}  // namespace rwkv
