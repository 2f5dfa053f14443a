// Sampling as RWKV's chat demos do it: repetition penalties on the logits, then top-k /
// top-p / min-p measured on the temperature-1 softmax, then temperature on what is left.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common/error.h"

namespace rwkv {

namespace {

using Candidate = std::pair<float, int32_t>;  // (penalised logit, token id)

// Higher logit first; ties go to the lower id so every selection is deterministic and
// top-k 1 agrees with greedy.
bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Uniform double in [0, 1) from the top 53 bits, the same on every standard library.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

}  // namespace

Sampler::Sampler(SamplerParams params) : params_(params), rng_(params.seed) {}

void Sampler::accept(int32_t token) {
  for (auto& [id, count] : occurrences_) count *= params_.penalty_decay;
  occurrences_[token] += 1.0f;
}

void Sampler::reset() {
  occurrences_.clear();
  rng_.seed(params_.seed);
}

int32_t Sampler::sample(const float* logits, int32_t n_vocab) {
  if (logits == nullptr || n_vocab <= 0) {
    fail(ErrorCode::argument, "sampler: need logits for at least one token, got n_vocab " + std::to_string(n_vocab));
  }
  // Candidates: every token whose penalised logit is a number above -inf.
  scratch_.resize(size_t(n_vocab));
  for (int32_t id = 0; id < n_vocab; ++id) scratch_[size_t(id)] = {logits[id], id};
  for (const auto& [id, count] : occurrences_) {
    if (id >= 0 && id < n_vocab) {
      scratch_[size_t(id)].first -= params_.presence_penalty + count * params_.frequency_penalty;
    }
  }
  std::erase_if(scratch_, [](const Candidate& c) {
    return std::isnan(c.first) || c.first == -std::numeric_limits<float>::infinity();
  });
  if (scratch_.empty()) {
    fail(ErrorCode::argument, "sampler: all " + std::to_string(n_vocab) + " logits are NaN or -inf");
  }
  auto best = std::min_element(scratch_.begin(), scratch_.end(), ranks_before);
  if (params_.temperature <= 0) return best->second;
  const float max_logit = best->first;

  // +inf logits carry all the probability: choose among them uniformly.
  if (max_logit == std::numeric_limits<float>::infinity()) {
    auto end = std::partition(scratch_.begin(), scratch_.end(), [](const Candidate& c) { return std::isinf(c.first); });
    return scratch_[size_t(uniform01(rng_) * double(end - scratch_.begin()))].second;
  }

  // min-p: p < min_p * p_max  <=>  logit < max_logit + log(min_p).
  if (params_.min_p > 0) {
    const float floor = max_logit + std::log(std::min(params_.min_p, 1.0f));
    std::erase_if(scratch_, [floor](const Candidate& c) { return c.first < floor; });
  }

  // Keep the best `keep` candidates; top-k caps it, top-p shrinks it further.
  size_t keep = scratch_.size();
  if (params_.top_k > 0) keep = std::min(keep, size_t(params_.top_k));
  if (params_.top_p < 1) {
    double total = 0;
    for (const Candidate& c : scratch_) total += std::exp(double(c.first - max_logit));
    const double target = double(std::max(params_.top_p, 0.0f)) * total;
    // Sort only as much of the ranking as the nucleus needs: chunks of doubling size are
    // pulled to the front with nth_element and sorted, until the running mass reaches
    // top_p (typically a few dozen tokens of 65536: O(V) instead of O(V log V)).
    double mass = 0;
    size_t sorted = 0, chunk = 64, nucleus = 0;
    while (nucleus == 0 && sorted < keep) {
      size_t end = std::min(keep, sorted + chunk);
      auto first = scratch_.begin() + std::ptrdiff_t(sorted);
      std::nth_element(first, scratch_.begin() + std::ptrdiff_t(end - 1), scratch_.end(), ranks_before);
      std::sort(first, scratch_.begin() + std::ptrdiff_t(end), ranks_before);
      for (; sorted < end; ++sorted) {
        mass += std::exp(double(scratch_[sorted].first - max_logit));
        if (mass >= target) {
          nucleus = sorted + 1;
          break;
        }
      }
      chunk *= 2;
    }
    if (nucleus > 0) {
      // Like the reference, keep every token as likely as the last one admitted.
      const float cutoff = scratch_[nucleus - 1].first;
      auto tail = std::partition(scratch_.begin() + std::ptrdiff_t(nucleus), scratch_.end(),
                                 [cutoff](const Candidate& c) { return c.first == cutoff; });
      keep = std::min(keep, size_t(tail - scratch_.begin()));
    }
  }
  if (keep < scratch_.size()) {
    std::nth_element(scratch_.begin(), scratch_.begin() + std::ptrdiff_t(keep - 1), scratch_.end(), ranks_before);
    scratch_.resize(keep);
  }

  // Temperature on the survivors: p^(1/T) is proportional to exp((logit - max) / T). The
  // best candidate always survives with weight 1, so the total is at least 1.
  const double inv_temperature = 1.0 / double(params_.temperature);
  double total = 0;
  for (Candidate& c : scratch_) {
    c.first = float(std::exp(double(c.first - max_logit) * inv_temperature));
    total += double(c.first);
  }
  double u = uniform01(rng_) * total;
  int32_t last_possible = scratch_.front().second;
  for (const Candidate& c : scratch_) {
    if (c.first == 0) continue;
    last_possible = c.second;
    u -= double(c.first);
    if (u < 0) return c.second;
  }
  return last_possible;  // rounding left u a hair above the summed weights
}

}  // namespace rwkv
