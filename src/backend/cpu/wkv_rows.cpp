// wkv_rows: a group of state rows of one head is held in vector registers through all the
// step's tokens (loaded and stored once a step, not once a token), and the rows of a group
// share each token's vectors and overlap their dependent sums. The SIMD policies are the
// matmul kernels' (tensor/matmul_avx2.h); without AVX2 every row takes the plain loop.
#include "backend/cpu/wkv_rows.h"

#include <array>
#include <utility>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "tensor/matmul_avx2.h"
#endif

namespace rwkv {
namespace {

// One row, one token, any N: the readable form.
float row_step(float* row, const float* r, const float* d, const float* k, float vi, const float* alpha,
               const float* beta, int64_t N) {
  float sa = 0;
  for (int64_t j = 0; j < N; ++j) sa += alpha[j] * row[j];
  float y = 0;
  for (int64_t j = 0; j < N; ++j) {
    const float s = row[j] * d[j] + vi * k[j] + sa * beta[j];
    row[j] = s;
    y += s * r[j];
  }
  return y;
}

void rows_plain(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
                const float* beta, int64_t T, int64_t C, int64_t N, int64_t i0, int64_t i1, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t head = t * C + i / N * N;  // the token's vectors of this row's head
      y[t * C + i] =
          row_step(state + i * N, r + head, decay + head, k + head, v[t * C + i], alpha + head, beta + head, N);
    }
  }
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
using P = matmul_detail::Wide;
// Rows a group, and the most vectors a row: the group's rows stay in registers (16 of the 32
// zmm; AVX2's 16 ymm hold one row of up to 64).
constexpr int kGroup = matmul_detail::kVectorRegisters == 32 ? 4 : 1;
constexpr int kMaxVecs = matmul_detail::kVectorRegisters == 32 ? 4 : 8;

// Rows [i, i + G) of one head, NV vectors of N = NV * P::kFloats floats each.
template <int NV, int G>
void group_simd(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
                const float* beta, int64_t T, int64_t C, int64_t i, float* y) {
  constexpr int64_t N = NV * P::kFloats;
  const int64_t head = i / N * N;
  P::F s[G][NV];
  for (int g = 0; g < G; ++g)
    for (int n = 0; n < NV; ++n) s[g][n] = P::load(state + (i + g) * N + n * P::kFloats);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t o = t * C + head;
    P::F dot[G];
    for (int g = 0; g < G; ++g) dot[g] = P::fzero();
    for (int n = 0; n < NV; ++n) {
      const P::F a = P::load(alpha + o + n * P::kFloats);
      for (int g = 0; g < G; ++g) dot[g] = P::fma(a, s[g][n], dot[g]);
    }
    P::F sa[G], vi[G], out[G];
    for (int g = 0; g < G; ++g) {
      sa[g] = P::set1(P::hsum(dot[g]));
      vi[g] = P::set1(v[t * C + i + g]);
      out[g] = P::fzero();
    }
    for (int n = 0; n < NV; ++n) {
      const int64_t at = o + n * P::kFloats;
      const P::F d = P::load(decay + at), kk = P::load(k + at), b = P::load(beta + at), rr = P::load(r + at);
      for (int g = 0; g < G; ++g) {
        s[g][n] = P::fma(s[g][n], d, P::fma(vi[g], kk, P::mul(sa[g], b)));
        out[g] = P::fma(s[g][n], rr, out[g]);
      }
    }
    for (int g = 0; g < G; ++g) y[t * C + i + g] = P::hsum(out[g]);
  }
  for (int g = 0; g < G; ++g)
    for (int n = 0; n < NV; ++n) P::store(state + (i + g) * N + n * P::kFloats, s[g][n]);
}

using GroupFn = void (*)(float*, const float*, const float*, const float*, const float*, const float*, const float*,
                         int64_t, int64_t, int64_t, float*);
template <int G, size_t... V>
constexpr std::array<GroupFn, sizeof...(V)> group_table(std::index_sequence<V...>) {
  return {&group_simd<int(V) + 1, G>...};
}
#endif

}  // namespace

void wkv_rows(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
              const float* beta, int64_t T, int64_t C, int64_t N, int64_t i0, int64_t i1, float* y) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (N % P::kFloats == 0 && N / P::kFloats <= kMaxVecs && N % kGroup == 0) {
    static constexpr auto groups = group_table<kGroup>(std::make_index_sequence<kMaxVecs>{});
    static constexpr auto singles = group_table<1>(std::make_index_sequence<kMaxVecs>{});
    const size_t nv = size_t(N / P::kFloats) - 1;
    int64_t i = i0;
    for (; i < i1 && i % kGroup != 0; ++i) singles[nv](state, r, decay, k, v, alpha, beta, T, C, i, y);
    for (; i + kGroup <= i1; i += kGroup) groups[nv](state, r, decay, k, v, alpha, beta, T, C, i, y);
    for (; i < i1; ++i) singles[nv](state, r, decay, k, v, alpha, beta, T, C, i, y);
    return;
  }
#endif
  rows_plain(state, r, decay, k, v, alpha, beta, T, C, N, i0, i1, y);
}

}  // namespace rwkv
