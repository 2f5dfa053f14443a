// Sampling as RWKV's chat demos do it: repetition penalties on the logits, then top-k /
// top-p / min-p measured on the temperature-1 softmax, then temperature on what is left.
#include "runtime/sampler.h"

#include <algorithm>
#include <bit>
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

// e^x for x <= 0 (x is clamped to [-87, 0]), relative error about 1e-7. Written so that
// GCC vectorises loops over it (std::exp, std::floor and float->int casts after a clamp all
// block that): a 65536-token vocabulary costs ~20 us instead of ~250 us.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : (x > 0.0f ? 0.0f : x);  // e^-87 is near float's smallest normal
  // x = k ln2 + r with k integer, |r| <= ln2 / 2. Adding 1.5 * 2^23 rounds x / ln2 to an
  // integer, which then sits in the low mantissa bits; ln2 is split in two so that
  // k * ln2_hi is exact.
  constexpr float kRound = 12582912.0f;
  const float shifted = x * 1.44269504f + kRound;
  const float k = shifted - kRound;
  const int32_t k_int = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound);
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  // Taylor series of e^r to r^7: the remainder is below 0.35^8 / 8! < 1e-8.
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((k_int + 127) << 23);  // * 2^k, k in [-126, 0]
}

// weights[i] = e^((candidates[i].logit - max_logit) * scale); returns their sum.
double compute_weights(const std::vector<Candidate>& candidates, float max_logit, float scale,
                       std::vector<float>& weights) {
  const size_t n = candidates.size();
  weights.resize(n);
  const Candidate* candidate = candidates.data();
  float* weight = weights.data();
  for (size_t i = 0; i < n; ++i) weight[i] = exp_nonpositive((candidate[i].first - max_logit) * scale);
  // Eight running sums instead of one: a single chain of dependent adds is latency-bound.
  double lanes[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t j = 0; j < 8; ++j) lanes[j] += double(weight[i + j]);
  }
  for (; i < n; ++i) lanes[0] += double(weight[i]);
  double total = 0;
  for (double lane : lanes) total += lane;
  return total;
}

