// An independent float64 RWKV-7 forward pass for tests: written straight from the spec
// (§2), sharing nothing with the backends except the dequantisation of weights. Slow;
// meant for small models.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace rwkv::testing {

class F64Model {
 public:
  explicit F64Model(const Model& model);
  // Feeds one token and returns the logits (n_vocab values).
  std::vector<double> step(int32_t token);

 private:
  using Vec = std::vector<double>;
  struct Layer {
    Vec ln1_w, ln1_b, ln2_w, ln2_b, mu[6], w0, a0, v0, k_k, k_a, r_k, lnx_w, lnx_b, mu_ffn;
    std::vector<Vec> w1, w2, a1, a2, v1, v2, g1, g2, wr, wk, wv, wo, key, value;  // rows
    Vec att_shift, ffn_shift;
    std::vector<Vec> S;  // H * N rows of N: S[h*N + i][j]
  };
  static Vec vec(const Weight& w, int64_t row = 0);
  static std::vector<Vec> mat(const Weight& w);
  static Vec mul(const std::vector<Vec>& W, const Vec& x);
  Vec layer_norm(const Vec& x, const Vec& w, const Vec& b) const;

  const Model& model_;
  Hparams hp_;
  std::vector<Vec> emb_, head_;
  Vec ln0_w_, ln0_b_, lnout_w_, lnout_b_;
  std::vector<Layer> layers_;
};

}  // namespace rwkv::testing
