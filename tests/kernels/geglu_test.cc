#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

// GELU's tanh form as PyTorch and ggml write it, in double: an independent
// statement of what the kernel's sigmoid form must compute. Where 1 + tanh(y)
// would cancel (y < -5), the same quantity as exp(2y) / (1 + exp(2y)).
double GeluTanh(double x) {
  const double y = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  if (y < -5) return x * std::exp(2 * y) / (1 + std::exp(2 * y));
  return 0.5 * x * (1.0 + std::tanh(y));
}

class GeGluTest : public ::testing::TestWithParam<int> {};

TEST_P(GeGluTest, MatchesTanhFormula) {
  const int n = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(n));
  const std::vector<float> g = naive::RandomFloats(n, -12, 12, rng);
  const std::vector<float> u = naive::RandomFloats(n, -3, 3, rng);
  std::vector<float> out(static_cast<size_t>(n), NAN);
  GeGlu(g.data(), u.data(), n, out.data(), CpuExec{2});
  for (int i = 0; i < n; ++i) {
    const double x = g[size_t(i)];
    const double want = GeluTanh(x) * u[size_t(i)];
    // The exp argument z = x (a + b x^2) carries ~3 ulp of relative error,
    // which exp turns into |z| * 3 ulp of the result where the sigmoid is
    // small; the divisions and products add a few ulp more.
    const double z = std::fabs(x * (1.5957691216 + 0.0713548163 * x * x));
    const double tol =
        (8 + 4 * std::min(z, 100.0)) * std::ldexp(1.0, -24) * std::fabs(want) +
        1e-35;
    ASSERT_NEAR(want, out[size_t(i)], tol) << "g " << x;
  }
}

// An element's value does not depend on whether it falls in the vector body
// or the scalar tail, i.e. on n or on its index.
TEST_P(GeGluTest, ElementIndependentOfLengthAndOffset) {
  const int n = GetParam();
  std::mt19937 rng(7);
  const std::vector<float> g = naive::RandomFloats(n + 16, -30, 30, rng);
  const std::vector<float> u = naive::RandomFloats(n + 16, -3, 3, rng);
  std::vector<float> full(size_t(n + 16));
  GeGlu(g.data(), u.data(), n + 16, full.data(), CpuExec{2});
  for (int off : {0, 1, 3, 7}) {
    std::vector<float> part(static_cast<size_t>(n));
    GeGlu(g.data() + off, u.data() + off, n, part.data(), CpuExec{1});
    ASSERT_EQ(0, std::memcmp(part.data(), full.data() + off, size_t(n) * 4))
        << "offset " << off;
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, GeGluTest,
                         ::testing::Values(1, 7, 8, 9, 33, 2048, 4096 * 3 + 5));

TEST(GeGluTest, SpecialValues) {
  const std::vector<float> g = {0.0f, 1.0f, -1.0f, 100.0f, -100.0f, 1e30f};
  const std::vector<float> u = {5.0f, 1.0f, 1.0f, 2.0f, 1.0f, 1.0f};
  std::vector<float> out(g.size());
  GeGlu(g.data(), u.data(), int64_t(g.size()), out.data(), CpuExec{1});
  EXPECT_EQ(0.0f, out[0]);
  EXPECT_NEAR(0.8411919906, out[1], 1e-7);    // gelu_tanh(1)
  EXPECT_NEAR(-0.1588080094, out[2], 1e-7);   // gelu_tanh(-1)
  EXPECT_EQ(200.0f, out[3]);
  EXPECT_NEAR(0.0, out[4], 1e-30);
  EXPECT_EQ(1e30f, out[5]);  // x^3 overflows: the sigmoid saturates at 1
}

TEST(ScaleTest, MultipliesEachElementOnceInPlace) {
  std::mt19937 rng(3);
  std::vector<float> x = naive::RandomFloats(40000, -5, 5, rng);
  const std::vector<float> orig = x;
  const float s = std::sqrt(640.0f);
  Scale(x.data(), s, int64_t(x.size()), x.data(), CpuExec{2});
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(orig[i] * s, x[i]) << i;
}

}  // namespace
}  // namespace kvsession::kernels
