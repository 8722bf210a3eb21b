// LaunchRope against the CPU Rope over head sizes, partial rotation, both
// pair layouts, two frequency bases and positions up to 32768; a token's
// rotation is independent of the batch it is in; and LaunchRopeKvWrite
// gives the bits of LaunchRope on q and k followed by LaunchKvWrite.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;
using ::kvsession::testing::ToleranceRatio;

// Tolerance against the CPU: theta is the same f32 product chain on both,
// but the CPU's cosf/sinf (glibc, not correctly rounded in ~0.1% of
// arguments) and the device's double cos/sin rounded to f32 may differ by
// 1 ulp, which moves an output by ~|x| * 6e-8 (|x| <= 2 here). 1e-5
// absolute plus 1e-5 relative is far above that and far below any indexing
// or angle error (a wrong pair or a wrong power of theta_scale moves values
// by O(1)).
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-5;

struct RopeCase {
  int head_dim;
  int rot_dim;
  RopeMode mode;
  float freq_base;  // 0: both 1e4 and 5e5, one after the other
  float freq_scale;
  int n_heads;
  int n_tokens;
};

std::string CaseName(const RopeCase& c) {
  const std::string base =
      c.freq_base == 0.0f
          ? std::string("_bases")
          : absl::StrCat("_base", static_cast<int64_t>(c.freq_base));
  return absl::StrCat("hd", c.head_dim, "_rot", c.rot_dim,
                      c.mode == RopeMode::kNeox ? "_neox" : "_normal", base,
                      "_fs", static_cast<int>(c.freq_scale * 100), "_h",
                      c.n_heads, "_t", c.n_tokens);
}

std::vector<RopeCase> Cases() {
  std::vector<RopeCase> cases;
  for (const int hd : {64, 128}) {
    for (const int rot : {hd, hd / 2}) {
      for (const RopeMode mode : {RopeMode::kNormal, RopeMode::kNeox}) {
        cases.push_back({hd, rot, mode, 0.0f, 1.0f, 4, 64});
      }
    }
  }
  // Odd head count and a large batch; linear position scaling.
  cases.push_back({64, 64, RopeMode::kNormal, 10000.0f, 1.0f, 9, 3000});
  cases.push_back({128, 128, RopeMode::kNeox, 500000.0f, 0.25f, 3, 200});
  cases.push_back({128, 96, RopeMode::kNormal, 10000.0f, 0.5f, 1, 1});
  return cases;
}

// Positions: 0, 1, 32768 and random values in between.
std::vector<int32_t> MakePositions(int n, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> p(0, 32768);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int32_t& v : pos) v = p(rng);
  pos[0] = n > 1 ? 32768 : 4097;
  if (n > 1) pos[1] = 0;
  if (n > 2) pos[2] = 1;
  return pos;
}

class RopeGpuTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeGpuTest, MatchesCpu) {
  KVS_REQUIRE_GPU();
  const RopeCase& c = GetParam();
  std::vector<float> bases = {c.freq_base};
  if (c.freq_base == 0.0f) bases = {10000.0f, 500000.0f};
  for (const float base : bases) {
    SCOPED_TRACE(absl::StrCat(CaseName(c), " freq_base ", base));
    const RopeParams params{c.head_dim, c.rot_dim, base, c.freq_scale, c.mode};
    std::mt19937 rng(
        static_cast<uint32_t>(c.head_dim * 31 + c.rot_dim + c.n_tokens));
    const std::vector<int32_t> pos = MakePositions(c.n_tokens, rng);
    const int64_t row = int64_t{c.n_heads} * c.head_dim;
    std::vector<float> x(static_cast<size_t>(c.n_tokens * row));
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (float& v : x) v = u(rng);

    std::vector<float> want = x;
    Rope(want.data(), c.n_tokens, c.n_heads, pos.data(), params, CpuExec{4});

    const DeviceBuffer d_x = ToDevice(x);
    const DeviceBuffer d_pos = ToDevice(pos);
    LaunchRope(d_x.as<float>(), c.n_tokens, c.n_heads, d_pos.as<int32_t>(),
               params, nullptr);
    const std::vector<float> got = ToHost<float>(d_x, x.size());
    std::string where;
    const double ratio = ToleranceRatio(got, want, kAtol, kRtol, &where);
    EXPECT_LE(ratio, 1.0) << "worst at " << where << " (token = index / " << row
                          << ", head_dim " << c.head_dim << ")";
    // Dimensions past rot_dim pass through untouched.
    for (int64_t t = 0; t < c.n_tokens; ++t) {
      for (int h = 0; h < c.n_heads; ++h) {
        for (int d = c.rot_dim; d < c.head_dim; ++d) {
          const size_t i = size_t(t * row + h * c.head_dim + d);
          ASSERT_EQ(0, std::memcmp(&got[i], &x[i], 4))
              << "token " << t << " head " << h << " dim " << d;
        }
      }
    }
    int64_t diffs = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      diffs += std::memcmp(&got[i], &want[i], 4) != 0;
    }
    std::cout << "[rope " << CaseName(c) << " base " << base << "] " << diffs
              << " of " << got.size()
              << " elements not bitwise equal to the CPU\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeGpuTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<RopeCase>& info) {
                           return CaseName(info.param);
                         });

// The same token (position and values) rotated alone and inside a batch of
// 500 others gives the same bits.
TEST(RopeGpuInvarianceTest, TokenBitsIndependentOfBatch) {
  KVS_REQUIRE_GPU();
  const RopeParams params{128, 128, 500000.0f, 1.0f, RopeMode::kNeox};
  constexpr int kHeads = 8, kTokens = 500;
  constexpr int64_t kRow = int64_t{kHeads} * 128;
  std::mt19937 rng(3);
  const std::vector<int32_t> pos = MakePositions(kTokens, rng);
  std::vector<float> x(size_t(kTokens * kRow));
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (float& v : x) v = u(rng);
  const DeviceBuffer d_batch = ToDevice(x);
  const DeviceBuffer d_pos = ToDevice(pos);
  LaunchRope(d_batch.as<float>(), kTokens, kHeads, d_pos.as<int32_t>(), params,
             nullptr);
  const std::vector<float> batch = ToHost<float>(d_batch, x.size());
  for (const int t : {0, 1, 2, 77, kTokens - 1}) {
    const std::vector<float> xt(x.begin() + t * kRow,
                                x.begin() + (t + 1) * kRow);
    const DeviceBuffer d_one = ToDevice(xt);
    const DeviceBuffer d_one_pos = ToDevice(std::vector<int32_t>{pos[t]});
    LaunchRope(d_one.as<float>(), 1, kHeads, d_one_pos.as<int32_t>(), params,
               nullptr);
    const std::vector<float> one = ToHost<float>(d_one, xt.size());
    EXPECT_EQ(0, std::memcmp(one.data(), batch.data() + t * kRow,
                             kRow * sizeof(float)))
        << "token " << t << " position " << pos[t];
  }
}

