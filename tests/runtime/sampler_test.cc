#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsession::runtime {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> Draw(const SamplingParams& p,
                          const std::vector<float>& logits, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.Sample(logits, {}));
  return out;
}

TEST(SamplerTest, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 2.0f, -1.0f, 1.9f}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{1.0f, 3.0f, 3.0f, 3.0f}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-5.0f}, {}), 0);
}

TEST(SamplerTest, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  std::vector<float> logits(1000);
  for (int i = 0; i < 1000; ++i) logits[i] = std::sin(i * 0.37f) * 3.0f;
  EXPECT_EQ(Draw(p, logits, 50), Draw(p, logits, 50));
}

TEST(SamplerTest, FixedSeedGivesFixedTokens) {
  // Pins the draw: mt19937_64 is fully specified and the uniform double is
  // built by hand, so these hold on every standard library.
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  std::vector<float> flat(8, 0.0f);
  std::mt19937_64 rng(42);
  std::vector<int32_t> expected;
  for (int i = 0; i < 20; ++i) {
    double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    expected.push_back(static_cast<int32_t>(u * 8));
  }
  EXPECT_EQ(Draw(p, flat, 20), expected);
}

TEST(SamplerTest, DifferentSeedsDifferOnAFlatDistribution) {
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<float> flat(1000, 0.0f);
  p.seed = 1;
  std::vector<int32_t> a = Draw(p, flat, 20);
  p.seed = 2;
  std::vector<int32_t> b = Draw(p, flat, 20);
  EXPECT_NE(a, b);
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 10u);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  std::vector<float> logits = {0.5f, 0.1f, 0.7f, 0.69f, 0.7f};
  for (int32_t t : Draw(p, logits, 50)) EXPECT_EQ(t, 2);
}

TEST(SamplerTest, TinyTopPIsGreedy) {
  SamplingParams p;
  p.temperature = 2.0f;
  p.top_p = 1e-6f;
  std::vector<float> logits(500);
  for (int i = 0; i < 500; ++i) logits[i] = std::cos(i * 1.3f);
  int32_t argmax = Sampler(SamplingParams{}).Sample(logits, {});
  for (int32_t t : Draw(p, logits, 50)) EXPECT_EQ(t, argmax);
}

TEST(SamplerTest, TopPKeepsSmallestSufficientHead) {
  // p = {0.5, 0.3, 0.2}: top_p 0.75 keeps tokens 0 and 1 only.
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.75f;
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  std::set<int32_t> seen;
  for (int32_t t : Draw(p, logits, 300)) seen.insert(t);
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

// Reference top-p set by sorting everything, in double precision.
std::set<int32_t> TopPSet(const std::vector<float>& logits, double t,
                          double top_p) {
  std::vector<std::pair<double, int32_t>> p;
  double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p.emplace_back(std::exp((logits[i] - max) / t), static_cast<int32_t>(i));
    sum += p.back().first;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::set<int32_t> out;
  double cum = 0;
  for (const auto& [q, id] : p) {
    out.insert(id);
    cum += q / sum;
    if (cum >= top_p) {
      // Keep the test away from rounding at the boundary.
      EXPECT_GT(cum - top_p, 1e-6);
      EXPECT_GT(top_p - (cum - q / sum), 1e-6);
      break;
    }
  }
  return out;
}

TEST(SamplerTest, TopPMatchesASortedReference) {
  // A wide, fairly flat distribution: the head spans many threshold steps.
  std::vector<float> logits(2000);
  for (int i = 0; i < 2000; ++i) {
    logits[i] = 3.0f * std::sin(i * 0.7f) + 0.001f * (i % 97);
  }
  for (double top_p : {0.3, 0.9}) {
    SamplingParams p;
    p.temperature = 1.5f;
    p.top_p = static_cast<float>(top_p);
    p.seed = 3;
    std::set<int32_t> allowed =
        TopPSet(logits, p.temperature, static_cast<float>(top_p));
    std::set<int32_t> seen;
    for (int32_t t : Draw(p, logits, 300)) {
      EXPECT_TRUE(allowed.count(t)) << t;
      seen.insert(t);
    }
    EXPECT_GT(seen.size(), 20u);
  }
}

TEST(SamplerTest, TopKRestrictsToTheBest) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  std::vector<float> logits = {0.0f, 1.0f, 0.0f, 1.2f, 0.9f};
  std::set<int32_t> seen;
  for (int32_t t : Draw(p, logits, 300)) seen.insert(t);
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, MinPFilters) {
  // p = {0.5, 0.3, 0.15, 0.05}; min_p 0.25 drops p < 0.125: token 3.
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.25f;
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                               std::log(0.05f)};
  std::set<int32_t> seen;
  for (int32_t t : Draw(p, logits, 1000)) seen.insert(t);
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1, 2}));
}

