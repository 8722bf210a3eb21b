#include "kernels/f16.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "kernels/f16_internal.h"
#include "tests/kernels/naive_ops.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvsession::kernels {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(F16Test, KnownValues) {
  EXPECT_EQ(0x0000, FloatToHalf(0.0f));
  EXPECT_EQ(0x8000, FloatToHalf(-0.0f));
  EXPECT_EQ(0x3C00, FloatToHalf(1.0f));
  EXPECT_EQ(0xC000, FloatToHalf(-2.0f));
  EXPECT_EQ(0x7BFF, FloatToHalf(65504.0f));               // largest finite
  EXPECT_EQ(0x7BFF, FloatToHalf(65519.99f));              // rounds down
  EXPECT_EQ(0x7C00, FloatToHalf(65520.0f));               // tie -> even = inf
  EXPECT_EQ(0x0001, FloatToHalf(std::ldexp(1.0f, -24)));  // smallest subnormal
  EXPECT_EQ(0x0000, FloatToHalf(std::ldexp(1.0f, -25)));  // tie -> even = 0
  EXPECT_EQ(0x0002, FloatToHalf(std::ldexp(3.0f, -25)));  // tie -> even = 2
  EXPECT_EQ(0x0400, FloatToHalf(std::ldexp(1.0f, -14)));  // smallest normal
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(0x3C00, FloatToHalf(1.0f + std::ldexp(1.0f, -11)));
  EXPECT_EQ(0x3C02, FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)));
  EXPECT_EQ(1.0f, HalfToFloat(0x3C00));
  EXPECT_EQ(-65504.0f, HalfToFloat(0xFBFF));
  EXPECT_EQ(std::ldexp(1.0f, -24), HalfToFloat(0x0001));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
}

// Every half converts exactly; portable, F16C and the naive reference agree
// bit for bit (NaNs included).
TEST(F16Test, HalfToFloatExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float portable = internal::HalfToFloatPortable(uint16_t(h));
    ASSERT_EQ(Bits(portable), Bits(HalfToFloat(uint16_t(h)))) << h;
#if defined(__F16C__)
    ASSERT_EQ(Bits(portable), Bits(_cvtsh_ss(uint16_t(h)))) << h;
#endif
    if (!std::isnan(portable)) {
      ASSERT_EQ(Bits(portable), Bits(naive::HalfToFloat(uint16_t(h)))) << h;
    }
  }
}

// Every float whose low 13 bits (the ones rounding drops) take one of the
// interesting patterns (zero, just below/at/above the tie, all ones), for all
// 2^19 sign/exponent/high-mantissa prefixes, plus random floats.
TEST(F16Test, FloatToHalfMatchesF16cAndReference) {
  const uint32_t lows[] = {0x0000, 0x0001, 0x0FFF, 0x1000,
                           0x1001, 0x17FF, 0x1FFF, 0x0800};
  std::mt19937 rng(3);
  auto check = [](uint32_t u) {
    const float f = FromBits(u);
    const uint16_t portable = internal::FloatToHalfPortable(f);
    ASSERT_EQ(portable, FloatToHalf(f)) << std::hex << u;
#if defined(__F16C__)
    ASSERT_EQ(portable, _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT))
        << std::hex << u;
#endif
    ASSERT_EQ(portable, naive::FloatToHalf(f)) << std::hex << u;
  };
  for (uint32_t hi = 0; hi < (1u << 19); ++hi) {
    for (uint32_t low : lows) check((hi << 13) | low);
  }
  for (int i = 0; i < 1000000; ++i) check(uint32_t(rng()));
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(0x3F80, FloatToBf16(1.0f));
  EXPECT_EQ(0x3F80, FloatToBf16(FromBits(0x3F808000)));  // tie -> even
  EXPECT_EQ(0x3F82, FloatToBf16(FromBits(0x3F818000)));  // tie -> even (up)
  EXPECT_EQ(0x3F81, FloatToBf16(FromBits(0x3F808001)));  // above tie
  EXPECT_EQ(0x7F80, FloatToBf16(std::numeric_limits<float>::infinity()));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  std::mt19937 rng(5);
  for (int i = 0; i < 1000000; ++i) {
    const float f = FromBits(uint32_t(rng()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(naive::FloatToBf16(f), FloatToBf16(f)) << f;
  }
}

}  // namespace
}  // namespace kvsession::kernels