TEST(RopeKvWriteGpuTest, BitwiseEqualsRopeThenKvWrite) {
  KVS_REQUIRE_GPU();
  struct Shape {
    int32_t head_dim, rot_dim, n_heads, n_kv_heads;
    RopeMode mode;
  };
  for (const Shape& sh : {Shape{64, 64, 9, 3, RopeMode::kNormal},
                          Shape{128, 128, 32, 8, RopeMode::kNormal},
                          Shape{128, 64, 8, 2, RopeMode::kNeox}}) {
    for (const int32_t n : {1, 70}) {
      SCOPED_TRACE(::testing::Message()
                   << "head_dim " << sh.head_dim << " rot " << sh.rot_dim
                   << " heads " << sh.n_heads << "/" << sh.n_kv_heads
                   << " tokens " << n);
      RopeParams rp;
      rp.head_dim = sh.head_dim;
      rp.rot_dim = sh.rot_dim;
      rp.freq_base = 500000.0f;
      rp.mode = sh.mode;
      KvCacheView kv;
      kv.block_size = 16;
      kv.n_layers = 2;
      kv.n_kv_heads = sh.n_kv_heads;
      kv.head_dim = sh.head_dim;
      kv.num_blocks = 8;  // 128 slots
      // Distinct slots: positions 3 + 7i (mod 128) of one sequence whose
      // blocks are shuffled.
      std::vector<int32_t> positions(n), table = {5, 2, 7, 0, 3, 6, 1, 4};
      for (int32_t i = 0; i < n; ++i) positions[i] = (3 + 7 * i) % 128;
      const DeviceBuffer d_pos = ToDevice(positions);
      const DeviceBuffer d_table = ToDevice(table);
      const DeviceBuffer d_tables = ToDevice(
          std::vector<const int32_t*>(n, d_table.as<int32_t>()));
      const TokenPlacement pl{n, d_pos.as<int32_t>(),
                              d_tables.as<const int32_t* const>()};
      std::mt19937 rng(static_cast<uint32_t>(sh.head_dim + n));
      std::uniform_real_distribution<float> u(-2.0f, 2.0f);
      auto random = [&](int64_t count) {
        std::vector<float> v(static_cast<size_t>(count));
        for (float& x : v) x = u(rng);
        return v;
      };
      const std::vector<float> q =
          random(int64_t{n} * sh.n_heads * sh.head_dim);
      const std::vector<float> k =
          random(int64_t{n} * sh.n_kv_heads * sh.head_dim);
      const std::vector<float> v =
          random(int64_t{n} * sh.n_kv_heads * sh.head_dim);
      const size_t arena =
          static_cast<size_t>(kv.num_blocks * kv.BlockElems());
      struct Run {
        DeviceBuffer q, k, v, arena;
      };
      Run runs[2] = {{ToDevice(q), ToDevice(k), ToDevice(v),
                      ToDevice(std::vector<uint16_t>(arena, 0x7e00))},
                     {ToDevice(q), ToDevice(k), ToDevice(v),
                      ToDevice(std::vector<uint16_t>(arena, 0x7e00))}};
      for (int fused = 0; fused < 2; ++fused) {
        Run& r = runs[fused];
        KvCacheView dkv = kv;
        dkv.base = r.arena.as<uint16_t>();
        if (fused == 1) {
          LaunchRopeKvWrite(r.q.as<float>(), sh.n_heads, r.k.as<float>(),
                            r.v.as<float>(), rp, dkv, 1, pl, nullptr);
        } else {
          LaunchRope(r.q.as<float>(), n, sh.n_heads, pl.positions, rp, nullptr);
          LaunchRope(r.k.as<float>(), n, sh.n_kv_heads, pl.positions, rp,
                     nullptr);
          LaunchKvWrite(dkv, 1, pl, r.k.as<float>(), r.v.as<float>(), nullptr);
        }
      }
      EXPECT_EQ(ToHost<uint16_t>(runs[0].arena, arena),
                ToHost<uint16_t>(runs[1].arena, arena));
      const std::vector<float> q0 = ToHost<float>(runs[0].q, q.size());
      const std::vector<float> q1 = ToHost<float>(runs[1].q, q.size());
      EXPECT_EQ(0, std::memcmp(q0.data(), q1.data(), q.size() * 4));
      const std::vector<float> k0 = ToHost<float>(runs[0].k, k.size());
      const std::vector<float> k1 = ToHost<float>(runs[1].k, k.size());
      EXPECT_EQ(0, std::memcmp(k0.data(), k1.data(), k.size() * 4));
    }
  }
}

}  // namespace
}  // namespace kvsession::kernels::cuda
