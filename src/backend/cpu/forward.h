// The RWKV-7 forward pass on the host, shared by the two CPU backends. It runs a whole
// step layer by layer over all tokens of all sequences at once (rows = tokens, sequence-
// major). The two backends differ only in how they multiply matrices and run WKV:
// cpu-ref dequantises and accumulates in double (the oracle); cpu uses SIMD kernels on the
// stored bytes with threads.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace rwkv {

class CpuForward : public Backend {
 public:
  void load(std::shared_ptr<const Model> model, const ProgressFn& progress) override;
  void set_slots(int n) override;
  int slots() const override { return n_slots_; }
  void reset_slot(int slot) override;
  void get_state(int slot, std::span<float> out) override;
  void set_state(int slot, std::span<const float> in) override;
  void step(std::span<const SeqTokens> batch, float* logits) override;
  size_t memory_bytes() const override;

 protected:
  // y [T x W.rows()] = x [T x W.cols()] * W^T.
  virtual void matmul(const Weight& W, const float* x, int64_t T, float* y) = 0;
  // WKV7 over T tokens of one sequence (spec §2.3); state [H x N x N] is updated.
  virtual void wkv(float* state, const float* r, const float* decay, const float* k, const float* v, const float* alpha,
                   const float* beta, int64_t T, float* y) = 0;
  // FFN value product of `layer` after ReLU^2 (W is its ffn_value): by default a plain
  // matmul; the fast path skips the zero units where that reads fewer bytes.
  virtual void ffn_value(int layer, const Weight& W, const float* hidden, int64_t T, float* y) {
    matmul(W, hidden, T, y);
  }

  // Calls fn(t0, t1) over ranges covering the rows [0, T) of elementwise work `width` values
  // wide a row: by default all on the calling thread (cpu-ref); the fast backend spreads
  // enough work over its threads. Rows must be independent.
  virtual void for_rows(int64_t T, int64_t width, const std::function<void(int64_t, int64_t)>& fn) { fn(0, T); }

  std::shared_ptr<const Model> model_;

 private:
  // Small per-layer vectors converted to float once at load.
  struct LayerVectors {
    std::vector<float> att_norm_w, att_norm_b, ffn_norm_w, ffn_norm_b;
    std::vector<float> mu[6];  // r, w, k, v, a, g
    std::vector<float> w0, a0, v0, k_k, k_a, r_k, lnx_w, lnx_b, ffn_mu_k;
  };
  struct Segment {
    int slot;
    int64_t row0, n;
  };
  void run_layer(int l, const std::vector<Segment>& segs, int64_t T);
  float* slot_state(int slot, int layer);  // [att_shift C][ffn_shift C][wkv H*N*N]
  void emit(int layer, const char* name, int64_t T, int64_t width, const float* data);

  std::vector<LayerVectors> lv_;
  std::vector<float> embd_norm_w_, embd_norm_b_, out_norm_w_, out_norm_b_;
  int n_slots_ = 0;
  std::vector<float> states_;
  // Scratch [T x width] activations, grown on demand and reused between steps.
  std::vector<float> x_, xa_, xs_[6], r_, z_, lora_, decay_, k_, v_, vfirst_, a_, g_, kk_, kmod_, alpha_, beta_, y_, o_,
      out_, xf_, xk_, hidden_;
};

}  // namespace rwkv
