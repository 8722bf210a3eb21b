#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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
  for (GgmlType t :
       {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kQ8_K}) {
    EXPECT_TRUE(CanQuantize(t)) << TypeName(t);
  }
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

// ---------------------------------------------------------------------------
// K-quants (256-element super-blocks).

float F16At(const std::vector<uint8_t>& q, size_t at) {
  return naive::HalfToFloat(uint16_t(q[at] | (q[at + 1] << 8)));
}

// Q8_K is ggml's quantize_row_q8_K_ref byte for byte (the activations of the
// K-quant MatMul): d = max / -128, round half to even, bsums.
TEST(QuantizeKTest, Q8_KMatchesReferenceBytes) {
  for (float range : {1e-3f, 1.0f, 300.0f}) {
    std::mt19937 rng(uint32_t(range * 1000));
    std::vector<float> x = naive::RandomFloats(256 * 5, -range, range, rng);
    x[7] = range;  // the first largest magnitude maps to q = -128
    x[300] = -range;
    std::fill(x.begin() + 512, x.begin() + 768, 0.0f);  // a zero block
    EXPECT_EQ(naive::Quantize(GgmlType::kQ8_K, x.data(), int64_t(x.size())),
              Quant(GgmlType::kQ8_K, x))
        << range;
  }
}

TEST(QuantizeKTest, ZeroBlocks) {
  const std::vector<float> x(512, 0.0f);
  for (GgmlType t :
       {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kQ8_K}) {
    std::vector<float> back(512, NAN);
    const std::vector<uint8_t> q = Quant(t, x);
    DequantizeRow(t, q.data(), back.data(), 512);
    for (float f : back) EXPECT_EQ(0.0f, f) << TypeName(t);
  }
}

class QuantizeKParamTest
    : public ::testing::TestWithParam<std::tuple<GgmlType, float>> {};

// Round trip: each element within half a step of its group (Q4_K/Q5_K:
// step d * sc of its 32-element sub-block; Q6_K: d * sc of its 16 elements,
// a full step where x / step > 31.5 since +32 clamps to 31; Q8_K: d), and no
// step wider than the group's range needs (the scales round up by at most
// one unit of the f16 super-block scale). A misplaced bit breaks the first,
// a wasted scale the second.
TEST_P(QuantizeKParamTest, RoundTripErrorBound) {
  const auto [type, range] = GetParam();
  constexpr int kBlocks = 6;
  std::mt19937 rng(uint32_t(static_cast<int>(type) * 31 + int(range)));
  std::vector<float> x = naive::RandomFloats(256 * kBlocks, -range, range, rng);
  // Block 1: one sign only (no min offset); block 2: a narrow band far from
  // 0; block 3: sub-blocks of very different ranges.
  for (int k = 256; k < 512; ++k) x[k] = std::fabs(x[k]);
  for (int k = 512; k < 768; ++k) x[k] = -range + x[k] * 1e-3f;
  for (int k = 768; k < 1024; ++k) x[k] *= std::ldexp(1.0f, -(k % 256) / 32);
  const std::vector<uint8_t> q = Quant(type, x);
  std::vector<float> back(x.size(), NAN);
  DequantizeRow(type, q.data(), back.data(), int64_t(x.size()));
  const size_t bytes = size_t(Traits(type).block_bytes);
  const int group = type == GgmlType::kQ6_K   ? 16
                    : type == GgmlType::kQ8_K ? 256
                                              : 32;
  const int levels = type == GgmlType::kQ4_K ? 15 : 31;
  for (int b = 0; b < kBlocks; ++b) {
    const uint8_t* blk = q.data() + b * bytes;
    for (int g = 0; g < 256 / group; ++g) {
      const float* xg = x.data() + 256 * b + group * g;
      const double lo = *std::min_element(xg, xg + group);
      const double hi = *std::max_element(xg, xg + group);
      double step, max_step;
      switch (type) {
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K: {
          const double d = F16At(q, b * bytes), dmin = F16At(q, b * bytes + 2);
          const uint8_t* s = blk + 4;
          const int sc =
              g < 4 ? (s[g] & 63) : ((s[g + 4] & 15) | ((s[g - 4] >> 6) << 4));
          step = d * sc;
          max_step =
              (std::max(hi, 0.0) - std::min(lo, 0.0) + dmin) / levels + d;
          break;
        }
        case GgmlType::kQ6_K: {
          const double d = F16At(q, b * bytes + 208);
          step = std::fabs(d * int8_t(blk[192 + g]));
          max_step = std::max(std::fabs(lo), std::fabs(hi)) / 32 + d;
          break;
        }
        default: {  // Q8_K
          float d;
          std::memcpy(&d, blk, 4);
          step = std::fabs(double(d));
          max_step = std::max(std::fabs(lo), std::fabs(hi)) / 127.5;
          break;
        }
      }
      ASSERT_LE(step, max_step * (1 + 1e-6) + 1e-30)
          << TypeName(type) << " block " << b << " group " << g;
      for (int k = 0; k < group; ++k) {
        // Only +32 (Q6_K) and +128 (Q8_K) clamp, to a full step.
        const double top = type == GgmlType::kQ6_K   ? 31.5
                           : type == GgmlType::kQ8_K ? 127.5
                                                     : 1e30;
        const bool full = std::fabs(xg[k]) > top * step;
        const double bound = (full ? 1.0 : 0.5) * step * (1 + 1e-5) +
                             std::fabs(double(xg[k])) * 1e-6 + 1e-30;
        ASSERT_LE(std::fabs(double(back[256 * b + group * g + k]) - xg[k]),
                  bound)
            << TypeName(type) << " block " << b << " element " << group * g + k;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    KTypes, QuantizeKParamTest,
    ::testing::Combine(::testing::Values(GgmlType::kQ4_K, GgmlType::kQ5_K,
                                         GgmlType::kQ6_K, GgmlType::kQ8_K),
                       ::testing::Values(1e-3f, 1.0f, 300.0f)),
    [](const auto& info) {
      const float r = std::get<1>(info.param);
      return std::string(TypeName(std::get<0>(info.param))) + "_range" +
             (r < 1   ? "small"
              : r > 1 ? "large"
                      : "unit");
    });

}  // namespace
}  // namespace kvsession::kernels
