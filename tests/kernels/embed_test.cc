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

class EmbedTest : public ::testing::TestWithParam<GgmlType> {};

// Rows come out as the naive decoder decodes them, bit for bit, in token
// order, repeats included.
TEST_P(EmbedTest, RowsAreDequantizedTableRows) {
  const GgmlType type = GetParam();
  constexpr int64_t kVocab = 11, kDim = 512;
  std::mt19937 rng(static_cast<uint32_t>(type));
  const std::vector<uint8_t> table =
      naive::RandomWeights(type, kVocab, kDim, rng);
  const size_t row_bytes = naive::RowBytes(type, kDim);
  const WeightView view{type, table.data(), kVocab, kDim, row_bytes};
  const std::vector<int32_t> tokens = {3, 0, 10, 3, 7};
  std::vector<float> out(tokens.size() * kDim, NAN);
  Embed(view, tokens.data(), int64_t(tokens.size()), out.data(), CpuExec{2});
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::vector<float> want = naive::Dequantize(
        type, table.data() + size_t(tokens[t]) * row_bytes, kDim);
    ASSERT_EQ(0, std::memcmp(want.data(), out.data() + t * kDim, kDim * 4))
        << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, EmbedTest,
                         ::testing::ValuesIn(naive::kWeightTypes),
                         naive::TypeParamName());

}  // namespace
}  // namespace kvsession::kernels
