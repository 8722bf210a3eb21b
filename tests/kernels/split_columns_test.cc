#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

// Row counts below and above the threaded threshold.
class SplitColumnsTest : public ::testing::TestWithParam<int> {};

TEST_P(SplitColumnsTest, EachSegmentLandsInItsBuffer) {
  const int n_rows = GetParam();
  const std::vector<int64_t> widths = {8, 3, 3, 1};
  const int64_t total = 15;
  std::mt19937 rng(static_cast<uint32_t>(n_rows));
  const std::vector<float> src = naive::RandomFloats(n_rows * total, -5, 5, rng);
  std::vector<std::vector<float>> out;
  std::vector<float*> dsts;
  for (int64_t w : widths) {
    out.emplace_back(static_cast<size_t>(n_rows * w), -1.0f);
    dsts.push_back(out.back().data());
  }
  SplitColumns(src.data(), n_rows, widths, dsts, CpuExec{2});
  for (int r = 0; r < n_rows; ++r) {
    int64_t c = 0;
    for (size_t i = 0; i < widths.size(); ++i) {
      for (int64_t j = 0; j < widths[i]; ++j, ++c) {
        ASSERT_EQ(out[i][r * widths[i] + j], src[r * total + c])
            << "row " << r << " segment " << i << " column " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, SplitColumnsTest, ::testing::Values(0, 1, 5, 100));

TEST(SplitColumnsTest, OneSegmentIsACopy) {
  const std::vector<float> src = {1, 2, 3, 4, 5, 6};
  std::vector<float> dst(6);
  const int64_t widths[1] = {3};
  float* dsts[1] = {dst.data()};
  SplitColumns(src.data(), 2, widths, dsts, CpuExec{1});
  EXPECT_EQ(dst, src);
}

}  // namespace
}  // namespace kvsession::kernels
