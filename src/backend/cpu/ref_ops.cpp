#include "backend/cpu/ref_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/quant.h"

namespace rwkv::ref {

void matmul(const Weight& W, const float* x, int64_t T, float* y) {
  const int64_t rows = W.rows(), cols = W.cols();
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(W.type, W.data + size_t(r) * W.row_stride(), row.data(), cols);
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * cols;
      // Four partial sums: the same double-precision result to rounding, but independent
      // chains let the CPU overlap them (the reference is otherwise latency-bound).
      double acc[4] = {0, 0, 0, 0};
      int64_t c = 0;
      for (; c + 4 <= cols; c += 4)
        for (int u = 0; u < 4; ++u) acc[u] += double(row[size_t(c + u)]) * double(xt[c + u]);
      for (; c < cols; ++c) acc[0] += double(row[size_t(c)]) * double(xt[c]);
      y[t * rows + r] = float((acc[0] + acc[1]) + (acc[2] + acc[3]));
    }
  }
}

void weight_row(const Weight& W, int64_t index, float* out) {
  dequantize_row(W.type, W.data + size_t(index) * W.row_stride(), out, W.cols());
}

void weight_vector(const Weight& W, float* out, int64_t slot) {
  // The fused lerp {C,1,1,6} is 6 rows of C; a plain vector is one row.
  weight_row(W, slot, out);
}

void layer_norm(const float* x, const float* w, const float* b, int64_t T, int64_t width, float eps, float* y) {
  group_norm(x, w, b, T, width, width, eps, y);
}

void group_norm(const float* x, const float* w, const float* b, int64_t T, int64_t width, int64_t group, float eps,
                float* y) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t g0 = 0; g0 < width; g0 += group) {
      const float* xg = x + t * width + g0;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < group; ++i) mean += xg[i];
      mean /= double(group);
      for (int64_t i = 0; i < group; ++i) var += (xg[i] - mean) * (xg[i] - mean);
      var /= double(group);
      const double inv = 1.0 / std::sqrt(var + double(eps));
      for (int64_t i = 0; i < group; ++i) {
        const int64_t c = g0 + i;
        y[t * width + c] = float((xg[i] - mean) * inv * double(w[c]) + double(b[c]));
      }
    }
  }
}

void token_shift_lerp(const float* x, const float* shift, const float* mu, int64_t T, int64_t C, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const float* prev = t == 0 ? shift : x + (t - 1) * C;
    for (int64_t c = 0; c < C; ++c) {
      const double xc = x[t * C + c];
      out[t * C + c] = float(xc + (double(prev[c]) - xc) * double(mu[c]));
    }
  }
}

void decay_from_logit(const float* z, int64_t n, float* decay) {
  const double inv_sqrt_e = 0.6065306597126334;  // e^-0.5
  for (int64_t i = 0; i < n; ++i) {
    const double sig = 1.0 / (1.0 + std::exp(-double(z[i])));
    decay[i] = float(std::exp(-inv_sqrt_e * sig));
  }
}

void wkv7_head_step(float* S, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
                    const float* beta, int64_t N, float* y) {
  for (int64_t i = 0; i < N; ++i) {
    float* row = S + i * N;
    double sa = 0;  // removal term from the state before decay (spec P7)
    for (int64_t j = 0; j < N; ++j) sa += double(alpha[j]) * double(row[j]);
    double out = 0;
    for (int64_t j = 0; j < N; ++j) {
      const double s = double(row[j]) * double(decay[j]) + double(v[i]) * double(k[j]) + sa * double(beta[j]);
      row[j] = float(s);
      out += s * double(r[j]);
    }
    y[i] = float(out);
  }
}

void wkv7(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
          const float* beta, int64_t T, int64_t H, int64_t N, float* y) {
  const int64_t C = H * N;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = t * C + h * N;
      wkv7_head_step(state + h * N * N, r + o, decay + o, k + o, v + o, alpha + o, beta + o, N, y + o);
    }
  }
}

void l2_normalize_heads(const float* x, int64_t T, int64_t C, int64_t N, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h0 = 0; h0 < C; h0 += N) {
      const float* xh = x + t * C + h0;
      double ss = 0;
      for (int64_t i = 0; i < N; ++i) ss += double(xh[i]) * double(xh[i]);
      const double norm = std::max(std::sqrt(ss), double(eps));
      for (int64_t i = 0; i < N; ++i) y[t * C + h0 + i] = float(xh[i] / norm);
    }
  }
}

}  // namespace rwkv::ref
