// Sampling as RWKV's chat demos do it: repetition penalties on the logits, then top-k /
// top-p / min-p measured on the temperature-1 softmax, then temperature on what is left.
#include "runtime/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <span>
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

// The one of x and `limit` (same sign) that is smaller in magnitude. The bit patterns of
// floats of one sign order as their magnitudes, so this is an unsigned integer min: a
// compare-and-select on floats would keep GCC (under the default -ftrapping-math) from
// vectorising the loops below.
inline float clamp_magnitude(float x, float limit) {
  return std::bit_cast<float>(std::min(std::bit_cast<uint32_t>(x), std::bit_cast<uint32_t>(limit)));
}

// e^x for x <= 0 (x below -87 counts as -87), relative error about 1e-7. Written so that
// GCC vectorises loops over it; std::exp, std::floor and float->int casts after a clamp all
// block that, and std::exp alone costs ~4 ns per token of a 65536-token vocabulary.
inline float exp_nonpositive(float x) {
  x = clamp_magnitude(x, -87.0f);  // e^-87 is near float's smallest normal
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
double compute_weights(std::span<const Candidate> candidates, float max_logit, float scale, float* weights) {
  const size_t n = candidates.size();
  const Candidate* candidate = candidates.data();
  for (size_t i = 0; i < n; ++i) weights[i] = exp_nonpositive((candidate[i].first - max_logit) * scale);
  // Eight running sums instead of one: a single chain of dependent adds is latency-bound.
  double lanes[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t j = 0; j < 8; ++j) lanes[j] += double(weights[i + j]);
  }
  for (; i < n; ++i) lanes[0] += double(weights[i]);
  double total = 0;
  for (double lane : lanes) total += lane;
  return total;
}

// Histogram bucket of a candidate `gap` nats below the best logit: 1/8-nat steps, rounded,
// and gaps of ~32 nats or more share the last bucket. Monotonic in the gap, and branch-free
// (the same 1.5 * 2^23 rounding as exp_nonpositive) so the loop over the vocabulary
// vectorises.
constexpr int kBuckets = 256;
inline int32_t bucket_of(float gap) {
  constexpr float kRound = 12582912.0f;
  const float scaled = clamp_magnitude(gap * 8.0f, float(kBuckets - 1));
  return std::bit_cast<int32_t>(scaled + kRound) - std::bit_cast<int32_t>(kRound);
}

