#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Samples one row (logits x) with the given parameters.
int32_t SampleOne(const std::vector<float>& x, float temperature, int32_t top_k,
                  float top_p, float u) {
  const SampleRow row{temperature, top_k, top_p, u};
  int32_t out = -1;
  SampleTokens(x.data(), 1, int32_t(x.size()), &row, &out, CpuExec{1});
  return out;
}

// The same logits row sampled with u on the midpoints of an n-cell grid of
// [0, 1), as one batch; returns how often each id was picked / n.
std::vector<double> Frequencies(const std::vector<float>& x, float temperature,
                                int32_t top_k, float top_p, int n) {
  const int32_t vocab = int32_t(x.size());
  std::vector<float> logits;
  std::vector<SampleRow> rows;
  for (int i = 0; i < n; ++i) {
    logits.insert(logits.end(), x.begin(), x.end());
    rows.push_back({temperature, top_k, top_p, float((i + 0.5) / n)});
  }
  std::vector<int32_t> out(size_t(n), -1);
  SampleTokens(logits.data(), n, vocab, rows.data(), out.data(), CpuExec{4});
  std::vector<double> freq(size_t(vocab), 0.0);
  for (int32_t id : out) {
    EXPECT_TRUE(id >= 0 && id < vocab) << id;
    if (id >= 0 && id < vocab) freq[size_t(id)] += 1.0 / n;
  }
  return freq;
}

std::vector<float> RandomLogits(int32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-5.0f, 5.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

TEST(SampleTokensTest, GreedyPicksArgmaxLowestIdOnTies) {
  EXPECT_EQ(2, SampleOne({1.0f, 2.0f, 3.0f, -1.0f}, 0.0f, 0, 1.0f, 0.5f));
  EXPECT_EQ(1, SampleOne({1.0f, 3.0f, 3.0f, 3.0f}, 0.0f, 0, 1.0f, 0.5f));
  EXPECT_EQ(0, SampleOne(std::vector<float>(100, 0.25f), 0.0f, 0, 1.0f, 0.f));
  // -0 == +0: a tie.
  EXPECT_EQ(1, SampleOne({-1.0f, -0.0f, 0.0f}, 0.0f, 0, 1.0f, 0.5f));
  EXPECT_EQ(2, SampleOne({-1.0f, -2.0f, 0.0f, -0.0f}, 0.0f, 0, 1.0f, 0.5f));
  // Negative temperature is greedy too; top_k and u are ignored.
  EXPECT_EQ(3, SampleOne({1.0f, 2.0f, 3.0f, 4.0f}, -1.0f, 2, 0.5f, 0.99f));
  // Infinities order like any value.
  EXPECT_EQ(1, SampleOne({1.0f, kInf, kInf}, 0.0f, 0, 1.0f, 0.5f));
  EXPECT_EQ(0, SampleOne({-kInf, -kInf}, 0.0f, 0, 1.0f, 0.5f));
  const std::vector<float> x = RandomLogits(50000, 7);
  const int32_t want =
      int32_t(std::max_element(x.begin(), x.end()) - x.begin());
  EXPECT_EQ(want, SampleOne(x, 0.0f, 0, 1.0f, 0.3f));
}

// NaN logits count as -inf; a NaN temperature is greedy.
TEST(SampleTokensTest, NaNLogits) {
  EXPECT_EQ(2, SampleOne({kNaN, -5.0f, 1.0f, kNaN}, 0.0f, 0, 1.0f, 0.f));
  EXPECT_EQ(0, SampleOne({kNaN, kNaN, kNaN}, 0.0f, 0, 1.0f, 0.f));
  // NaN ties with -inf, so the lowest id wins.
  EXPECT_EQ(0, SampleOne({kNaN, -kInf, kNaN}, 0.0f, 0, 1.0f, 0.f));
  EXPECT_EQ(1, SampleOne({kNaN, -1e30f, kNaN}, 0.0f, 0, 1.0f, 0.f));
  EXPECT_EQ(2, SampleOne({kNaN, -5.0f, 1.0f, kNaN}, kNaN, 3, 1.0f, 0.99f));
  // Sampling over every id: NaN (weight exp(-inf) = 0) is never picked,
  // whatever u.
  const std::vector<float> x = {kNaN, 0.0f, kNaN, 1.0f, kNaN};
  for (float u : {0.0f, 0.3f, 0.7f, 0.99999994f}) {
    const int32_t id = SampleOne(x, 1.0f, 5, 1.0f, u);
    EXPECT_TRUE(id == 1 || id == 3) << "u " << u << " id " << id;
  }
  // All NaN: all candidates are -inf == z_max and weigh 1: uniform over the
  // k lowest ids. u = 0.6 over 4 candidates of p = 0.25 is the third.
  EXPECT_EQ(2, SampleOne(std::vector<float>(10, kNaN), 1.0f, 4, 1.0f, 0.6f));
}

// +inf logits share the mass (no inf - inf = NaN); finite ones get none.
TEST(SampleTokensTest, InfiniteLogits) {
  const std::vector<float> x = {0.0f, kInf, 5.0f, kInf};
  EXPECT_EQ(1, SampleOne(x, 1.0f, 3, 1.0f, 0.3f));
  EXPECT_EQ(3, SampleOne(x, 1.0f, 3, 1.0f, 0.7f));
  EXPECT_EQ(3, SampleOne(x, 1.0f, 3, 1.0f, 0.99999994f));
}

// An infinite temperature is FLT_MAX: z = x / FLT_MAX keeps the order of
// the logits, and the weights are all ~1 (uniform over the top k).
TEST(SampleTokensTest, InfiniteTemperature) {
  const std::vector<float> x = {1.0f, 4.0f, 3.0f, 2.0f, kInf};
  EXPECT_EQ(4, SampleOne(x, kInf, 3, 1.0f, 0.0f));
  // Candidates 1, 2, 3 with p = 1/3 each.
  EXPECT_EQ(1, SampleOne({1.0f, 4.0f, 3.0f, 2.0f}, kInf, 3, 1.0f, 0.2f));
  EXPECT_EQ(2, SampleOne({1.0f, 4.0f, 3.0f, 2.0f}, kInf, 3, 1.0f, 0.5f));
  EXPECT_EQ(3, SampleOne({1.0f, 4.0f, 3.0f, 2.0f}, kInf, 3, 1.0f, 0.9f));
  const std::vector<double> got =
      Frequencies({1.0f, 4.0f, 3.0f, 2.0f}, kInf, 2, 1.0f, 1000);
  EXPECT_NEAR(0.5, got[1], 2e-3);
  EXPECT_NEAR(0.5, got[2], 2e-3);
}

TEST(SampleTokensTest, TopKOneIsGreedyOverZ) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> x = RandomLogits(1000 + int32_t(seed), seed);
    const int32_t greedy = SampleOne(x, 0.0f, 0, 1.0f, 0.0f);
    for (float t : {0.5f, 1.0f, 2.0f}) {
      for (float u : {0.0f, 0.5f, 0.99f}) {
        EXPECT_EQ(greedy, SampleOne(x, t, 1, 1.0f, u))
            << "seed " << seed << " t " << t << " u " << u;
      }
    }
  }
}

