// Token sampling: penalties, then top-k / top-p / min-p, temperature, seeded.
#pragma once

#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

namespace rwkv {

struct SamplerParams {
  // Defaults follow RWKV's G1 chat demos.
  float temperature = 1.0f;        // <= 0 means greedy
  int top_k = 0;                   // 0 = off
  float top_p = 0.3f;              // 1 = off
  float min_p = 0.0f;              // 0 = off
  float presence_penalty = 0.5f;   // added once per token seen (RWKV "alpha_presence")
  float frequency_penalty = 0.5f;  // added per occurrence (RWKV "alpha_frequency")
  float penalty_decay = 0.996f;    // occurrence counts decay by this factor every token
  uint64_t seed = 42;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams params = {});
  // Picks a token from logits[0..n_vocab). logits is not modified. Penalties are
  // subtracted first; temperature <= 0 then returns the argmax (lowest id among ties).
  // Otherwise top-p, min-p and top-k are each measured on the temperature-1 softmax of all
  // tokens (no renormalising in between, as RWKV's demos do top-p; a top-p cutoff keeps
  // tokens tied with it), and the survivors are drawn with probabilities ~ p^(1/T). NaN and
  // -inf logits are never returned; throws Error(argument) when n_vocab <= 0 or no logit
  // is left.
  int32_t sample(const float* logits, int32_t n_vocab);
  // Records a token that entered the context (generated or not) for the penalties.
  void accept(int32_t token);
  void reset();  // forget penalties, reseed
  const SamplerParams& params() const { return params_; }

 private:
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, float> occurrences_;  // decayed counts
  std::vector<float> penalised_;                    // logits minus penalties, by id
  std::vector<std::pair<float, int32_t>> scratch_;  // (penalised logit, id) candidates
  std::vector<float> weights_;                      // unnormalised probabilities of scratch_
  std::vector<uint8_t> buckets_;                    // top-p histogram bucket of scratch_
};

}  // namespace rwkv
