// FillRandom: values in [-scale, scale), the documented splitmix64 hash,
// deterministic, independent of the thread count, F16/BF16 equal to the
// rounded F32 values, and different seeds give different streams.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/f16.h"

namespace kvsession::kernels {
namespace {

// Above FillRandom's 65536-element threshold, so threads really split it,
// and not a multiple of any thread count.
constexpr int64_t kN = 200003;

std::vector<float> FillF32(int64_t n, uint64_t seed, float scale, int threads) {
  std::vector<float> v(size_t(n), NAN);
  FillRandom(GgmlType::kF32, v.data(), n, seed, scale, CpuExec{threads});
  return v;
}

std::vector<uint16_t> Fill16(GgmlType type, int64_t n, uint64_t seed,
                             float scale, int threads) {
  std::vector<uint16_t> v(size_t(n), 0xCDCD);
  FillRandom(type, v.data(), n, seed, scale, CpuExec{threads});
  return v;
}

TEST(FillRandomTest, KnownSplitMix64Values) {
  // splitmix64 from state 0 yields 0xE220A8397B1DCDAF first; its top 24
  // bits 0xE220A8 = 14819496 map to 14819496 / 2^23 - 1.
  EXPECT_EQ(RandomUnit(0, 0), 14819496.0f / 8388608.0f - 1.0f);
  // The second output 0x6E789E6AA1B965F4 (state 2 * golden ratio).
  EXPECT_EQ(RandomUnit(0, 1), float(0x6E789E) / 8388608.0f - 1.0f);
  // Element i of seed s is the hash of s + (i + 1) * golden ratio, so
  // (seed 0, i = 1) and (seed = golden ratio, i = 0) coincide.
  EXPECT_EQ(RandomUnit(0x9E3779B97F4A7C15ull, 0), RandomUnit(0, 1));
}

TEST(FillRandomTest, ValuesInRangeAndSpread) {
  for (const float scale : {1.0f, 0.02f, 3.5f}) {
    const std::vector<float> v = FillF32(kN, 7, scale, 4);
    double sum = 0.0;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < kN; ++i) {
      const float x = v[size_t(i)];
      ASSERT_TRUE(x >= -scale && x < scale) << "index " << i << ": " << x;
      // The unit value is a multiple of 2^-23 in [-1, 1), times scale.
      EXPECT_EQ(x, RandomUnit(7, uint64_t(i)) * scale) << "index " << i;
      sum += x;
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    // Uniform: mean ~0 (sd of the mean ~ scale / sqrt(3 kN) ~ 1.3e-3 scale)
    // and both ends of the range are reached closely.
    EXPECT_NEAR(sum / kN, 0.0, 0.01 * scale) << "scale " << scale;
    EXPECT_LT(lo, -0.999f * scale);
    EXPECT_GT(hi, 0.999f * scale);
  }
}

TEST(FillRandomTest, UnitValuesAreExactDyadics) {
  for (uint64_t i = 0; i < 10000; ++i) {
    const float u = RandomUnit(99, i);
    ASSERT_TRUE(u >= -1.0f && u < 1.0f) << u;
    const float k = (u + 1.0f) * 8388608.0f;  // exact: an integer < 2^24
    ASSERT_EQ(k, std::floor(k)) << "i " << i;
  }
}

TEST(FillRandomTest, DeterministicAndThreadCountDoesNotChangeBits) {
  const std::vector<float> one = FillF32(kN, 123, 0.5f, 1);
  for (const int threads : {1, 2, 3, 4, 7}) {
    const std::vector<float> v = FillF32(kN, 123, 0.5f, threads);
    ASSERT_EQ(0, std::memcmp(one.data(), v.data(), kN * sizeof(float)))
        << "threads " << threads;
  }
  for (const GgmlType t : {GgmlType::kF16, GgmlType::kBF16}) {
    const std::vector<uint16_t> a = Fill16(t, kN, 123, 0.5f, 1);
    const std::vector<uint16_t> b = Fill16(t, kN, 123, 0.5f, 5);
    EXPECT_EQ(a, b) << TypeName(t);
  }
}

TEST(FillRandomTest, HalfTypesAreRoundedF32Values) {
  // 1e-6 puts many f16 values among the subnormals, 7e4 overflows f16.
  for (const float scale : {1.0f, 0.02f, 1e-6f, 7e4f}) {
    const std::vector<float> f = FillF32(kN, 5, scale, 3);
    const std::vector<uint16_t> h = Fill16(GgmlType::kF16, kN, 5, scale, 3);
    const std::vector<uint16_t> b = Fill16(GgmlType::kBF16, kN, 5, scale, 3);
    for (int64_t i = 0; i < kN; ++i) {
      ASSERT_EQ(h[size_t(i)], FloatToHalf(f[size_t(i)]))
          << "scale " << scale << " index " << i;
      ASSERT_EQ(b[size_t(i)], FloatToBf16(f[size_t(i)]))
          << "scale " << scale << " index " << i;
    }
  }
}

TEST(FillRandomTest, SeedsAndOffsetsDiffer) {
  const std::vector<float> a = FillF32(4096, 1, 1.0f, 2);
  const std::vector<float> b = FillF32(4096, 2, 1.0f, 2);
  int64_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  // Two independent streams on a 2^24 grid almost never coincide.
  EXPECT_LE(same, 2);
  // A fill of n elements is the prefix of a longer fill with the same seed.
  const std::vector<float> longer = FillF32(kN, 1, 1.0f, 4);
  EXPECT_EQ(0, std::memcmp(a.data(), longer.data(), a.size() * 4));
}

TEST(FillRandomTest, EmptyFillWritesNothing) {
  std::vector<uint16_t> v(4, 0xCDCD);
  FillRandom(GgmlType::kF16, v.data(), 0, 1, 1.0f, CpuExec{2});
  EXPECT_EQ(v, std::vector<uint16_t>(4, 0xCDCD));
}

}  // namespace
}  // namespace kvsession::kernels
