#include "runtime/perplexity.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace rwkv {

double PerplexityResult::perplexity() const { return std::exp(nats_per_token()); }
double PerplexityResult::bits_per_byte() const {
  return predicted_bytes ? total_nats / std::log(2.0) / double(predicted_bytes) : 0;
}

PerplexityResult perplexity(Engine& engine, const std::string& text, int slot,
                            const std::function<void(int, int)>& on_progress) {
  const std::vector<int32_t> ids = engine.tokenizer().encode(text);
  if (ids.size() < 2) fail(ErrorCode::argument, "perplexity: the text must have at least 2 tokens");
  PerplexityResult res;
  res.n_tokens = int(ids.size());
  res.n_predicted = res.n_tokens - 1;
  engine.reset(slot);
  const size_t V = size_t(engine.n_vocab());
  // Feed in chunks so that only chunk x V logits are held at once (V may be 65536).
  const size_t chunk = 256;
  for (size_t pos = 0; pos + 1 < ids.size(); pos += chunk) {
    const size_t n = std::min(chunk, ids.size() - 1 - pos);  // positions pos..pos+n-1 predict the next token
    const std::vector<float> logits = engine.feed_all(slot, std::span<const int32_t>(ids.data() + pos, n));
    for (size_t i = 0; i < n; ++i) {
      const float* row = logits.data() + i * V;
      const double mx = *std::max_element(row, row + V);
      double sum = 0;
      for (size_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      const int32_t next = ids[pos + i + 1];
      res.total_nats += std::log(sum) + mx - double(row[next]);
      res.predicted_bytes += engine.tokenizer().token_bytes(next).size();
    }
    if (on_progress) on_progress(int(pos + n), res.n_predicted);
  }
  return res;
}

}  // namespace rwkv
