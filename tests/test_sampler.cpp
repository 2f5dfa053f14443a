// Sampler: greedy, top-k / top-p / min-p filters, temperature distribution, seeding,
// repetition penalties with decay, and non-finite logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "common/error.h"
#include "runtime/sampler.h"

namespace rwkv {
namespace {

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

SamplerParams plain(float temperature) {
  SamplerParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.0f;
  p.penalty_decay = 1.0f;
  return p;
}

std::vector<float> random_logits(std::mt19937& rng, int n) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(n));
  for (float& x : logits) x = normal(rng);
  return logits;
}

int32_t argmax(const std::vector<float>& x) { return int32_t(std::max_element(x.begin(), x.end()) - x.begin()); }

std::vector<int> histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size());
  for (int i = 0; i < draws; ++i) ++counts[size_t(sampler.sample(logits.data(), int32_t(logits.size())))];
  return counts;
}

// Pearson chi-square of `counts` against probabilities proportional to `weights` (zero
// weights must have zero counts).
double chi_square(const std::vector<int>& counts, const std::vector<double>& weights) {
  double total_weight = 0, draws = 0;
  for (double w : weights) total_weight += w;
  for (int c : counts) draws += c;
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (weights[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has zero probability";
      continue;
    }
    double expected = draws * weights[i] / total_weight;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

// log of these probabilities: softmax gives back exactly 0.5, 0.3, 0.15, 0.05.
const std::vector<float> kFourWay = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};

TEST(Sampler, GreedyPicksArgmax) {
  std::mt19937 rng(1);
  Sampler sampler(plain(0.0f));
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits = random_logits(rng, 1000);
    EXPECT_EQ(sampler.sample(logits.data(), 1000), argmax(logits));
  }
  std::vector<float> ties = {1.0f, 3.0f, 3.0f, 2.0f};
  EXPECT_EQ(sampler.sample(ties.data(), 4), 1);  // the lower id of a tie
}

TEST(Sampler, TopKOneIsGreedy) {
  std::mt19937 rng(2);
  SamplerParams params = plain(1.5f);
  params.top_k = 1;
  Sampler sampler(params);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits = random_logits(rng, 65536);
    EXPECT_EQ(sampler.sample(logits.data(), 65536), argmax(logits));
  }
}

TEST(Sampler, SeededRunsRepeat) {
  std::mt19937 rng(3);
  std::vector<float> logits = random_logits(rng, 5000);
  SamplerParams params;  // the G1 defaults, penalties included
  params.top_p = 0.9f;
  params.seed = 1234;
  Sampler a(params), b(params);
  std::vector<int32_t> first;
  for (int i = 0; i < 200; ++i) {
    int32_t token = a.sample(logits.data(), 5000);
    ASSERT_EQ(token, b.sample(logits.data(), 5000));
    a.accept(token);
    b.accept(token);
    first.push_back(token);
  }
  a.reset();
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(a.sample(logits.data(), 5000), first[size_t(i)]) << "after reset, step " << i;
    a.accept(first[size_t(i)]);
  }
  params.seed = 4321;
  Sampler c(params);
  int same = 0;
  for (int i = 0; i < 200; ++i) {
    int32_t token = c.sample(logits.data(), 5000);
    same += token == first[size_t(i)];
    c.accept(token);
  }
  EXPECT_LT(same, 100) << "another seed should give another sequence";
}

TEST(Sampler, TemperatureShapesTheDistribution) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -1.0f, -2.0f};
  for (float temperature : {1.0f, 0.5f, 2.0f}) {
    Sampler sampler(plain(temperature));
    std::vector<int> counts = histogram(sampler, logits, 100000);
    std::vector<double> weights;
    for (float l : logits) weights.push_back(std::exp(double(l) / temperature));
    // 4 degrees of freedom: P(chi2 > 18.47) = 0.001 for a correct sampler. The seed is
    // fixed, so this is deterministic; a sampler that ignored temperature would score in
    // the thousands.
    EXPECT_LT(chi_square(counts, weights), 18.47) << "temperature " << temperature;
  }
}

