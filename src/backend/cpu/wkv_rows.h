// WKV-7 for the fast CPU backend, by state rows. Row i of a head's N x N state (value channel
// i) changes with only itself and the token's vectors, so the H x N rows of the state are
// independent; a thread takes a range of them through every token of the step.
#pragma once

#include <cstdint>

namespace rwkv {

// Thread ranges of rows should start at multiples of this (and N is one), so that the rows
// that wkv_rows steps together always belong to one head.
constexpr int64_t kWkvRowGrain = 4;

// For rows i in [i0, i1) of the state ([C rows of N floats]; rows hN..hN+N-1 are head h) and
// every token t < T in turn, with the token's vectors r, decay, k, alpha, beta, v and y at
// t * C (C = H * N): sa = alpha_h . row; row = row * decay_h + v[i] k_h + sa beta_h;
// y[t * C + i] = row . r_h, in float32 (ref::wkv7_head_step is the readable version).
void wkv_rows(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
              const float* beta, int64_t T, int64_t C, int64_t N, int64_t i0, int64_t i1, float* y);

}  // namespace rwkv
