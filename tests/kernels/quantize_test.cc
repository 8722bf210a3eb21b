#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/f16.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

const GgmlType kQuantizable[] = {
    GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16,
    GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
    GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ8_1};

std::vector<uint8_t> Quant(GgmlType type, const std::vector<float>& x) {
  std::vector<uint8_t> out(naive::RowBytes(type, int64_t(x.size())), 0xAB);
  QuantizeRow(type, x.data(), out.data(), int64_t(x.size()));
  return out;
}

TEST(QuantizeTest, CanQuantize) {
  for (GgmlType t : kQuantizable) EXPECT_TRUE(CanQuantize(t)) << TypeName(t);
  EXPECT_FALSE(CanQuantize(GgmlType::kQ4_K));
  EXPECT_FALSE(CanQuantize(GgmlType::kQ6_K));
}

// Hand-made Q8_1 block with exact binary values: amax = 127/64, so d = 1/64
// (f16 0x2400) and x / d = 64 x exactly. Halves round away from zero (0.5 ->
// 1, -1.5 -> -2, 2.5 -> 3; round-to-even would give 0, -2, 2).
TEST(QuantizeTest, Q8RoundsHalfAwayFromZero) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f / 64;
  x[1] = 0.5f / 64;
  x[2] = -1.5f / 64;
  x[3] = -127.0f / 64;
  x[4] = 5.0f / 64;
  x[5] = 2.5f / 64;
  const std::vector<uint8_t> q = Quant(GgmlType::kQ8_1, x);
  EXPECT_EQ(0x00, q[0]);
  EXPECT_EQ(0x24, q[1]);
  const int8_t want[6] = {127, 1, -2, -127, 5, 3};
  for (int j = 0; j < 6; ++j) EXPECT_EQ(want[j], int8_t(q[4 + j])) << j;
  for (int j = 6; j < 32; ++j) EXPECT_EQ(0, q[4 + j]) << j;
  // s = f16(d * sum(q)) = f16(7 / 64) = 0x2F00.
  EXPECT_EQ(0x00, q[2]);
  EXPECT_EQ(0x2F, q[3]);
}

TEST(QuantizeTest, ZeroBlock) {
  const std::vector<float> x(32, 0.0f);
  for (GgmlType t : kQuantizable) {
    std::vector<float> back(32, NAN);
    const std::vector<uint8_t> q = Quant(t, x);
    DequantizeRow(t, q.data(), back.data(), 32);
    for (float f : back) EXPECT_EQ(0.0f, f) << TypeName(t);
  }
}

class QuantizeParamTest
    : public ::testing::TestWithParam<std::tuple<GgmlType, int, float>> {};

// Bit-exact agreement with ggml's reference quantizers (written
// independently in naive_ops): MatMul's activations must round like
// llama.cpp's.
TEST_P(QuantizeParamTest, MatchesReferenceBytes) {
  const auto [type, n_blocks, range] = GetParam();
  std::mt19937 rng(uint32_t(n_blocks * 7 + static_cast<int>(type)));
  std::vector<float> x = naive::RandomFloats(32 * n_blocks, -range, range, rng);
  x[3] = range;  // exact extremes exercise the clamps
  x[40 % x.size()] = -range;
  const std::vector<uint8_t> want =
      naive::Quantize(type, x.data(), int64_t(x.size()));
  EXPECT_EQ(want, Quant(type, x));
}

// Round trip error per element, bounded by the format: half a quantization
// step (a full step for the clamped extreme of Q4_0/Q5_0), plus the f16
// rounding of the stored scale (relative 2^-11, times the largest |q|) and of
// the stored min. Any wrong nibble/bit placement is off by at least one step.
TEST_P(QuantizeParamTest, RoundTripErrorBound) {
  const auto [type, n_blocks, range] = GetParam();
  std::mt19937 rng(uint32_t(n_blocks * 13 + static_cast<int>(type)));
  const std::vector<float> x =
      naive::RandomFloats(32 * n_blocks, -range, range, rng);
  const std::vector<uint8_t> q = Quant(type, x);
  std::vector<float> back(x.size(), NAN);
  DequantizeRow(type, q.data(), back.data(), int64_t(x.size()));
  // f16 rounding error of a stored value v (subnormal halves: 2^-25).
  auto e = [](double v) {
    return std::max(std::fabs(v) * std::ldexp(1.0, -11), std::ldexp(1.0, -25));
  };
  for (size_t b = 0; b < x.size() / 32; ++b) {
    const float* xb = x.data() + 32 * b;
    const double lo = *std::min_element(xb, xb + 32);
    const double hi = *std::max_element(xb, xb + 32);
    const double amax = std::max(std::fabs(lo), std::fabs(hi));
    double bound;
    switch (type) {
      case GgmlType::kF32:
        bound = 0;
        break;
      case GgmlType::kF16:
        bound = e(amax);
        break;
      case GgmlType::kBF16:
        bound = amax * std::ldexp(1.0, -8);
        break;
      case GgmlType::kQ4_0:
        bound = amax / 8 + 8 * e(amax / 8);
        break;
      case GgmlType::kQ5_0:
        bound = amax / 16 + 16 * e(amax / 16);
        break;
      case GgmlType::kQ4_1:
        bound = (hi - lo) / 15 / 2 + 15 * e((hi - lo) / 15) + e(lo);
        break;
      case GgmlType::kQ5_1:
        bound = (hi - lo) / 31 / 2 + 31 * e((hi - lo) / 31) + e(lo);
        break;
      default:  // Q8_0, Q8_1
        bound = amax / 127 / 2 + 127 * e(amax / 127);
        break;
    }
    for (int j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(double(back[32 * b + j]) - xb[j]),
                bound * 1.0001 + 1e-30)
          << TypeName(type) << " block " << b << " element " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, QuantizeParamTest,
    ::testing::Combine(::testing::ValuesIn(kQuantizable),
                       ::testing::Values(1, 3, 48),
                       ::testing::Values(1e-3f, 1.0f, 300.0f)),
    [](const auto& info) {
      const float r = std::get<2>(info.param);
      return std::string(TypeName(std::get<0>(info.param))) + "_" +
             std::to_string(std::get<1>(info.param)) + "blocks_range" +
             (r < 1   ? "small"
              : r > 1 ? "large"
                      : "unit");
    });

}  // namespace
}  // namespace kvsession::kernels