TEST(SamplerTest, RepetitionPenaltyMath) {
  // Logits {2, -1, 1.5}; penalty 2 on tokens 0 and 1 (token 0 twice counts
  // once): {1, -2, 1.5}, so greedy moves from 0 to 2.
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  std::vector<float> logits = {2.0f, -1.0f, 1.5f};
  std::vector<int32_t> history = {0, 1, 0};
  EXPECT_EQ(Sampler(p).Sample(logits, history), 2);
  // Penalised once only: with 2 → 1 (not 0.5) token 0 still beats 0.9.
  std::vector<float> close = {2.0f, -1.0f, 0.9f};
  EXPECT_EQ(Sampler(p).Sample(close, history), 0);
  // Negative logits are multiplied: -1 → -2 falls below -1.5.
  std::vector<float> negative = {-1.0f, -1.5f, -3.0f};
  std::vector<int32_t> hist0 = {0};
  EXPECT_EQ(Sampler(p).Sample(negative, hist0), 1);
  // Outside the window: no penalty.
  p.repetition_window = 1;
  std::vector<int32_t> old = {0, 1};
  EXPECT_EQ(Sampler(p).Sample(logits, old), 0);
  // Window 0 or penalty 1: off. Ids outside the vocab are ignored.
  p.repetition_window = 0;
  EXPECT_EQ(Sampler(p).Sample(logits, history), 0);
  p.repetition_window = 64;
  std::vector<int32_t> junk = {-1, 7, 1 << 30};
  EXPECT_EQ(Sampler(p).Sample(logits, junk), 0);
  // The caller's logits are left alone.
  EXPECT_EQ(logits[0], 2.0f);
}

TEST(SamplerTest, MatchesTheDistribution) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  const std::vector<double> probs = {0.2, 0.3, 0.5};
  std::vector<float> logits;
  for (double q : probs) logits.push_back(static_cast<float>(std::log(q)));
  const int n = 20000;
  std::vector<int> counts(3, 0);
  for (int32_t t : Draw(p, logits, n)) ++counts[t];
  double chi2 = 0;
  for (int i = 0; i < 3; ++i) {
    double expected = probs[i] * n;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  // 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
  EXPECT_LT(chi2, 13.8) << counts[0] << " " << counts[1] << " " << counts[2];

  // Temperature 0.5 squares the odds: {4, 9, 25} / 38.
  p.temperature = 0.5f;
  counts.assign(3, 0);
  for (int32_t t : Draw(p, logits, n)) ++counts[t];
  const std::vector<double> sharp = {4.0 / 38, 9.0 / 38, 25.0 / 38};
  chi2 = 0;
  for (int i = 0; i < 3; ++i) {
    double expected = sharp[i] * n;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 13.8) << counts[0] << " " << counts[1] << " " << counts[2];
}

TEST(SamplerTest, HandlesInfiniteAndNanLogits) {
  SamplingParams p;
  p.temperature = 1.0f;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> masked = {-inf, 1.0f, -inf, std::nanf("")};
  for (int32_t t : Draw(p, masked, 20)) EXPECT_EQ(t, 1);
  std::vector<float> all_masked = {-inf, -inf};
  EXPECT_EQ(Sampler(p).Sample(all_masked, {}), 0);
}

TEST(SamplerTest, ValidationNamesFieldAndValue) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  auto message = [](SamplingParams p) {
    absl::Status s = ValidateSamplingParams(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  SamplingParams p;
  p.temperature = 101.0f;
  EXPECT_THAT(message(p), HasSubstr("temperature"));
  EXPECT_THAT(message(p), HasSubstr("101"));
  p = {};
  p.temperature = -0.5f;
  EXPECT_THAT(message(p), HasSubstr("-0.5"));
  p = {};
  p.temperature = std::nanf("");
  EXPECT_THAT(message(p), HasSubstr("temperature"));
  p = {};
  p.top_k = -3;
  EXPECT_THAT(message(p), HasSubstr("top_k"));
  EXPECT_THAT(message(p), HasSubstr("-3"));
  p = {};
  p.top_p = 0.0f;
  EXPECT_THAT(message(p), HasSubstr("top_p"));
  p.top_p = 1.5f;
  EXPECT_THAT(message(p), HasSubstr("1.5"));
  p = {};
  p.min_p = 1.01f;
  EXPECT_THAT(message(p), HasSubstr("min_p"));
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_THAT(message(p), HasSubstr("repetition_penalty"));
  p.repetition_penalty = 11.0f;
  EXPECT_THAT(message(p), HasSubstr("11"));
  p = {};
  p.repetition_window = -1;
  EXPECT_THAT(message(p), HasSubstr("repetition_window"));
  p = {};
  p.temperature = 100.0f;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repetition_penalty = 10.0f;
  EXPECT_TRUE(ValidateSamplingParams(p).ok());
}

}  // namespace
}  // namespace kvsession::runtime
