// Perplexity of a text under a model, by the convention of models/README.md: tokenise the
// whole text, start from a zero state, feed it as one sequence and score tokens[1..n-1].
#pragma once

#include <functional>
#include <string>

#include "runtime/engine.h"

namespace rwkv {

struct PerplexityResult {
  int n_tokens = 0;       // tokens in the text
  int n_predicted = 0;    // n_tokens - 1
  double total_nats = 0;  // - sum of log p(token | prefix)
  size_t predicted_bytes = 0;
  double nats_per_token() const { return n_predicted ? total_nats / n_predicted : 0; }
  double perplexity() const;
  double bits_per_byte() const;
};

// Uses slot `slot` of the engine (reset first). on_progress(done, total) after each chunk.
PerplexityResult perplexity(Engine& engine, const std::string& text, int slot = 0,
                            const std::function<void(int, int)>& on_progress = nullptr);

}  // namespace rwkv
