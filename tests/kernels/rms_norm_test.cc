#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

// (rows, dim)
class RmsNormTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(RmsNormTest, MatchesNaiveReference) {
  const auto [rows, dim] = GetParam();
  std::mt19937 rng(uint32_t(rows * 31 + dim));
  const std::vector<float> x =
      naive::RandomFloats(int64_t(rows) * dim, -3, 3, rng);
  const std::vector<float> w = naive::RandomFloats(dim, 0.5f, 1.5f, rng);
  std::vector<float> out(x.size(), NAN);
  RmsNorm(x.data(), w.data(), rows, dim, 1e-5f, out.data(), CpuExec{2});
  const std::vector<double> want =
      naive::RmsNorm(x.data(), w.data(), rows, dim, 1e-5f);
  // f32 sum of squares: (dim/8 + 3) roundings of at most 2^-24 relative
  // (all terms positive); sqrt/division/eps halve and add ~3 ulp; the two
  // output products add 2 ulp. A wrong mean or weight is off by far more.
  const double rel = ((dim / 8.0 + 3) / 2 + 6) * std::ldexp(1.0, -24);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_NEAR(want[i], out[i], rel * std::fabs(want[i]) + 1e-30) << i;
  }
}

TEST_P(RmsNormTest, RowsIndependentOfBatch) {
  const auto [rows, dim] = GetParam();
  std::mt19937 rng(5);
  const std::vector<float> x =
      naive::RandomFloats(int64_t(rows) * dim, -3, 3, rng);
  const std::vector<float> w = naive::RandomFloats(dim, 0.5f, 1.5f, rng);
  std::vector<float> all(x.size()), one(static_cast<size_t>(dim));
  RmsNorm(x.data(), w.data(), rows, dim, 1e-6f, all.data(), CpuExec{2});
  for (int r = 0; r < rows; ++r) {
    RmsNorm(x.data() + int64_t(r) * dim, w.data(), 1, dim, 1e-6f, one.data(),
            CpuExec{1});
    ASSERT_EQ(0, std::memcmp(one.data(), all.data() + int64_t(r) * dim,
                             size_t(dim) * 4));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, RmsNormTest,
    ::testing::Combine(::testing::Values(1, 7, 64),
                       ::testing::Values(5, 64, 576, 1539)),
    [](const auto& info) {
      return "rows" + std::to_string(std::get<0>(info.param)) + "_dim" +
             std::to_string(std::get<1>(info.param));
    });

// In place (out == x) as the model uses it.
TEST(RmsNormTest, InPlace) {
  std::vector<float> x = {3, 4, 0, 0};  // mean square 25/4, rms 2.5
  const std::vector<float> w = {1, 2, 1, 1};
  RmsNorm(x.data(), w.data(), 1, 4, 0.0f, x.data(), CpuExec{1});
  EXPECT_FLOAT_EQ(1.2f, x[0]);
  EXPECT_FLOAT_EQ(3.2f, x[1]);
  EXPECT_EQ(0.0f, x[2]);
}

}  // namespace
}  // namespace kvsession::kernels
