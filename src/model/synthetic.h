// Random-weight RWKV-7 models in llama.cpp's exact GGUF layout, for tests and benchmarks
// (`rwkv make-model`). Values are drawn so that activations stay in a realistic range.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tensor/types.h"

namespace rwkv {

struct SyntheticSpec {
  int n_embd = 128, n_layer = 2, head_size = 64, n_ffn = 512, n_vocab = 512;
  int rank_w = 32, rank_a = 32, rank_v = 16, rank_g = 32;
  TensorType type = TensorType::F32;       // the big matrices (and embedding, head)
  TensorType head_type = TensorType::F32;  // output.weight; defaults to `type` in make_model tools
  // channel_mix_value of the odd layers, where set (mixes such as Q4_K_M vary it by layer).
  std::optional<TensorType> odd_ffn_value_type;
  uint64_t seed = 1;
  // 0: every row drawn and encoded afresh. N > 0: each row is a copy of one of N random
  // rows encoded once per tensor kind (type, width, value range), which writes the real
  // 2.9B shape in seconds instead of minutes; for benchmarks, where values do not matter.
  int pool_rows = 0;
  // 0: FFN key weights centred on zero, so that ReLU^2 zeroes about half of the hidden units.
  // D in (0, 1): about a fraction D of them non-zero, as in trained models (the demo model:
  // ~0.12), where the ReLU^2-sparse value products read only those units' weights. The FFN
  // LayerNorm bias is drawn around 0.5 and the key weights shifted below zero to match.
  double ffn_density = 0;

  // The real shapes (spec §1.1) with vocabulary 65536.
  static SyntheticSpec shape_0_1b();
  static SyntheticSpec shape_2_9b();
};

// Writes the model to `path` (GGUF v3). Small LoRA/lerp/norm tensors follow the
// converter's dtype policy (spec §3.3): F32 for 1-D, lerp, w1/w2; a1/a2/v1/v2/g1/g2 in F16
// unless `type` is F32. Throws Error(argument) for impossible shapes.
void write_synthetic_model(const std::string& path, const SyntheticSpec& spec);

}  // namespace rwkv
