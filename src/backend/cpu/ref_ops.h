// The reference operators of RWKV-7 (spec §2), one function per op: plain loops over
// float32 tensors with double accumulators, written to be read next to the spec. cpu-ref
// is built from these, and every other backend's op parity tests compare against them.
// Shapes are given as [rows x width], row-major, one row per token.
#pragma once

#include <cstdint>

#include "model/model.h"

namespace rwkv::ref {

// y = W x for every row: x [T x W.cols()], y [T x W.rows()]. Dequantises W row by row.
void matmul(const Weight& W, const float* x, int64_t T, float* y);
// Row `index` of a weight (e.g. an embedding) as float: out [W.cols()].
void weight_row(const Weight& W, int64_t index, float* out);
// A 1-D weight (or the slot `slot` of the fused lerp) as float: out [W.cols()].
void weight_vector(const Weight& W, float* out, int64_t slot = 0);

// LayerNorm over `width` channels per row, population variance: y = (x-mean)/sqrt(var+eps)*w+b.
void layer_norm(const float* x, const float* w, const float* b, int64_t T, int64_t width, float eps, float* y);
// Group norm: each row split into groups of `group` channels, each normalised alone, then
// the per-channel affine w, b (length width).
void group_norm(const float* x, const float* w, const float* b, int64_t T, int64_t width, int64_t group, float eps,
                float* y);

// Token shift + lerp: out[t] = x[t] + (prev[t] - x[t]) * mu, where prev[0] = shift (the
// state) and prev[t] = x[t-1]. x [T x C], mu [C], shift [C].
void token_shift_lerp(const float* x, const float* shift, const float* mu, int64_t T, int64_t C, float* out);

// decay = exp(-e^-0.5 * sigmoid(z)) elementwise, n values.
void decay_from_logit(const float* z, int64_t n, float* decay);

// One WKV7 step for one head (spec §2.3): S [N x N] (row i = value, column j = key) is
// updated in place; y [N] = S' r. alpha = -kk_hat, beta = kk_hat * a.
void wkv7_head_step(float* S, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
                    const float* beta, int64_t N, float* y);

// Whole WKV7 for T tokens of one sequence: r, decay, k, v, alpha, beta, y are [T x C] with
// C = H*N; state is [H x N x N] and is updated.
void wkv7(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
          const float* beta, int64_t T, int64_t H, int64_t N, float* y);

// Per-head L2 normalisation with torch semantics (clamp the norm at eps): x [T x C].
void l2_normalize_heads(const float* x, int64_t T, int64_t C, int64_t N, float eps, float* y);

}  // namespace rwkv::ref
