// An RWKV-7 (x070) model as read from GGUF: hyper-parameters checked against every tensor
// shape, and views of the weights in the mapped file (no copy). Spec §2, §3.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/types.h"

namespace rwkv::gguf {
class File;
}

namespace rwkv {

struct Hparams {
  int n_embd = 0;                                      // C
  int n_layer = 0;                                     // L
  int head_size = 0;                                   // N (64 for every G1 model)
  int n_head = 0;                                      // H = C / N
  int n_ffn = 0;                                       // F
  int n_vocab = 0;                                     // V
  int rank_w = 0, rank_a = 0, rank_v = 0, rank_g = 0;  // LoRA ranks Dw, Da, Dv, Dg
  float ln_eps = 1e-5f;                                // LayerNorm epsilon
  float gn_eps = 64e-5f;                               // group norm (ln_x) epsilon = N * 1e-5

  // Floats of one sequence's recurrent state: per layer [att_shift C][ffn_shift C][wkv H*N*N].
  size_t state_floats_per_layer() const { return size_t(2 * n_embd) + size_t(n_embd) * size_t(head_size); }
  size_t state_floats() const { return state_floats_per_layer() * size_t(n_layer); }
};

// A weight tensor in the file. A matrix "out x in" has ne = {in, out}: `rows()` rows of
// `cols()` elements, row stride row_bytes(type, cols()).
struct Weight {
  std::string name;
  TensorType type = TensorType::F32;
  int64_t ne[4] = {1, 1, 1, 1};
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  size_t row_stride() const { return row_bytes(type, ne[0]); }
};

struct LayerWeights {
  Weight att_norm_w, att_norm_b;  // ln1 {C}
  Weight ffn_norm_w, ffn_norm_b;  // ln2 {C}
  Weight lerp_fused;              // {C,1,1,6}: mu_r, mu_w, mu_k, mu_v, mu_a, mu_g
  Weight w0, w1, w2;              // decay: {C}, W1 {C,Dw} (Dw x C), W2 {Dw,C} (C x Dw)
  Weight a0, a1, a2;              // in-context learning rate: {C}, {C,Da}, {Da,C}
  Weight v0, v1, v2;              // value residual (layers >= 1): {C}, {C,Dv}, {Dv,C}
  Weight g1, g2;                  // gate: {C,Dg} (Dg x C), {Dg,C} (C x Dg)
  Weight k_k, k_a, r_k;           // {C}
  Weight wr, wk, wv, wo;          // C x C
  Weight lnx_w, lnx_b;            // group norm affine {C}
  Weight ffn_lerp_k;              // {C} (or {C,1,1})
  Weight ffn_key;                 // {C,F}: F x C
  Weight ffn_value;               // {F,C}: C x F
};

class Model {
 public:
  // Opens and validates a GGUF file: architecture, hyper-parameters, every tensor's
  // presence, shape and type. Errors name the file and the tensor or key.
  static std::shared_ptr<Model> load(const std::string& path);
  // Same, from an already opened file.
  static std::shared_ptr<Model> from_gguf(std::shared_ptr<gguf::File> file);

  const std::string& path() const { return path_; }
  const Hparams& hparams() const { return hp_; }
  const gguf::File& file() const { return *file_; }
  std::shared_ptr<gguf::File> file_ptr() const { return file_; }

  Weight tok_embd;                  // {C,V}: V rows of C
  Weight embd_norm_w, embd_norm_b;  // ln0 {C}
  Weight out_norm_w, out_norm_b;    // ln_out {C}
  Weight head;                      // {C,V}: V x C
  std::vector<LayerWeights> layers;

  // Sum of all weight bytes (what decode reads per token, roughly).
  size_t weight_bytes() const;
  // Every weight with its role, in file order, for uploaders and `rwkv info`.
  std::vector<const Weight*> all_weights() const;

 private:
  std::string path_;
  Hparams hp_;
  std::shared_ptr<gguf::File> file_;
};

}  // namespace rwkv
