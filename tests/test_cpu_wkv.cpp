// The fast CPU backend's WKV by state rows (backend/cpu/wkv_rows.h) against ref::wkv7 (double
// sums): head sizes the vector paths take (8, 16, 32, 64: one to four 16-float or eight
// 8-float vectors a row) and ones they leave to the plain loop (12, 128), one token and
// several, row ranges that start and end inside a group of rows or a head, and a NaN in the
// state staying in its row.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cpu/ref_ops.h"
#include "backend/cpu/wkv_rows.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

using testing::random_vector;
using testing::rel_l2;

struct Inputs {
  std::vector<float> state, r, decay, k, v, alpha, beta;
};

// Decay in (0, 1) and alpha = -kappa, beta = kappa * a as the model makes them (spec P7),
// so that states stay bounded over the tokens.
Inputs make_inputs(int64_t H, int64_t N, int64_t T, uint64_t seed) {
  const size_t C = size_t(H * N), TC = size_t(T) * C;
  Inputs in;
  in.state = random_vector(C * size_t(N), -0.5f, 0.5f, seed);
  in.r = random_vector(TC, -1.0f, 1.0f, seed + 1);
  in.k = random_vector(TC, -1.0f, 1.0f, seed + 2);
  in.v = random_vector(TC, -1.0f, 1.0f, seed + 3);
  in.decay = random_vector(TC, 0.05f, 0.95f, seed + 4);
  const std::vector<float> kappa = random_vector(TC, -1.0f, 1.0f, seed + 5),
                           a = random_vector(TC, 0.0f, 1.0f, seed + 6);
  in.alpha.resize(TC);
  in.beta.resize(TC);
  for (size_t i = 0; i < TC; ++i) {
    const float kap = kappa[i] / std::sqrt(float(N));
    in.alpha[i] = -kap;
    in.beta[i] = kap * a[i];
  }
  return in;
}

// Runs wkv_rows over the given row ranges (covering all rows) and ref::wkv7 on a copy.
void check(int64_t H, int64_t N, int64_t T, const std::vector<int64_t>& cuts) {
  const int64_t C = H * N;
  Inputs in = make_inputs(H, N, T, uint64_t(100 * N + T));
  std::vector<float> ref_state = in.state, ref_y(size_t(T * C)), y(size_t(T * C), NAN);
  ref::wkv7(ref_state.data(), in.r.data(), in.decay.data(), in.k.data(), in.v.data(), in.alpha.data(), in.beta.data(),
            T, H, N, ref_y.data());
  for (size_t c = 0; c + 1 < cuts.size(); ++c)
    wkv_rows(in.state.data(), in.r.data(), in.decay.data(), in.k.data(), in.v.data(), in.alpha.data(), in.beta.data(),
             T, C, N, cuts[c], cuts[c + 1], y.data());
  EXPECT_LE(rel_l2(y, ref_y), 1e-5) << "N=" << N << " T=" << T;
  EXPECT_LE(rel_l2(in.state, ref_state), 1e-5) << "N=" << N << " T=" << T;
  for (size_t t = 0; t < size_t(T); ++t)
    for (size_t i = 0; i < size_t(C); ++i) {
      const double tol = 1e-4 * (1.0 + std::fabs(ref_y[t * size_t(C) + i]));
      ASSERT_NEAR(y[t * size_t(C) + i], ref_y[t * size_t(C) + i], tol) << "N=" << N << " y[" << t << "][" << i << "]";
    }
}

TEST(CpuWkv, MatchesReferenceOverHeadSizesAndRowRanges) {
  for (const int64_t N : {8, 12, 16, 32, 64, 128}) {
    const int64_t H = 3, C = H * N;
    for (const int64_t T : {1, 7}) {
      check(H, N, T, {0, C});                          // one range
      check(H, N, T, {0, 4, C / 2, C - 1, C});         // grain-aligned start, ragged ends
      check(H, N, T, {0, 1, 3, N + 2, 2 * N + 5, C});  // ranges starting inside groups and heads
    }
  }
}

TEST(CpuWkv, NanStaysInItsRow) {
  const int64_t H = 2, N = 64, C = H * N, T = 3;
  Inputs in = make_inputs(H, N, T, 7);
  const int64_t bad_row = 70;  // head 1, row 6
  in.state[size_t(bad_row * N + 5)] = NAN;
  std::vector<float> y(size_t(T * C));
  wkv_rows(in.state.data(), in.r.data(), in.decay.data(), in.k.data(), in.v.data(), in.alpha.data(), in.beta.data(), T,
           C, N, 0, C, y.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < C; ++i)
      EXPECT_EQ(std::isnan(y[size_t(t * C + i)]), i == bad_row) << "y[" << t << "][" << i << "]";
}

}  // namespace
}  // namespace rwkv
