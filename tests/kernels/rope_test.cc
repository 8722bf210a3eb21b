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

// (mode, head_dim, rot_dim, freq_scale)
class RopeTest
    : public ::testing::TestWithParam<std::tuple<RopeMode, int, int, float>> {};

RopeParams ParamsOf(const std::tuple<RopeMode, int, int, float>& p) {
  RopeParams r;
  r.mode = std::get<0>(p);
  r.head_dim = std::get<1>(p);
  r.rot_dim = std::get<2>(p);
  r.freq_base = 10000.0f;
  r.freq_scale = std::get<3>(p);
  return r;
}

TEST_P(RopeTest, MatchesNaiveReference) {
  const RopeParams p = ParamsOf(GetParam());
  constexpr int32_t kHeads = 3;
  const std::vector<int32_t> positions = {0, 1, 7, 100, 2047, 4095, 31};
  const int64_t n = int64_t(positions.size());
  std::mt19937 rng(uint32_t(p.head_dim + p.rot_dim));
  std::vector<float> x =
      naive::RandomFloats(n * kHeads * p.head_dim, -2, 2, rng);
  const std::vector<double> want =
      naive::Rope(x.data(), n, kHeads, positions.data(), p);
  Rope(x.data(), n, kHeads, positions.data(), p, CpuExec{2});
  // Same f32 angle on both sides (ggml's definition); the kernel's cosf/sinf
  // are within 1 ulp and each rotated value takes two f32 products and a sum:
  // <= 4 * 2^-24 * (|x0| + |x1|) <= 1.9e-6 for |x| <= 2. A wrong pairing or
  // sign is off by O(1).
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_NEAR(want[i], x[i], 2e-6) << "element " << i;
  }
}

TEST_P(RopeTest, BatchInvariantAndPositionZeroIsIdentity) {
  const RopeParams p = ParamsOf(GetParam());
  constexpr int32_t kHeads = 2;
  const std::vector<int32_t> positions = {513, 0, 9, 513};
  const int64_t n = int64_t(positions.size());
  const size_t width = size_t(kHeads * p.head_dim);
  std::mt19937 rng(77);
  const std::vector<float> x0 =
      naive::RandomFloats(n * int64_t(width), -2, 2, rng);
  std::vector<float> batch = x0;
  Rope(batch.data(), n, kHeads, positions.data(), p, CpuExec{2});
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> one(x0.begin() + t * int64_t(width),
                           x0.begin() + (t + 1) * int64_t(width));
    Rope(one.data(), 1, kHeads, &positions[size_t(t)], p, CpuExec{1});
    ASSERT_EQ(0, std::memcmp(one.data(), batch.data() + t * int64_t(width),
                             width * 4))
        << "token " << t;
  }
  // cos 0 = 1, sin 0 = 0: position 0 is left exactly as it was.
  ASSERT_EQ(0, std::memcmp(x0.data() + width, batch.data() + width, width * 4));
}

INSTANTIATE_TEST_SUITE_P(
    Grid, RopeTest,
    ::testing::Values(std::make_tuple(RopeMode::kNormal, 64, 64, 1.0f),
                      std::make_tuple(RopeMode::kNeox, 64, 64, 1.0f),
                      std::make_tuple(RopeMode::kNormal, 128, 128, 0.25f),
                      std::make_tuple(RopeMode::kNeox, 128, 128, 1.0f),
                      std::make_tuple(RopeMode::kNormal, 128, 64, 1.0f),
                      std::make_tuple(RopeMode::kNeox, 80, 32, 0.5f)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) == RopeMode::kNormal
                             ? "normal"
                             : "neox") +
             "_hd" + std::to_string(std::get<1>(info.param)) + "_rot" +
             std::to_string(std::get<2>(info.param)) + "_scale" +
             std::to_string(int(std::get<3>(info.param) * 100));
    });

// Hand-checked pairing: one head of 4 dims, position 1, base 1 (every theta
// is exactly 1 rad): normal rotates (x0, x1) and (x2, x3); neox rotates
// (x0, x2) and (x1, x3).
TEST(RopeTest, PairingByMode) {
  RopeParams p;
  p.head_dim = 4;
  p.rot_dim = 4;
  p.freq_base = 1.0f;
  const int32_t pos = 1;
  const double c = std::cos(1.0), s = std::sin(1.0);
  std::vector<float> x = {1, 0, 0, 1};
  p.mode = RopeMode::kNormal;
  Rope(x.data(), 1, 1, &pos, p, CpuExec{1});
  EXPECT_NEAR(c, x[0], 1e-6);
  EXPECT_NEAR(s, x[1], 1e-6);
  EXPECT_NEAR(-s, x[2], 1e-6);
  EXPECT_NEAR(c, x[3], 1e-6);
  x = {1, 0, 0, 1};
  p.mode = RopeMode::kNeox;
  Rope(x.data(), 1, 1, &pos, p, CpuExec{1});
  EXPECT_NEAR(c, x[0], 1e-6);
  EXPECT_NEAR(-s, x[1], 1e-6);
  EXPECT_NEAR(s, x[2], 1e-6);
  EXPECT_NEAR(c, x[3], 1e-6);
}

}  // namespace
}  // namespace kvsession::kernels