// Moves the top-p nucleus to the front of `candidates` and returns its size: the smallest
// most-likely set whose softmax mass reaches top_p, plus any token tied with its least
// likely member (the reference keeps every probability >= the cutoff). Instead of sorting
// the vocabulary, the mass is histogrammed by distance below the best logit and only the
// bucket the cutoff falls in is sorted: O(V) plus a small sort. `weights` and `buckets`
// are scratch space for candidates.size() entries.
size_t select_nucleus(std::span<Candidate> candidates, float max_logit, float top_p, float* weights, uint8_t* buckets) {
  const size_t n = candidates.size();
  const double target = double(std::max(top_p, 0.0f)) * compute_weights(candidates, max_logit, 1.0f, weights);
  const Candidate* candidate = candidates.data();
  for (size_t i = 0; i < n; ++i) buckets[i] = uint8_t(bucket_of(max_logit - candidate[i].first));
  // Four interleaved histograms: most tokens land in the same few far buckets, and a single
  // histogram would make each add wait for the previous store to the same slot.
  double partial_mass[4][kBuckets] = {};
  for (size_t i = 0; i < n; ++i) partial_mass[i % 4][buckets[i]] += double(weights[i]);

  int32_t cutoff_bucket = 0;
  double mass_above = 0;  // mass of the buckets before cutoff_bucket
  while (true) {
    const double mass = (partial_mass[0][cutoff_bucket] + partial_mass[1][cutoff_bucket]) +
                        (partial_mass[2][cutoff_bucket] + partial_mass[3][cutoff_bucket]);
    if (mass_above + mass >= target) break;
    mass_above += mass;
    if (++cutoff_bucket == kBuckets) return n;  // rounding kept a top_p of ~1 out of reach: keep all
  }

  // Compact the buckets up to the cutoff's to the front (few tokens, typically), then sort
  // the cutoff bucket's tokens and walk them until the mass reaches the target.
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (buckets[i] <= cutoff_bucket) candidates[kept++] = candidates[i];
  }
  auto in_cutoff_bucket =
      std::partition(candidates.begin(), candidates.begin() + ptrdiff_t(kept),
                     [&](const Candidate& c) { return bucket_of(max_logit - c.first) < cutoff_bucket; });
  auto end = candidates.begin() + ptrdiff_t(kept);
  std::sort(in_cutoff_bucket, end, ranks_before);
  double mass = mass_above;
  for (auto it = in_cutoff_bucket; it != end; ++it) {
    mass += double(exp_nonpositive(it->first - max_logit));
    if (mass >= target) {
      // Ties sort next to each other, and equal logits share a bucket.
      auto last = it + 1;
      while (last != end && last->first == it->first) ++last;
      return size_t(last - candidates.begin());
    }
  }
  return kept;  // rounding: the cutoff bucket sums a hair short of the target; keep it all
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
  const size_t n = size_t(n_vocab);
  penalised_.assign(logits, logits + n);
  for (const auto& [id, count] : occurrences_) {
    if (id >= 0 && id < n_vocab) penalised_[size_t(id)] -= params_.presence_penalty + count * params_.frequency_penalty;
  }
  float max_logit = -std::numeric_limits<float>::infinity();
  int32_t best = -1;  // the first of equals, as ranks_before orders ties
  for (size_t id = 0; id < n; ++id) {
    if (penalised_[id] > max_logit) {  // never true for NaN or -inf
      max_logit = penalised_[id];
      best = int32_t(id);
    }
  }
  if (best < 0) fail(ErrorCode::argument, "sampler: all " + std::to_string(n_vocab) + " logits are NaN or -inf");
  if (params_.temperature <= 0) return best;

  // +inf logits carry all the probability: choose among them uniformly.
  if (max_logit == std::numeric_limits<float>::infinity()) {
    const auto n_infinite = size_t(std::count(penalised_.begin(), penalised_.end(), max_logit));
    size_t pick = size_t(uniform01(rng_) * double(n_infinite));
    for (size_t id = 0;; ++id) {
      if (penalised_[id] == max_logit && pick-- == 0) return int32_t(id);
    }
  }

  // Candidates: the tokens above -inf (NaN fails every comparison).
  if (scratch_.size() < n) {
    scratch_.resize(n);
    weights_.resize(n);
    buckets_.resize(n);
  }
  size_t n_candidates = 0;
  for (size_t id = 0; id < n; ++id) {  // branch-free compaction
    const float logit = penalised_[id];
    scratch_[n_candidates] = {logit, int32_t(id)};
    n_candidates += size_t(logit > -std::numeric_limits<float>::infinity());
  }
  std::span<Candidate> candidates(scratch_.data(), n_candidates);

  // The filters are all measured on the temperature-1 softmax of every candidate (no
  // renormalising in between) and each keeps a most-likely prefix of the ranking, so
  // their order does not matter.
  if (params_.top_p < 1) {
    candidates =
        candidates.first(select_nucleus(candidates, max_logit, params_.top_p, weights_.data(), buckets_.data()));
  }
  if (params_.min_p > 0) {
    // p < min_p * p_max  <=>  logit < max_logit + log(min_p).
    const float floor = max_logit + std::log(std::min(params_.min_p, 1.0f));
    auto kept =
        std::remove_if(candidates.begin(), candidates.end(), [floor](const Candidate& c) { return c.first < floor; });
    candidates = candidates.first(size_t(kept - candidates.begin()));
  }
  if (params_.top_k > 0 && size_t(params_.top_k) < candidates.size()) {
    std::nth_element(candidates.begin(), candidates.begin() + params_.top_k - 1, candidates.end(), ranks_before);
    candidates = candidates.first(size_t(params_.top_k));
  }

  // Temperature on the survivors: p^(1/T) is proportional to e^((logit - max) / T). The
  // best token always survives with weight 1, so the total is at least 1.
  const float inv_temperature = float(std::min(1.0 / double(params_.temperature), 1e30));
  double u = uniform01(rng_) * compute_weights(candidates, max_logit, inv_temperature, weights_.data());
  int32_t last_possible = candidates.front().second;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (weights_[i] == 0) continue;
    last_possible = candidates[i].second;
    u -= double(weights_[i]);
    if (u < 0) return last_possible;
  }
  return last_possible;  // rounding left u a hair above the summed weights
}

}  // namespace rwkv
