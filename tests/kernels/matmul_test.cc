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

struct Shape {
  int64_t rows, cols, n_tokens;
};

bool IsQuantized32(GgmlType t) {
  return t == GgmlType::kQ4_0 || t == GgmlType::kQ4_1 || t == GgmlType::kQ5_0 ||
         t == GgmlType::kQ5_1 || t == GgmlType::kQ8_0;
}

using naive::MakeProblem;
using naive::Problem;

std::vector<float> RunMatMul(const WeightView& w, const float* x,
                             int64_t n_tokens, int threads) {
  std::vector<float> out(size_t(n_tokens * w.rows), NAN);
  MatMul(w, x, n_tokens, out.data(), CpuExec{threads});
  return out;
}

const GgmlType kAllTypes[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                              GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ4_K,
                              GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kF32,
                              GgmlType::kF16,  GgmlType::kBF16};

class MatMulTest
    : public ::testing::TestWithParam<std::tuple<GgmlType, Shape, int>> {};

TEST_P(MatMulTest, MatchesNaiveReference) {
  const auto [type, shape, threads] = GetParam();
  const Problem p = MakeProblem(type, shape.rows, shape.cols, shape.n_tokens,
                                uint32_t(shape.rows * 131 + shape.cols));
  const std::vector<float> out =
      RunMatMul(p.view, p.x.data(), shape.n_tokens, threads);
  const naive::MatMulRef ref =
      naive::MatMul(type, p.w.data(), shape.rows, shape.cols, p.view.row_bytes,
                    p.x.data(), shape.n_tokens);
  // Both sides multiply the same values (the naive side decodes the weights
  // and the quantized activations to f32, then sums in double). The kernel's
  // only error is f32 rounding: one rounding per accumulation step (a 32-block
  // for quantized types, 8 elements otherwise), the d_w*d_a product, the
  // 8-lane reduction and the min term, each at most 2^-24 of sum|w*a|; the
  // naive f32 decode of q*d+m adds another 2^-24 per element. (steps + 16)
  // * 2^-23 * sum|w*a| bounds all of it; one wrong element (|w*a| ~ 1e-3 of
  // the sum) or a wrong scale is orders of magnitude above.
  const int64_t steps = IsQuantized32(type) ? shape.cols / 32 : shape.cols / 8;
  for (size_t i = 0; i < out.size(); ++i) {
    const double tol =
        double(steps + 16) * std::ldexp(1.0, -23) * ref.abs_sum[i];
    ASSERT_NEAR(out[i], ref.out[i], tol) << "token " << i / size_t(shape.rows)
                                         << " row " << i % size_t(shape.rows);
  }
}

// Every type x shape (cols a multiple of the type's block) x 1 and 2 threads.
std::vector<std::tuple<GgmlType, Shape, int>> MatMulGrid() {
  const Shape shapes[] = {{1, 256, 1},  {37, 256, 5},  {19, 512, 70},
                          {64, 576, 3}, {21, 1536, 2}, {8, 768, 40}};
  std::vector<std::tuple<GgmlType, Shape, int>> grid;
  for (GgmlType t : kAllTypes) {
    for (const Shape& s : shapes) {
      if (s.cols % Traits(t).block_elems != 0) continue;
      for (int threads : {1, 2}) grid.emplace_back(t, s, threads);
    }
  }
  return grid;
}

INSTANTIATE_TEST_SUITE_P(
    Grid, MatMulTest, ::testing::ValuesIn(MatMulGrid()), [](const auto& info) {
      const Shape s = std::get<1>(info.param);
      return std::string(TypeName(std::get<0>(info.param))) + "_" +
             std::to_string(s.rows) + "x" + std::to_string(s.cols) + "_t" +
             std::to_string(s.n_tokens) + "_th" +
             std::to_string(std::get<2>(info.param));
    });

// The kernel's selling point: an output element is bitwise the same whatever
// batch it is computed in, however many threads, whichever tile/edge path.
class MatMulInvarianceTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(MatMulInvarianceTest, BitwiseIdenticalAcrossBatchesAndThreads) {
  const GgmlType type = GetParam();
  // 53 rows: not a multiple of the row tile nor of the panel; 37 tokens: not
  // a multiple of the token tile.
  constexpr int64_t kRows = 53, kCols = 512, kTokens = 37;
  const Problem p = MakeProblem(type, kRows, kCols, kTokens, 7);
  const std::vector<float> all2 = RunMatMul(p.view, p.x.data(), kTokens, 2);
  const std::vector<float> all1 = RunMatMul(p.view, p.x.data(), kTokens, 1);
  ASSERT_EQ(0, std::memcmp(all1.data(), all2.data(), all1.size() * 4));
  for (int64_t t = 0; t < kTokens; ++t) {
    const std::vector<float> one =
        RunMatMul(p.view, p.x.data() + t * kCols, 1, 1);
    ASSERT_EQ(0, std::memcmp(one.data(), all2.data() + t * kRows, kRows * 4))
        << "token " << t;
  }
  // A window of tokens starting mid-tile.
  constexpr int64_t kFirst = 5, kCount = 11;
  const std::vector<float> sub =
      RunMatMul(p.view, p.x.data() + kFirst * kCols, kCount, 2);
  ASSERT_EQ(0, std::memcmp(sub.data(), all2.data() + kFirst * kRows,
                           kCount * kRows * 4));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulInvarianceTest,
                         ::testing::ValuesIn(kAllTypes), [](const auto& info) {
                           return std::string(TypeName(info.param));
                         });

// The default model's shapes, with more tokens than one work chunk.
TEST(MatMulInvarianceTest, ModelShapeAcrossChunks) {
  for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    constexpr int64_t kRows = 192, kCols = 576, kTokens = 150;
    const Problem p = MakeProblem(type, kRows, kCols, kTokens, 11);
    const std::vector<float> all = RunMatMul(p.view, p.x.data(), kTokens, 2);
    for (int64_t t : {0, 1, 63, 64, 65, 127, 128, 149}) {
      const std::vector<float> one =
          RunMatMul(p.view, p.x.data() + t * kCols, 1, 2);
      ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t * kRows, kRows * 4))
          << TypeName(type) << " token " << t;
    }
  }
}

}  // namespace
}  // namespace kvsession::kernels
