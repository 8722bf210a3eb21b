#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

class AddTest : public ::testing::TestWithParam<int> {};

// f32 addition is exact-rounded, so the result must equal a + b bit for bit,
// also in place.
TEST_P(AddTest, ElementwiseExactAndInPlace) {
  const int n = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(n));
  const std::vector<float> a = naive::RandomFloats(n, -5, 5, rng);
  const std::vector<float> b = naive::RandomFloats(n, -5, 5, rng);
  std::vector<float> out(static_cast<size_t>(n));
  Add(a.data(), b.data(), n, out.data(), CpuExec{2});
  for (int i = 0; i < n; ++i)
    ASSERT_EQ(a[size_t(i)] + b[size_t(i)], out[size_t(i)]);
  std::vector<float> acc = a;
  Add(acc.data(), b.data(), n, acc.data(), CpuExec{2});
  EXPECT_EQ(out, acc);
}

INSTANTIATE_TEST_SUITE_P(Lengths, AddTest, ::testing::Values(1, 9, 576, 70001));

}  // namespace
}  // namespace kvsession::kernels