TEST(Sampler, TopPExcludesTheTail) {
  // Cumulative 0.5, 0.8: top_p 0.7 keeps tokens 0 and 1, renormalised to 5:3.
  SamplerParams params = plain(1.0f);
  params.top_p = 0.7f;
  Sampler sampler(params);
  std::vector<int> counts = histogram(sampler, kFourWay, 40000);
  EXPECT_LT(chi_square(counts, {0.5, 0.3, 0, 0}), 10.83);  // 1 dof, p = 0.001

  // A larger vocabulary whose nucleus spreads over several histogram buckets: 300 distinct
  // high logits hold ~98% of the mass, the flat rest ~2%.
  std::vector<float> logits(16384, 0.0f);
  for (int i = 0; i < 300; ++i) logits[size_t(i) * 50] = 8.0f - 0.002f * float(i);
  params.top_p = 0.9f;
  // Reference nucleus: smallest most-likely prefix whose softmax mass reaches 0.9.
  std::vector<std::pair<double, size_t>> ranked;
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    ranked.emplace_back(std::exp(double(logits[i])), i);
    total += ranked.back().first;
  }
  std::sort(ranked.begin(), ranked.end(), std::greater<>());
  std::vector<bool> in_nucleus(logits.size());
  double mass = 0;
  size_t nucleus = 0;
  while (mass < 0.9 * total) {
    mass += ranked[nucleus].first;
    in_nucleus[ranked[nucleus++].second] = true;
  }
  ASSERT_GT(nucleus, 250u);
  ASSERT_LT(nucleus, 300u);
  Sampler wide(params);
  std::vector<int> wide_counts = histogram(wide, logits, 3000);
  int outside = 0;
  size_t distinct = 0;
  for (size_t i = 0; i < wide_counts.size(); ++i) {
    if (!in_nucleus[i]) outside += wide_counts[i];
    distinct += wide_counts[i] > 0;
  }
  EXPECT_EQ(outside, 0);
  EXPECT_GT(distinct, nucleus * 9 / 10);  // ~10 draws each: nearly all show up
}

TEST(Sampler, TopPKeepsTokensTiedWithTheCutoff) {
  SamplerParams params = plain(1.0f);
  params.top_p = 0.3f;
  Sampler sampler(params);
  std::vector<float> flat(4, 0.0f);
  std::vector<int> counts = histogram(sampler, flat, 8000);
  EXPECT_LT(chi_square(counts, {1, 1, 1, 1}), 16.27);  // 3 dof, p = 0.001
}

TEST(Sampler, TopK) {
  SamplerParams params = plain(1.0f);
  params.top_k = 2;
  Sampler sampler(params);
  std::vector<int> counts = histogram(sampler, kFourWay, 40000);
  EXPECT_LT(chi_square(counts, {0.5, 0.3, 0, 0}), 10.83);
}

TEST(Sampler, MinP) {
  // min_p 0.2 drops p < 0.2 * 0.5 = 0.1: only token 3 (0.05).
  SamplerParams params = plain(1.0f);
  params.min_p = 0.2f;
  Sampler sampler(params);
  std::vector<int> counts = histogram(sampler, kFourWay, 40000);
  EXPECT_LT(chi_square(counts, {0.5, 0.3, 0.15, 0}), 13.82);  // 2 dof, p = 0.001
}

TEST(Sampler, FiltersUseTheUntemperedDistribution) {
  // As in RWKV's demos, top-p is measured before temperature: at temperature 3 the kept
  // pair is flattened towards 1:1 but tokens 2 and 3 stay out.
  SamplerParams params = plain(3.0f);
  params.top_p = 0.7f;
  Sampler sampler(params);
  std::vector<int> counts = histogram(sampler, kFourWay, 40000);
  EXPECT_LT(chi_square(counts, {std::pow(0.5, 1 / 3.0), std::pow(0.3, 1 / 3.0), 0, 0}), 10.83);
}

