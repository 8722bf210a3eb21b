// LaunchKvWrite against the CPU KvWrite: the whole arena must come out
// bitwise equal (so the written slots hold the same f16 bits and every
// other element keeps its old value).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.h"
#include "kernels/f16.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;

constexpr int32_t kLayers = 3;
constexpr int32_t kSeqLength = 200;  // positions per sequence
constexpr int32_t kSequences = 4;

// f32 inputs that exercise the conversion: ordinary values, a wide range of
// exponents (f16 subnormals, underflow to zero, overflow to inf), exact
// ties between two f16 values, zeros and infinities. No NaN: payload
// conventions differ between F16C and the device conversion, and K/V never
// hold NaN in a working model.
float InterestingFloat(std::mt19937& rng) {
  std::uniform_int_distribution<int> kind(0, 9);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  switch (kind(rng)) {
    case 0: {
      std::uniform_int_distribution<int> e(-30, 17);
      std::uniform_real_distribution<float> m(1.0f, 2.0f);
      const float x = std::ldexp(m(rng), e(rng));
      return rng() % 2 ? x : -x;
    }
    case 1: {
      // Midpoint of two adjacent finite f16 values, exact in f32.
      std::uniform_int_distribution<uint32_t> h(0, 0x7bfe);
      const uint16_t a = static_cast<uint16_t>(h(rng));
      const float x =
          0.5f * (HalfToFloat(a) + HalfToFloat(static_cast<uint16_t>(a + 1)));
      return rng() % 2 ? x : -x;
    }
    case 2: {
      const float specials[] = {0.0f,
                                -0.0f,
                                std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity(),
                                65504.0f,
                                65519.99f,
                                65520.0f,
                                6.0e-8f};
      return specials[rng() % 8];
    }
    default:
      return u(rng);
  }
}

