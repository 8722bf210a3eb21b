#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

class SwiGluTest : public ::testing::TestWithParam<int> {};

TEST_P(SwiGluTest, MatchesNaiveReference) {
  const int n = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(n));
  const std::vector<float> g = naive::RandomFloats(n, -20, 20, rng);
  const std::vector<float> u = naive::RandomFloats(n, -3, 3, rng);
  std::vector<float> out(static_cast<size_t>(n), NAN);
  SwiGlu(g.data(), u.data(), n, out.data(), CpuExec{2});
  const std::vector<double> want = naive::SwiGlu(g.data(), u.data(), n);
  // exp is within ~2 ulp; 1 + e, the division and the product add 1.5 ulp:
  // 8 ulp relative is a safe bound, a wrong formula is off by orders more.
  for (int i = 0; i < n; ++i) {
    ASSERT_NEAR(want[size_t(i)], out[size_t(i)],
                8 * std::ldexp(1.0, -24) * std::fabs(want[size_t(i)]) + 1e-35)
        << "g " << g[size_t(i)];
  }
}

// An element's value must not depend on whether it falls in the vector body
// or the scalar tail, i.e. on n or on its index.
TEST_P(SwiGluTest, ElementIndependentOfLengthAndOffset) {
  const int n = GetParam();
  std::mt19937 rng(99);
  const std::vector<float> g = naive::RandomFloats(n + 16, -30, 30, rng);
  const std::vector<float> u = naive::RandomFloats(n + 16, -3, 3, rng);
  std::vector<float> full(size_t(n + 16));
  SwiGlu(g.data(), u.data(), n + 16, full.data(), CpuExec{2});
  for (int off : {0, 1, 3, 7}) {
    std::vector<float> part(static_cast<size_t>(n));
    SwiGlu(g.data() + off, u.data() + off, n, part.data(), CpuExec{1});
    ASSERT_EQ(0, std::memcmp(part.data(), full.data() + off, size_t(n) * 4))
        << "offset " << off;
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, SwiGluTest,
                         ::testing::Values(1, 7, 8, 9, 33, 1536, 4096 * 3 + 5));

TEST(SwiGluTest, SpecialValues) {
  const std::vector<float> g = {0.0f, 1.0f, -1.0f, 100.0f, -100.0f};
  const std::vector<float> u = {5.0f, 1.0f, 1.0f, 2.0f, 1.0f};
  std::vector<float> out(g.size());
  SwiGlu(g.data(), u.data(), int64_t(g.size()), out.data(), CpuExec{1});
  EXPECT_EQ(0.0f, out[0]);
  EXPECT_NEAR(0.7310585786, out[1], 1e-7);   // 1 / (1 + e^-1)
  EXPECT_NEAR(-0.2689414214, out[2], 1e-7);  // -1 / (1 + e)
  EXPECT_EQ(200.0f, out[3]);
  EXPECT_NEAR(0.0, out[4], 1e-30);
}

}  // namespace
}  // namespace kvsession::kernels
