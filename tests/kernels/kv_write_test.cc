#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

constexpr uint16_t kUntouched = 0x7E01;  // a NaN no f32 input converts to

// (n_kv_heads, head_dim, block_size, threads)
class KvWriteTest
    : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(KvWriteTest, StoresHalvesAtTheirSlots) {
  const auto [n_kv, hd, bs, threads] = GetParam();
  KvCacheView kv;
  kv.num_blocks = 9;
  kv.block_size = bs;
  kv.n_layers = 3;
  kv.n_kv_heads = n_kv;
  kv.head_dim = hd;
  std::vector<uint16_t> arena(size_t(kv.num_blocks * kv.BlockElems()),
                              kUntouched);
  kv.base = arena.data();
  // Two sequences with shuffled tables; tokens at scattered positions.
  const std::vector<int32_t> table_a = {7, 2, 5};
  const std::vector<int32_t> table_b = {0, 8};
  const std::vector<int32_t> positions = {0, bs - 1, bs, 2 * bs + 3, 1, bs + 2};
  const std::vector<const int32_t*> tables = {table_a.data(), table_a.data(),
                                              table_a.data(), table_a.data(),
                                              table_b.data(), table_b.data()};
  const TokenPlacement placement{int32_t(positions.size()), positions.data(),
                                 tables.data()};
  std::mt19937 rng(uint32_t(n_kv * hd + bs));
  const int64_t row = int64_t(n_kv) * hd;
  const std::vector<float> k =
      naive::RandomFloats(int64_t(positions.size()) * row, -4, 4, rng);
  const std::vector<float> v =
      naive::RandomFloats(int64_t(positions.size()) * row, -4, 4, rng);
  constexpr int32_t kLayer = 1;
  KvWrite(kv, kLayer, placement, k.data(), v.data(), CpuExec{threads});

  // Element offset written out from the layout [block][layer][k|v][head]
  // [slot][head_dim], independently of KvCacheView::Offset.
  auto offset = [&](int64_t block, int64_t kvsel, int64_t h, int64_t slot) {
    const int64_t block_elems = int64_t(kv.n_layers) * 2 * n_kv * bs * hd;
    const int64_t per_layer = 2 * int64_t(n_kv) * bs * hd;
    const int64_t per_kv = int64_t(n_kv) * bs * hd;
    return block * block_elems + kLayer * per_layer + kvsel * per_kv +
           h * bs * hd + slot * hd;
  };
  std::vector<bool> written(arena.size(), false);
  for (size_t t = 0; t < positions.size(); ++t) {
    const int32_t pos = positions[t];
    const int32_t block = tables[t][pos / bs];
    for (int h = 0; h < n_kv; ++h) {
      for (int d = 0; d < hd; ++d) {
        const int64_t ko = offset(block, 0, h, pos % bs) + d;
        const int64_t vo = offset(block, 1, h, pos % bs) + d;
        ASSERT_EQ(naive::FloatToHalf(k[t * row + h * hd + d]), arena[ko])
            << "token " << t << " head " << h << " dim " << d;
        ASSERT_EQ(naive::FloatToHalf(v[t * row + h * hd + d]), arena[vo])
            << "token " << t << " head " << h << " dim " << d;
        written[ko] = written[vo] = true;
      }
    }
  }
  for (size_t i = 0; i < arena.size(); ++i) {
    if (!written[i]) {
      ASSERT_EQ(kUntouched, arena[i]) << "stray write at " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, KvWriteTest,
    ::testing::Combine(::testing::Values(1, 3), ::testing::Values(64, 36),
                       ::testing::Values(16, 32), ::testing::Values(1, 2)),
    [](const auto& info) {
      return "kv" + std::to_string(std::get<0>(info.param)) + "_hd" +
             std::to_string(std::get<1>(info.param)) + "_bs" +
             std::to_string(std::get<2>(info.param)) + "_th" +
             std::to_string(std::get<3>(info.param));
    });

}  // namespace
}  // namespace kvsession::kernels
