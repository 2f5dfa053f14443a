#include "reference/f64_model.h"

#include <cmath>

#include "tensor/quant.h"

namespace rwkv::testing {

F64Model::Vec F64Model::vec(const Weight& w, int64_t row) {
  std::vector<float> f(static_cast<size_t>(w.cols()));
  dequantize_row(w.type, w.data + size_t(row) * w.row_stride(), f.data(), w.cols());
  return Vec(f.begin(), f.end());
}

std::vector<F64Model::Vec> F64Model::mat(const Weight& w) {
  std::vector<Vec> m;
  for (int64_t r = 0; r < w.rows(); ++r) m.push_back(vec(w, r));
  return m;
}

F64Model::Vec F64Model::mul(const std::vector<Vec>& W, const Vec& x) {
  Vec y(W.size());
  for (size_t r = 0; r < W.size(); ++r) {
    double s = 0;
    for (size_t c = 0; c < x.size(); ++c) s += W[r][c] * x[c];
    y[r] = s;
  }
  return y;
}

F64Model::Vec F64Model::layer_norm(const Vec& x, const Vec& w, const Vec& b) const {
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= double(x.size());
  for (double v : x) var += (v - mean) * (v - mean);
  var /= double(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + hp_.ln_eps) * w[i] + b[i];
  return y;
}

F64Model::F64Model(const Model& model) : model_(model), hp_(model.hparams()) {
  emb_ = mat(model.tok_embd);
  head_ = mat(model.head);
  ln0_w_ = vec(model.embd_norm_w), ln0_b_ = vec(model.embd_norm_b);
  lnout_w_ = vec(model.out_norm_w), lnout_b_ = vec(model.out_norm_b);
  const size_t C = size_t(hp_.n_embd), N = size_t(hp_.head_size);
  for (const LayerWeights& w : model.layers) {
    Layer L;
    L.ln1_w = vec(w.att_norm_w), L.ln1_b = vec(w.att_norm_b), L.ln2_w = vec(w.ffn_norm_w), L.ln2_b = vec(w.ffn_norm_b);
    for (int s = 0; s < 6; ++s) L.mu[s] = vec(w.lerp_fused, s);
    L.w0 = vec(w.w0), L.a0 = vec(w.a0), L.v0 = vec(w.v0), L.k_k = vec(w.k_k), L.k_a = vec(w.k_a), L.r_k = vec(w.r_k);
    L.lnx_w = vec(w.lnx_w), L.lnx_b = vec(w.lnx_b), L.mu_ffn = vec(w.ffn_lerp_k);
    L.w1 = mat(w.w1), L.w2 = mat(w.w2), L.a1 = mat(w.a1), L.a2 = mat(w.a2), L.v1 = mat(w.v1), L.v2 = mat(w.v2);
    L.g1 = mat(w.g1), L.g2 = mat(w.g2), L.wr = mat(w.wr), L.wk = mat(w.wk), L.wv = mat(w.wv), L.wo = mat(w.wo);
    L.key = mat(w.ffn_key), L.value = mat(w.ffn_value);
    L.att_shift.assign(C, 0), L.ffn_shift.assign(C, 0);
    L.S.assign(C, Vec(N, 0));
    layers_.push_back(std::move(L));
  }
}

std::vector<double> F64Model::step(int32_t token) {
  const size_t C = size_t(hp_.n_embd), N = size_t(hp_.head_size), H = size_t(hp_.n_head);
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  Vec x = layer_norm(emb_[size_t(token)], ln0_w_, ln0_b_);
  Vec v_first;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = layers_[l];
    const Vec xa = layer_norm(x, L.ln1_w, L.ln1_b);
    Vec xs[6];
    for (int s = 0; s < 6; ++s) {
      xs[s].resize(C);
      for (size_t c = 0; c < C; ++c) xs[s][c] = xa[c] + (L.att_shift[c] - xa[c]) * L.mu[s][c];
    }
    const Vec r = mul(L.wr, xs[0]);
    Vec t = mul(L.w1, xs[1]);
    for (double& e : t) e = std::tanh(e);
    Vec decay = mul(L.w2, t);
    for (size_t c = 0; c < C; ++c) decay[c] = std::exp(-std::exp(-0.5) * sig(L.w0[c] + decay[c]));
    const Vec k = mul(L.wk, xs[2]);
    Vec v = mul(L.wv, xs[3]);
    if (l == 0) {
      v_first = v;
    } else {
      const Vec nu = mul(L.v2, mul(L.v1, xs[3]));
      for (size_t c = 0; c < C; ++c) v[c] += sig(L.v0[c] + nu[c]) * (v_first[c] - v[c]);
    }
    Vec a = mul(L.a2, mul(L.a1, xs[4]));
    for (size_t c = 0; c < C; ++c) a[c] = sig(L.a0[c] + a[c]);
    Vec g1 = mul(L.g1, xs[5]);
    for (double& e : g1) e = sig(e);
    const Vec g = mul(L.g2, g1);
    Vec o(C);
    for (size_t h = 0; h < H; ++h) {
      const size_t b = h * N;
      double nrm = 0;
      Vec kk(N), km(N);
      for (size_t n = 0; n < N; ++n) kk[n] = k[b + n] * L.k_k[b + n], nrm += kk[n] * kk[n];
      nrm = std::max(std::sqrt(nrm), 1e-12);
      for (size_t n = 0; n < N; ++n) kk[n] /= nrm, km[n] = k[b + n] * (1 + (a[b + n] - 1) * L.k_a[b + n]);
      Vec y(N);
      for (size_t i = 0; i < N; ++i) {
        Vec& row = L.S[b + i];
        double sa = 0;
        for (size_t j = 0; j < N; ++j) sa += -kk[j] * row[j];
        for (size_t j = 0; j < N; ++j) row[j] = row[j] * decay[b + j] + v[b + i] * km[j] + sa * kk[j] * a[b + j];
        for (size_t j = 0; j < N; ++j) y[i] += row[j] * r[b + j];
      }
      double mean = 0, var = 0, bonus = 0;
      for (double e : y) mean += e;
      mean /= double(N);
      for (double e : y) var += (e - mean) * (e - mean);
      var /= double(N);
      for (size_t n = 0; n < N; ++n) bonus += r[b + n] * km[n] * L.r_k[b + n];
      for (size_t n = 0; n < N; ++n)
        o[b + n] = ((y[n] - mean) / std::sqrt(var + hp_.gn_eps) * L.lnx_w[b + n] + L.lnx_b[b + n] + bonus * v[b + n]) *
                   g[b + n];
    }
    const Vec att = mul(L.wo, o);
    for (size_t c = 0; c < C; ++c) x[c] += att[c];
    L.att_shift = xa;
    const Vec xf = layer_norm(x, L.ln2_w, L.ln2_b);
    Vec xk(C);
    for (size_t c = 0; c < C; ++c) xk[c] = xf[c] + (L.ffn_shift[c] - xf[c]) * L.mu_ffn[c];
    Vec hid = mul(L.key, xk);
    for (double& e : hid) e = e > 0 ? e * e : 0;
    const Vec ffn = mul(L.value, hid);
    for (size_t c = 0; c < C; ++c) x[c] += ffn[c];
    L.ffn_shift = xf;
  }
  return mul(head_, layer_norm(x, lnout_w_, lnout_b_));
}

}  // namespace rwkv::testing