// (head_dim, n_kv_heads, block_size)
class KvWriteGpuTest
    : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(KvWriteGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  const auto [head_dim, n_kv_heads, block_size] = GetParam();
  for (const int32_t n_tokens : {1, 7, 64}) {
    SCOPED_TRACE(absl::StrCat("head_dim ", head_dim, " n_kv_heads ", n_kv_heads,
                              " block_size ", block_size, " n_tokens ",
                              n_tokens));
    std::mt19937 rng(static_cast<uint32_t>(head_dim * 1000 + n_kv_heads * 100 +
                                           block_size + n_tokens));
    const int32_t blocks_per_seq = (kSeqLength + block_size - 1) / block_size;
    KvCacheView kv;
    kv.num_blocks = kSequences * blocks_per_seq + 5;  // some blocks unused
    kv.block_size = block_size;
    kv.n_layers = kLayers;
    kv.n_kv_heads = n_kv_heads;
    kv.head_dim = head_dim;
    const size_t arena_elems =
        static_cast<size_t>(kv.num_blocks * kv.BlockElems());

    // Old arena contents: random bits, so any stray write shows.
    std::vector<uint16_t> initial(arena_elems);
    for (uint16_t& x : initial) x = static_cast<uint16_t>(rng());

    // Disjoint, shuffled block tables (no two tokens share a slot).
    std::vector<int32_t> ids(static_cast<size_t>(kv.num_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<int32_t> tables(ids.begin(),
                                ids.begin() + kSequences * blocks_per_seq);

    // Distinct (sequence, position) pairs in random order.
    std::vector<int32_t> slots(kSequences * kSeqLength);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    std::vector<int32_t> positions(static_cast<size_t>(n_tokens));
    std::vector<int32_t> seq_of(static_cast<size_t>(n_tokens));
    for (int32_t t = 0; t < n_tokens; ++t) {
      seq_of[t] = slots[t] / kSeqLength;
      positions[t] = slots[t] % kSeqLength;
    }

    const int64_t row = int64_t{n_kv_heads} * head_dim;
    std::vector<float> k(static_cast<size_t>(n_tokens * row));
    std::vector<float> v(k.size());
    for (float& x : k) x = InterestingFloat(rng);
    for (float& x : v) x = InterestingFloat(rng);

    // CPU reference on a host copy.
    std::vector<uint16_t> want = initial;
    std::vector<const int32_t*> host_tables(static_cast<size_t>(n_tokens));
    for (int32_t t = 0; t < n_tokens; ++t) {
      host_tables[t] = tables.data() + seq_of[t] * blocks_per_seq;
    }
    KvCacheView kv_host = kv;
    kv_host.base = want.data();
    KvWrite(kv_host, 1, {n_tokens, positions.data(), host_tables.data()},
            k.data(), v.data(), CpuExec{4});

    // Device.
    DeviceBuffer d_arena = ToDevice(initial);
    DeviceBuffer d_tables = ToDevice(tables);
    std::vector<const int32_t*> dev_tables(static_cast<size_t>(n_tokens));
    for (int32_t t = 0; t < n_tokens; ++t) {
      dev_tables[t] = d_tables.as<int32_t>() + seq_of[t] * blocks_per_seq;
    }
    DeviceBuffer d_table_ptrs = ToDevice(dev_tables);
    DeviceBuffer d_positions = ToDevice(positions);
    DeviceBuffer d_k = ToDevice(k);
    DeviceBuffer d_v = ToDevice(v);
    KvCacheView kv_dev = kv;
    kv_dev.base = d_arena.as<uint16_t>();
    LaunchKvWrite(kv_dev, 1,
                  {n_tokens, d_positions.as<int32_t>(),
                   d_table_ptrs.as<const int32_t* const>()},
                  d_k.as<float>(), d_v.as<float>(), nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<uint16_t> got = ToHost<uint16_t>(d_arena, arena_elems);

    // Rows the op may write; everything else must keep its old bits.
    std::vector<bool> written(arena_elems, false);
    for (int32_t t = 0; t < n_tokens; ++t) {
      const int32_t block = host_tables[t][positions[t] / block_size];
      for (int32_t which = 0; which < 2; ++which) {
        for (int32_t h = 0; h < n_kv_heads; ++h) {
          const int64_t off =
              kv.Offset(block, 1, which, h, positions[t] % block_size);
          std::fill(written.begin() + off, written.begin() + off + head_dim,
                    true);
        }
      }
    }
    int64_t mismatches = 0;
    int64_t stray = 0;
    std::string first;
    for (size_t i = 0; i < arena_elems; ++i) {
      if (!written[i] && got[i] != initial[i]) ++stray;
      if (got[i] == want[i]) continue;
      if (mismatches++ == 0) {
        const int64_t be = kv.BlockElems();
        const int64_t in_block = static_cast<int64_t>(i) % be;
        const int64_t rows_per_head = int64_t{block_size} * head_dim;
        const int64_t head_row = in_block / rows_per_head;  // (l*2+kv)*H+h
        first = absl::StrCat(
            "element ", i, " (block ", static_cast<int64_t>(i) / be, " layer ",
            head_row / (2 * n_kv_heads), " kv ", (head_row / n_kv_heads) % 2,
            " head ", head_row % n_kv_heads, " slot ",
            (in_block % rows_per_head) / head_dim, " d ", in_block % head_dim,
            "): got 0x", absl::Hex(got[i]), " want 0x", absl::Hex(want[i]),
            " initial 0x", absl::Hex(initial[i]));
      }
    }
    EXPECT_EQ(mismatches, 0) << "first mismatch: " << first;
    EXPECT_EQ(stray, 0) << "elements outside the written rows changed";
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, KvWriteGpuTest,
                         ::testing::Combine(::testing::Values(64, 128),
                                            ::testing::Values(1, 2, 8),
                                            ::testing::Values(16, 32)),
                         [](const auto& info) {
                           return absl::StrCat("hd", std::get<0>(info.param),
                                               "_kv", std::get<1>(info.param),
                                               "_bs", std::get<2>(info.param));
                         });

// An empty batch launches nothing and touches nothing.
TEST(KvWriteGpuEdgeTest, EmptyBatchIsNoOp) {
  KVS_REQUIRE_GPU();
  KvCacheView kv;
  kv.num_blocks = 1;
  kv.block_size = 16;
  kv.n_layers = 1;
  kv.n_kv_heads = 1;
  kv.head_dim = 64;
  const std::vector<uint16_t> initial(static_cast<size_t>(kv.BlockElems()),
                                      0x1234);
  DeviceBuffer d_arena = ToDevice(initial);
  kv.base = d_arena.as<uint16_t>();
  LaunchKvWrite(kv, 0, {0, nullptr, nullptr}, nullptr, nullptr, nullptr);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(ToHost<uint16_t>(d_arena, initial.size()), initial);
}

}  // namespace
}  // namespace kvsession::kernels::cuda
