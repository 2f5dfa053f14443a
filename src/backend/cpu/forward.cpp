#include "backend/cpu/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cpu/ref_ops.h"
#include "common/error.h"

namespace rwkv {

namespace {

std::vector<float> vec(const Weight& w, int64_t slot = 0) {
  std::vector<float> out(size_t(w.cols()));
  ref::weight_vector(w, out.data(), slot);
  return out;
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void CpuForward::load(std::shared_ptr<const Model> model, const ProgressFn& progress) {
  model_ = std::move(model);
  const Model& m = *model_;
  lv_.resize(m.layers.size());
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const LayerWeights& w = m.layers[l];
    LayerVectors& v = lv_[l];
    v.att_norm_w = vec(w.att_norm_w), v.att_norm_b = vec(w.att_norm_b);
    v.ffn_norm_w = vec(w.ffn_norm_w), v.ffn_norm_b = vec(w.ffn_norm_b);
    for (int s = 0; s < 6; ++s) v.mu[s] = vec(w.lerp_fused, s);
    v.w0 = vec(w.w0), v.a0 = vec(w.a0), v.v0 = vec(w.v0);
    v.k_k = vec(w.k_k), v.k_a = vec(w.k_a), v.r_k = vec(w.r_k);
    v.lnx_w = vec(w.lnx_w), v.lnx_b = vec(w.lnx_b), v.ffn_mu_k = vec(w.ffn_lerp_k);
  }
  embd_norm_w_ = vec(m.embd_norm_w), embd_norm_b_ = vec(m.embd_norm_b);
  out_norm_w_ = vec(m.out_norm_w), out_norm_b_ = vec(m.out_norm_b);
  // The weights stay in the mapped file: nothing to upload.
  if (progress) progress(m.weight_bytes(), m.weight_bytes());
  set_slots(1);
}

void CpuForward::set_slots(int n) {
  if (n < 0) fail(ErrorCode::argument, "set_slots: negative slot count");
  n_slots_ = n;
  states_.assign(size_t(n) * model_->hparams().state_floats(), 0.0f);
}

void CpuForward::reset_slot(int slot) {
  if (slot < 0 || slot >= n_slots_)
    fail(ErrorCode::argument, "reset_slot: slot " + std::to_string(slot) + " out of range");
  const size_t n = model_->hparams().state_floats();
  std::fill_n(states_.begin() + ptrdiff_t(size_t(slot) * n), n, 0.0f);
}

void CpuForward::get_state(int slot, std::span<float> out) {
  const size_t n = model_->hparams().state_floats();
  if (slot < 0 || slot >= n_slots_ || out.size() != n) fail(ErrorCode::argument, "get_state: bad slot or size");
  std::memcpy(out.data(), states_.data() + size_t(slot) * n, n * sizeof(float));
}

void CpuForward::set_state(int slot, std::span<const float> in) {
  const size_t n = model_->hparams().state_floats();
  if (slot < 0 || slot >= n_slots_ || in.size() != n) fail(ErrorCode::argument, "set_state: bad slot or size");
  std::memcpy(states_.data() + size_t(slot) * n, in.data(), n * sizeof(float));
}

size_t CpuForward::memory_bytes() const {
  // The weights are mapped from the file, so count them (they are paged in as used).
  return model_->weight_bytes() + states_.size() * sizeof(float);
}

float* CpuForward::slot_state(int slot, int layer) {
  const Hparams& hp = model_->hparams();
  return states_.data() + size_t(slot) * hp.state_floats() + size_t(layer) * hp.state_floats_per_layer();
}

void CpuForward::emit(int layer, const char* name, int64_t T, int64_t width, const float* data) {
  if (hook_) hook_(layer, name, int(T), int(width), data);
}

void CpuForward::step(std::span<const SeqTokens> batch, float* logits) {
  const Hparams& hp = model_->hparams();
  const int64_t C = hp.n_embd, V = hp.n_vocab;
  std::vector<Segment> segs;
  std::vector<bool> used(size_t(n_slots_), false);
  int64_t T = 0;
  for (const SeqTokens& s : batch) {
    if (s.slot < 0 || s.slot >= n_slots_)
      fail(ErrorCode::argument, "step: slot " + std::to_string(s.slot) + " out of range");
    if (used[size_t(s.slot)]) fail(ErrorCode::argument, "step: slot " + std::to_string(s.slot) + " appears twice");
    used[size_t(s.slot)] = true;
    if (s.n_tokens < 1) fail(ErrorCode::argument, "step: a sequence with no tokens");
    for (int i = 0; i < s.n_tokens; ++i)
      if (s.tokens[i] < 0 || s.tokens[i] >= V)
        fail(ErrorCode::argument,
             "step: token id " + std::to_string(s.tokens[i]) + " outside the vocabulary of " + std::to_string(V));
    segs.push_back({s.slot, T, s.n_tokens});
    T += s.n_tokens;
  }
  if (T == 0) return;
  const size_t TC = size_t(T * C);
  for (auto* b : {&x_, &xa_, &r_, &decay_, &k_, &v_, &vfirst_, &a_, &g_, &kk_, &kmod_, &alpha_, &beta_, &y_, &o_, &out_,
                  &xf_, &xk_})
    grow(*b, TC);
  for (auto& b : xs_) grow(b, TC);
  grow(z_, TC);
  grow(lora_, size_t(T) * size_t(std::max({hp.rank_w, hp.rank_a, hp.rank_v, hp.rank_g})));
  grow(hidden_, size_t(T) * size_t(hp.n_ffn));

  // Embedding and ln0.
  {
    int64_t row = 0;
    for (const SeqTokens& s : batch)
      for (int i = 0; i < s.n_tokens; ++i, ++row) ref::weight_row(model_->tok_embd, s.tokens[i], x_.data() + row * C);
  }
  emit(-1, "embed", T, C, x_.data());
  ref::layer_norm(x_.data(), embd_norm_w_.data(), embd_norm_b_.data(), T, C, hp.ln_eps, x_.data());
  emit(-1, "embed.ln", T, C, x_.data());

  for (int l = 0; l < hp.n_layer; ++l) run_layer(l, segs, T);

  // Gather the rows that produce logits, then ln_out and the head.
  std::vector<float>& rows = xa_;
  int64_t n_out = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Segment& sg = segs[i];
    const int64_t first = batch[i].all_logits ? sg.row0 : sg.row0 + sg.n - 1;
    for (int64_t r = first; r < sg.row0 + sg.n; ++r, ++n_out)
      std::memcpy(rows.data() + n_out * C, x_.data() + r * C, size_t(C) * sizeof(float));
  }
  ref::layer_norm(rows.data(), out_norm_w_.data(), out_norm_b_.data(), n_out, C, hp.ln_eps, rows.data());
  emit(-1, "head.ln", n_out, C, rows.data());
  matmul(model_->head, rows.data(), n_out, logits);
  emit(-1, "logits", n_out, V, logits);
}

void CpuForward::run_layer(int l, const std::vector<Segment>& segs, int64_t T) {
  const Hparams& hp = model_->hparams();
  const LayerWeights& w = model_->layers[size_t(l)];
  const LayerVectors& lv = lv_[size_t(l)];
  const int64_t C = hp.n_embd, N = hp.head_size, H = hp.n_head, F = hp.n_ffn;
  float* x = x_.data();
  // The token shift of rows [t0, t1) of every sequence: out = lerp(x, previous row or the
  // slot's shift state, mu).
  const auto shift_rows = [&](int64_t t0, int64_t t1, const float* xs, const float* mu, int state_offset, float* out) {
    for (const Segment& sg : segs) {
      const int64_t a = std::max(t0, sg.row0), b = std::min(t1, sg.row0 + sg.n);
      if (a >= b) continue;
      const float* prev = a == sg.row0 ? slot_state(sg.slot, l) + state_offset : xs + (a - 1) * C;
      ref::token_shift_lerp(xs + a * C, prev, mu, b - a, C, out + a * C);
    }
  };

  // ---- time mix ----
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    ref::layer_norm(x + t0 * C, lv.att_norm_w.data(), lv.att_norm_b.data(), t1 - t0, C, hp.ln_eps, xa_.data() + t0 * C);
  });
  emit(l, "att.ln", T, C, xa_.data());
  for_rows(T, 6 * C, [&](int64_t t0, int64_t t1) {
    for (int s = 0; s < 6; ++s) shift_rows(t0, t1, xa_.data(), lv.mu[s].data(), 0, xs_[s].data());
  });
  static const char* const lerp_names[6] = {"att.xr", "att.xw", "att.xk", "att.xv", "att.xa", "att.xg"};
  for (int s = 0; s < 6; ++s) emit(l, lerp_names[s], T, C, xs_[s].data());
  const float *xr = xs_[0].data(), *xw = xs_[1].data(), *xk = xs_[2].data(), *xv = xs_[3].data(), *xa = xs_[4].data(),
              *xg = xs_[5].data();

  matmul(w.wr, xr, T, r_.data());
  emit(l, "att.r", T, C, r_.data());

  // decay = exp(-e^-0.5 sigmoid(w0 + W2 tanh(W1 xw)))
  matmul(w.w1, xw, T, lora_.data());
  for_rows(T, hp.rank_w, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * hp.rank_w; i < t1 * hp.rank_w; ++i) lora_[size_t(i)] = std::tanh(lora_[size_t(i)]);
  });
  matmul(w.w2, lora_.data(), T, z_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < C; ++c) z_[size_t(t * C + c)] += lv.w0[size_t(c)];
    ref::decay_from_logit(z_.data() + t0 * C, (t1 - t0) * C, decay_.data() + t0 * C);
  });
  emit(l, "att.decay", T, C, decay_.data());

  matmul(w.wk, xk, T, k_.data());
  emit(l, "att.k", T, C, k_.data());
  matmul(w.wv, xv, T, v_.data());
  if (l == 0) {
    std::memcpy(vfirst_.data(), v_.data(), size_t(T * C) * sizeof(float));
  } else {
    // nu = sigmoid(v0 + V2 V1 xv); v = v + nu (v_first - v)
    matmul(w.v1, xv, T, lora_.data());
    matmul(w.v2, lora_.data(), T, z_.data());
    for_rows(T, C, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t c = 0; c < C; ++c) {
          const size_t i = size_t(t * C + c);
          const float nu = sigmoid(z_[i] + lv.v0[size_t(c)]);
          v_[i] += nu * (vfirst_[i] - v_[i]);
        }
    });
  }
  emit(l, "att.v", T, C, v_.data());

  // a = sigmoid(a0 + A2 A1 xa)
  matmul(w.a1, xa, T, lora_.data());
  matmul(w.a2, lora_.data(), T, a_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < C; ++c) a_[size_t(t * C + c)] = sigmoid(a_[size_t(t * C + c)] + lv.a0[size_t(c)]);
  });
  emit(l, "att.a", T, C, a_.data());

  // g = G2 sigmoid(G1 xg)
  matmul(w.g1, xg, T, lora_.data());
  for_rows(T, hp.rank_g, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * hp.rank_g; i < t1 * hp.rank_g; ++i) lora_[size_t(i)] = sigmoid(lora_[size_t(i)]);
  });
  matmul(w.g2, lora_.data(), T, g_.data());
  emit(l, "att.g", T, C, g_.data());

  // Removal key from the unmodified k; modified key; WKV inputs alpha, beta.
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < C; ++c) kk_[size_t(t * C + c)] = k_[size_t(t * C + c)] * lv.k_k[size_t(c)];
    ref::l2_normalize_heads(kk_.data() + t0 * C, t1 - t0, C, N, 1e-12f, kk_.data() + t0 * C);
  });
  emit(l, "att.kk", T, C, kk_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = size_t(t * C + c);
        kmod_[i] = k_[i] * (1.0f + (a_[i] - 1.0f) * lv.k_a[size_t(c)]);
        alpha_[i] = -kk_[i];
        beta_[i] = kk_[i] * a_[i];
      }
  });
  emit(l, "att.k_mod", T, C, kmod_.data());

  for (const Segment& sg : segs) {
    const size_t o = size_t(sg.row0 * C);
    wkv(slot_state(sg.slot, l) + 2 * C, r_.data() + o, decay_.data() + o, kmod_.data() + o, v_.data() + o,
        alpha_.data() + o, beta_.data() + o, sg.n, y_.data() + o);
  }
  emit(l, "att.wkv", T, C, y_.data());

  // ln_x (group norm per head), then the bonus (r . k_mod . r_k per head) * v.
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    ref::group_norm(y_.data() + t0 * C, lv.lnx_w.data(), lv.lnx_b.data(), t1 - t0, C, N, hp.gn_eps, o_.data() + t0 * C);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const size_t b = size_t(t * C + h * N);
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += double(r_[b + n]) * kmod_[b + n] * lv.r_k[size_t(h * N + n)];
        for (int64_t n = 0; n < N; ++n) o_[b + n] += float(s) * v_[b + n];
      }
  });
  emit(l, "att.lnx", T, C, o_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * C; i < t1 * C; ++i) o_[size_t(i)] *= g_[size_t(i)];
  });
  matmul(w.wo, o_.data(), T, out_.data());
  emit(l, "att.out", T, C, out_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * C; i < t1 * C; ++i) x[i] += out_[size_t(i)];
  });
  for (const Segment& sg : segs)
    std::memcpy(slot_state(sg.slot, l), xa_.data() + (sg.row0 + sg.n - 1) * C, size_t(C) * sizeof(float));

  // ---- channel mix ----
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    ref::layer_norm(x + t0 * C, lv.ffn_norm_w.data(), lv.ffn_norm_b.data(), t1 - t0, C, hp.ln_eps, xf_.data() + t0 * C);
  });
  emit(l, "ffn.ln", T, C, xf_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) { shift_rows(t0, t1, xf_.data(), lv.ffn_mu_k.data(), C, xk_.data()); });
  emit(l, "ffn.xk", T, C, xk_.data());
  matmul(w.ffn_key, xk_.data(), T, hidden_.data());
  for_rows(T, F, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * F; i < t1 * F; ++i) {
      const float h = hidden_[size_t(i)] > 0 ? hidden_[size_t(i)] : 0.0f;
      hidden_[size_t(i)] = h * h;
    }
  });
  emit(l, "ffn.hidden", T, F, hidden_.data());
  ffn_value(l, w.ffn_value, hidden_.data(), T, out_.data());
  emit(l, "ffn.out", T, C, out_.data());
  for_rows(T, C, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * C; i < t1 * C; ++i) x[i] += out_[size_t(i)];
  });
  for (const Segment& sg : segs)
    std::memcpy(slot_state(sg.slot, l) + C, xf_.data() + (sg.row0 + sg.n - 1) * C, size_t(C) * sizeof(float));
  emit(l, "layer.out", T, C, x);
}

}  // namespace rwkv