// Reorders `candidates` so that the first n of them (n returned) are the top-p nucleus: the
// smallest most-likely set whose softmax mass reaches top_p, plus any token tied with the
// least likely member (as the reference keeps every probability >= the cutoff).
// Instead of sorting the vocabulary, the mass is histogrammed by distance below the best
// logit; only the one bucket the cutoff falls in is sorted. O(V) plus a small sort.
size_t select_nucleus(std::vector<Candidate>& candidates, float max_logit, float top_p, std::vector<float>& weights) {
  constexpr int kBucketsPerNat = 8;
  constexpr int kBuckets = 256;  // gaps of 32 nats and more share the last bucket
  auto bucket_of = [max_logit](float logit) {
    return std::min(int(std::min(max_logit - logit, float(kBuckets)) * kBucketsPerNat), kBuckets - 1);
  };
  const double target = double(std::max(top_p, 0.0f)) * compute_weights(candidates, max_logit, 1.0f, weights);
  // Four interleaved histograms: most tokens land in the same few far buckets, and one
  // histogram would make each add wait for the previous store to the same slot.
  double partial_mass[4][kBuckets] = {};
  for (size_t i = 0; i < candidates.size(); ++i) {
    partial_mass[i % 4][bucket_of(candidates[i].first)] += double(weights[i]);
  }
  double bucket_mass[kBuckets];
  for (int b = 0; b < kBuckets; ++b) {
    bucket_mass[b] = (partial_mass[0][b] + partial_mass[1][b]) + (partial_mass[2][b] + partial_mass[3][b]);
  }

  int cutoff_bucket = 0;
  double mass_above = 0;  // mass of the buckets before cutoff_bucket
  while (mass_above + bucket_mass[cutoff_bucket] < target) {
    mass_above += bucket_mass[cutoff_bucket];
    if (++cutoff_bucket == kBuckets) return candidates.size();  // rounding kept top_p ~ 1 out of reach
  }

  auto above = std::partition(candidates.begin(), candidates.end(),
                              [&](const Candidate& c) { return bucket_of(c.first) < cutoff_bucket; });
  auto in_cutoff_bucket =
      std::partition(above, candidates.end(), [&](const Candidate& c) { return bucket_of(c.first) == cutoff_bucket; });
  std::sort(above, in_cutoff_bucket, ranks_before);
  double mass = mass_above;
  for (auto it = above; it != in_cutoff_bucket; ++it) {
    mass += double(exp_nonpositive(it->first - max_logit));
    if (mass >= target) {
      // Ties sort next to each other, and equal logits share a bucket.
      auto end = it + 1;
      while (end != in_cutoff_bucket && end->first == it->first) ++end;
      return size_t(end - candidates.begin());
    }
  }
  return size_t(in_cutoff_bucket - candidates.begin());  // rounding: the whole bucket
}

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
  penalised_.assign(logits, logits + n_vocab);
  for (const auto& [id, count] : occurrences_) {
    if (id >= 0 && id < n_vocab) penalised_[size_t(id)] -= params_.presence_penalty + count * params_.frequency_penalty;
  }
  scratch_.clear();
  float max_logit = -std::numeric_limits<float>::infinity();
  int32_t best = -1;  // the lowest id among the best, as ranks_before orders ties
  for (int32_t id = 0; id < n_vocab; ++id) {
    const float logit = penalised_[size_t(id)];
    if (!(logit > -std::numeric_limits<float>::infinity())) continue;  // also drops NaN
    scratch_.emplace_back(logit, id);
    if (logit > max_logit) {
      max_logit = logit;
      best = id;
    }
  }
  if (best < 0) fail(ErrorCode::argument, "sampler: all " + std::to_string(n_vocab) + " logits are NaN or -inf");
  if (params_.temperature <= 0) return best;

  // +inf logits carry all the probability: choose among them uniformly.
  if (max_logit == std::numeric_limits<float>::infinity()) {
    auto end = std::partition(scratch_.begin(), scratch_.end(), [](const Candidate& c) { return std::isinf(c.first); });
    return scratch_[size_t(uniform01(rng_) * double(end - scratch_.begin()))].second;
  }

  // The filters are all measured on the temperature-1 softmax of every candidate and each
  // keeps a most-likely prefix of the ranking, so their order does not matter.
  if (params_.top_p < 1) scratch_.resize(select_nucleus(scratch_, max_logit, params_.top_p, weights_));
  if (params_.min_p > 0) {
    // p < min_p * p_max  <=>  logit < max_logit + log(min_p).
    const float floor = max_logit + std::log(std::min(params_.min_p, 1.0f));
    std::erase_if(scratch_, [floor](const Candidate& c) { return c.first < floor; });
  }
  if (params_.top_k > 0 && size_t(params_.top_k) < scratch_.size()) {
    std::nth_element(scratch_.begin(), scratch_.begin() + params_.top_k - 1, scratch_.end(), ranks_before);
    scratch_.resize(size_t(params_.top_k));
  }

  // Temperature on the survivors: p^(1/T) is proportional to e^((logit - max) / T). The
  // best candidate always survives with weight 1, so the total is at least 1.
  const float inv_temperature = float(std::min(1.0 / double(params_.temperature), 1e30));
  double u = uniform01(rng_) * compute_weights(scratch_, max_logit, inv_temperature, weights_);
  int32_t last_possible = scratch_.front().second;
  for (size_t i = 0; i < scratch_.size(); ++i) {
    if (weights_[i] == 0) continue;
    last_possible = scratch_[i].second;
    u -= double(weights_[i]);
    if (u < 0) return last_possible;
  }
  return last_possible;  // rounding left u a hair above the summed weights
}

}  // namespace rwkv