TEST(Sampler, FiltersCombineOnTheFullDistribution) {
  // p = 0.4, 0.3, 0.2, 0.1. min_p 0.3 drops token 3 (0.1 < 0.12). top_p 0.75 measured on
  // the full distribution keeps tokens 0-2 (0.4 + 0.3 < 0.75); renormalising after min-p
  // (0.44 + 0.33 >= 0.75) would wrongly drop token 2 as well.
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  SamplerParams params = plain(1.0f);
  params.min_p = 0.3f;
  params.top_p = 0.75f;
  Sampler sampler(params);
  std::vector<int> counts = histogram(sampler, logits, 40000);
  EXPECT_LT(chi_square(counts, {0.4, 0.3, 0.2, 0}), 13.82);  // 2 dof, p = 0.001
  params.top_k = 2;                                          // and top-k on top of both
  Sampler capped(params);
  counts = histogram(capped, logits, 40000);
  EXPECT_LT(chi_square(counts, {0.4, 0.3, 0, 0}), 10.83);
}

TEST(Sampler, PenaltiesMoveTheArgmaxAndDecay) {
  const std::vector<float> logits = {1.0f, 0.9f, -5.0f};
  SamplerParams params = plain(0.0f);
  params.frequency_penalty = 0.5f;
  params.penalty_decay = 0.5f;
  Sampler sampler(params);
  EXPECT_EQ(sampler.sample(logits.data(), 3), 0);
  sampler.accept(0);  // token 0: count 1, logit 1 - 0.5 = 0.5
  EXPECT_EQ(sampler.sample(logits.data(), 3), 1);
  sampler.accept(2);  // count 0.5: 0.75
  EXPECT_EQ(sampler.sample(logits.data(), 3), 1);
  sampler.accept(2);  // count 0.25: 0.875
  EXPECT_EQ(sampler.sample(logits.data(), 3), 1);
  sampler.accept(2);  // count 0.125: 0.9375 > 0.9
  EXPECT_EQ(sampler.sample(logits.data(), 3), 0);

  // The presence penalty does not decay: 0.2 forever after one occurrence.
  params.frequency_penalty = 0.0f;
  params.presence_penalty = 0.2f;
  Sampler presence(params);
  presence.accept(0);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(presence.sample(logits.data(), 3), 1) << "step " << i;
    presence.accept(2);
  }
  presence.reset();
  EXPECT_EQ(presence.sample(logits.data(), 3), 0);

  // Repeats add up: two occurrences of token 0 cost 2 * 0.06 + 0.0 > 0.1.
  params.presence_penalty = 0.0f;
  params.frequency_penalty = 0.06f;
  params.penalty_decay = 1.0f;
  Sampler frequency(params);
  frequency.accept(0);
  EXPECT_EQ(frequency.sample(logits.data(), 3), 0);
  frequency.accept(0);
  EXPECT_EQ(frequency.sample(logits.data(), 3), 1);
  frequency.accept(70000);  // outside this vocabulary: ignored when sampling
  EXPECT_EQ(frequency.sample(logits.data(), 3), 1);
}

TEST(Sampler, NeverReturnsNonFiniteLogits) {
  const std::vector<float> logits = {kNan, -kInf, 0.5f, kNan, -kInf, -1.0f};
  for (float temperature : {0.0f, 1.0f, 100.0f}) {
    Sampler sampler(plain(temperature));
    std::vector<int> counts = histogram(sampler, logits, 2000);
    EXPECT_EQ(counts[0] + counts[1] + counts[3] + counts[4], 0) << "temperature " << temperature;
  }
  const std::vector<float> infinite = {1.0f, kInf, 2.0f, kInf};
  Sampler sampler(plain(1.0f));
  std::vector<int> counts = histogram(sampler, infinite, 2000);
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[3], 0);

  const std::vector<float> all_nan(10, kNan);
  for (float temperature : {0.0f, 1.0f}) {
    Sampler s(plain(temperature));
    try {
      s.sample(all_nan.data(), 10);
      FAIL() << "sampled from NaN logits";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::argument);
    }
  }
  const std::vector<float> all_minus_inf(10, -kInf);
  EXPECT_THROW(sampler.sample(all_minus_inf.data(), 10), Error);
  EXPECT_THROW(sampler.sample(logits.data(), 0), Error);
}

}  // namespace
}  // namespace rwkv