// u on a fine grid: each candidate's share of the grid is its probability,
// the softmax of the top_k z (computed here in double). The grid resolves
// p to 1/n per id, float rounding of p and the sums adds < 1e-6: 2/n + 1e-6.
TEST(SampleTokensTest, DistributionMatchesSoftmaxOfTopK) {
  const std::vector<float> x = {0.3f, 2.0f,  -1.0f, 1.5f, 1.9f,
                                0.0f, -3.0f, 1.0f,  2.2f, 0.9f};
  constexpr int kN = 50000;
  for (float t : {0.7f, 1.0f, 1.6f}) {
    for (int32_t k : {2, 5, 10, 1024}) {
      std::vector<int32_t> order(x.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return x[size_t(a)] > x[size_t(b)];
      });
      const size_t kk = std::min(size_t(k), x.size());
      std::vector<double> want(x.size(), 0.0);
      double s = 0.0;
      for (size_t j = 0; j < kk; ++j) {
        want[size_t(order[j])] = std::exp(double(x[size_t(order[j])]) / t);
        s += want[size_t(order[j])];
      }
      for (double& w : want) w /= s;
      const std::vector<double> got = Frequencies(x, t, k, 1.0f, kN);
      for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_NEAR(want[i], got[i], 2.0 / kN + 1e-6)
            << "t " << t << " k " << k << " id " << i;
      }
    }
  }
}

// p = {0.5, 0.3, 0.15, 0.05} at ids {3, 0, 5, 1}; ids 2 and 4 are far below
// (top_k = 4 leaves them out). Cumulative p: 0.5, 0.8, 0.95, 1.0.
TEST(SampleTokensTest, TopPKeepsShortestPrefix) {
  std::vector<float> x(6, -30.0f);
  x[3] = std::log(0.5f);
  x[0] = std::log(0.3f);
  x[5] = std::log(0.15f);
  x[1] = std::log(0.05f);
  constexpr int kN = 20000;
  struct Case {
    float top_p;
    std::vector<double> want;  // by id
  };
  const Case cases[] = {
      {0.4f, {0, 0, 0, 1, 0, 0}},          // 0.5 >= 0.4: one
      {0.7f, {0.375, 0, 0, 0.625, 0, 0}},  // 0.8 >= 0.7: two
      {0.9f, {0.3 / 0.95, 0, 0, 0.5 / 0.95, 0, 0.15 / 0.95}},  // three
      {1.0f, {0.3, 0.05, 0, 0.5, 0, 0.15}},                    // no truncation
  };
  for (const Case& c : cases) {
    const std::vector<double> got = Frequencies(x, 1.0f, 4, c.top_p, kN);
    for (size_t i = 0; i < x.size(); ++i) {
      // Grid resolution as above.
      EXPECT_NEAR(c.want[i], got[i], 2.0 / kN + 1e-6)
          << "top_p " << c.top_p << " id " << i;
    }
  }
  // u -> 0 picks the most likely; u just below 1 the last kept one.
  EXPECT_EQ(3, SampleOne(x, 1.0f, 4, 0.9f, 0.0f));
  EXPECT_EQ(3, SampleOne(x, 1.0f, 4, 0.4f, 0.99999994f));
  EXPECT_EQ(0, SampleOne(x, 1.0f, 4, 0.7f, 0.99999994f));
  EXPECT_EQ(5, SampleOne(x, 1.0f, 4, 0.9f, 0.99999994f));
  EXPECT_EQ(1, SampleOne(x, 1.0f, 4, 1.0f, 0.99999994f));
  // u >= 1 (out of contract) falls back to the last kept one.
  EXPECT_EQ(5, SampleOne(x, 1.0f, 4, 0.9f, 1.0f));
}

