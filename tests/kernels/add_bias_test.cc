// AddBias against a naive loop: one IEEE f32 add per element, so bitwise,
// for every row, in place, and whatever the thread count.
#include <cstdint>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

// (n_rows, dim): small rows, odd widths, and sizes past the OpenMP
// threshold (n_rows * dim > 16384).
class AddBiasTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(AddBiasTest, EqualsNaiveLoopAndInPlace) {
  const auto [n_rows, dim] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(n_rows * 131 + dim));
  const std::vector<float> x =
      naive::RandomFloats(int64_t{n_rows} * dim, -100, 100, rng);
  const std::vector<float> bias = naive::RandomFloats(dim, -1, 1, rng);
  std::vector<float> want(x.size());
  for (int r = 0; r < n_rows; ++r) {
    for (int i = 0; i < dim; ++i) {
      const size_t k = size_t(r) * size_t(dim) + size_t(i);
      want[k] = x[k] + bias[size_t(i)];
    }
  }
  for (const int threads : {1, 3}) {
    SCOPED_TRACE(threads);
    std::vector<float> out(x.size(), -1.0f);
    AddBias(x.data(), bias.data(), n_rows, dim, out.data(), CpuExec{threads});
    EXPECT_EQ(out, want);
    std::vector<float> acc = x;
    AddBias(acc.data(), bias.data(), n_rows, dim, acc.data(),
            CpuExec{threads});
    EXPECT_EQ(acc, want);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AddBiasTest,
                         ::testing::Values(std::make_tuple(1, 1),
                                           std::make_tuple(1, 896),
                                           std::make_tuple(7, 77),
                                           std::make_tuple(64, 1024),
                                           std::make_tuple(300, 128)));

// Rows past n_rows are neither read nor written; n_rows 0 writes nothing.
TEST(AddBiasTest, TouchesOnlyItsRows) {
  const std::vector<float> bias = {1.0f, 2.0f, 3.0f};
  std::vector<float> x = {1, 1, 1, 5, 5, 5};
  std::vector<float> out(6, -7.0f);
  AddBias(x.data(), bias.data(), 1, 3, out.data(), CpuExec{2});
  EXPECT_EQ(out, (std::vector<float>{2, 3, 4, -7, -7, -7}));
  AddBias(x.data(), bias.data(), 0, 3, out.data(), CpuExec{2});
  EXPECT_EQ(out, (std::vector<float>{2, 3, 4, -7, -7, -7}));
}

}  // namespace
}  // namespace kvsession::kernels