TEST(SampleTokensTest, ExtremeUOnRandomRows) {
  for (uint32_t seed = 0; seed < 10; ++seed) {
    std::vector<float> x = RandomLogits(5000, 100 + seed);
    const int32_t best = SampleOne(x, 0.0f, 0, 1.0f, 0.0f);
    // The third largest id.
    std::vector<int32_t> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(
        order.begin(), order.begin() + 3, order.end(),
        [&](int32_t a, int32_t b) { return x[size_t(a)] > x[size_t(b)]; });
    for (float t : {0.7f, 1.0f}) {
      EXPECT_EQ(best, SampleOne(x, t, 40, 1.0f, 0.0f)) << seed;
      EXPECT_EQ(best, SampleOne(x, t, 1024, 0.5f, 0.0f)) << seed;
      // Uniform logits on [-5, 5]: the top 3 are within ~0.01 of each other,
      // so the last one's p (~1/3) dwarfs 1 - u.
      EXPECT_EQ(order[2], SampleOne(x, t, 3, 1.0f, 0.99999994f)) << seed;
    }
  }
}

// Ties in z go to the lower id, both in the candidate set and its order.
TEST(SampleTokensTest, TiesPreferLowerIds) {
  std::vector<float> x(100, 1.0f);
  x[50] = 2.0f;
  // Candidates: 50, then 0, 1 (the lowest tied ids).
  EXPECT_EQ(50, SampleOne(x, 1.0f, 3, 1.0f, 0.0f));
  EXPECT_EQ(1, SampleOne(x, 1.0f, 3, 1.0f, 0.99999994f));
  const std::vector<double> got = Frequencies(x, 1.0f, 3, 1.0f, 10000);
  const double e = std::exp(-1.0);
  EXPECT_NEAR(1.0 / (1.0 + 2.0 * e), got[50], 2e-4);
  EXPECT_NEAR(e / (1.0 + 2.0 * e), got[0], 2e-4);
  EXPECT_NEAR(e / (1.0 + 2.0 * e), got[1], 2e-4);
  EXPECT_EQ(0.0, got[2]);
}

// Rows are independent: one row's token does not depend on the batch or on
// the thread count.
TEST(SampleTokensTest, BatchAndThreadInvariant) {
  constexpr int32_t kVocab = 3001;
  constexpr int32_t kRows = 37;
  const std::vector<float> logits = RandomLogits(kVocab * kRows, 5);
  std::vector<SampleRow> rows;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  for (int32_t r = 0; r < kRows; ++r) {
    rows.push_back({r % 3 == 0 ? 0.0f : 0.8f, 1 + r * 27, 0.9f, uni(rng)});
  }
  std::vector<int32_t> a(kRows), b(kRows);
  SampleTokens(logits.data(), kRows, kVocab, rows.data(), a.data(), CpuExec{1});
  SampleTokens(logits.data(), kRows, kVocab, rows.data(), b.data(), CpuExec{4});
  EXPECT_EQ(a, b);
  for (int32_t r = 0; r < kRows; ++r) {
    int32_t one = -1;
    SampleTokens(logits.data() + int64_t{r} * kVocab, 1, kVocab,
                 &rows[size_t(r)], &one, CpuExec{3});
    EXPECT_EQ(a[size_t(r)], one) << "row " << r;
  }
}

TEST(SampleTokensDeathTest, RejectsBadTopK) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::vector<float> x = {1.0f, 2.0f};
  EXPECT_DEATH(SampleOne(x, 1.0f, 0, 1.0f, 0.5f), "top_k");
  EXPECT_DEATH(SampleOne(x, 1.0f, kMaxSampleTopK + 1, 1.0f, 0.5f), "top_k");
}

}  // namespace
}  // namespace kvsession::kernels
