#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

// A paged cache filled with random f16 in [-1, 1] and three sequences whose
// block tables are disjoint, shuffled (non-contiguous, out of order) picks
// from the arena.
struct Fixture {
  std::vector<uint16_t> arena;
  KvCacheView kv;
  std::vector<std::vector<int32_t>> tables;  // per sequence
  std::vector<int32_t> lengths;              // positions held per sequence

  Fixture(int32_t n_kv_heads, int32_t head_dim, int32_t block_size,
          std::vector<int32_t> seq_lengths, uint32_t seed)
      : lengths(std::move(seq_lengths)) {
    std::mt19937 rng(seed);
    int32_t blocks_needed = 0;
    for (int32_t len : lengths)
      blocks_needed += (len + block_size - 1) / block_size;
    kv.num_blocks = blocks_needed + 5;  // some blocks belong to nobody
    kv.block_size = block_size;
    kv.n_layers = 2;
    kv.n_kv_heads = n_kv_heads;
    kv.head_dim = head_dim;
    arena.resize(size_t(kv.num_blocks * kv.BlockElems()));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (uint16_t& h : arena) h = naive::FloatToHalf(u(rng));
    kv.base = arena.data();
    std::vector<int32_t> ids(size_t(kv.num_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    size_t next = 0;
    for (int32_t len : lengths) {
      std::vector<int32_t> t;
      for (int32_t i = 0; i < (len + block_size - 1) / block_size; ++i) {
        t.push_back(ids[next++]);
      }
      tables.push_back(std::move(t));
    }
  }
};

// One query token: (sequence, position).
struct Query {
  int seq;
  int32_t pos;
};

struct Batch {
  std::vector<int32_t> positions;
  std::vector<const int32_t*> tables;
  TokenPlacement placement() const {
    return {int32_t(positions.size()), positions.data(), tables.data()};
  }
};

Batch MakeBatch(const Fixture& f, const std::vector<Query>& qs) {
  Batch b;
  for (const Query& q : qs) {
    b.positions.push_back(q.pos);
    b.tables.push_back(f.tables[size_t(q.seq)].data());
  }
  return b;
}

std::vector<float> RunAttention(const Fixture& f, const Batch& b,
                                const float* q, int32_t n_heads, int threads,
                                int32_t layer = 1) {
  std::vector<float> out(b.positions.size() * size_t(n_heads * f.kv.head_dim),
                         NAN);
  const AttentionParams params{n_heads, 1.0f / std::sqrt(float(f.kv.head_dim))};
  Attention(f.kv, layer, b.placement(), q, params, out.data(),
            CpuExec{threads});
  return out;
}

// (GQA ratio n_heads / n_kv_heads, head_dim, block_size)
class AttentionTest
    : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(AttentionTest, MatchesNaiveReference) {
  const auto [ratio, head_dim, block_size] = GetParam();
  constexpr int32_t kKvHeads = 2;
  const int32_t n_heads = kKvHeads * ratio;
  // Lengths deliberately not multiples of the block size.
  Fixture f(kKvHeads, head_dim, block_size, {1, 37, 70},
            uint32_t(ratio * 1000 + head_dim + block_size));
  const std::vector<Query> qs = {{0, 0},  {1, 36}, {2, 69}, {1, 0},  {2, 15},
                                 {2, 16}, {1, 17}, {2, 31}, {2, 32}, {2, 33}};
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(9);
  const std::vector<float> q =
      naive::RandomFloats(int64_t(qs.size()) * n_heads * head_dim, -1, 1, rng);
  const std::vector<float> got = RunAttention(f, b, q.data(), n_heads, 2);
  const std::vector<double> want =
      naive::Attention(f.kv, 1, b.placement(), q.data(), n_heads,
                       1.0f / std::sqrt(float(head_dim)));
  // Scores carry f32 dot rounding, at most (head_dim / 8 + 3) * 2^-24 *
  // sum|q k| * scale ~ 1.3e-5 for head_dim 128 with |q|, |k| <= 1; softmax
  // turns a score error e into output error <= 2e (|v| <= 1); exp is 1-2 ulp
  // and the V sum adds ~ length * 2^-24. 5e-5 covers all of it, while a
  // wrong position, block or head moves outputs by ~1/length >= 1e-2.
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(want[i], got[i], 5e-5) << "element " << i;
  }
}

// A token's output is bitwise the same alone, in a batch with other
// sequences' tokens (in any order) and with 1 or 2 threads.
TEST_P(AttentionTest, BatchInvariant) {
  const auto [ratio, head_dim, block_size] = GetParam();
  constexpr int32_t kKvHeads = 2;
  const int32_t n_heads = kKvHeads * ratio;
  Fixture f(kKvHeads, head_dim, block_size, {5, 37, 70}, 17);
  const std::vector<Query> qs = {{2, 69}, {0, 4}, {1, 36}, {2, 40},
                                 {1, 10}, {2, 0}, {0, 0}};
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(23);
  const size_t width = size_t(n_heads * head_dim);
  const std::vector<float> q =
      naive::RandomFloats(int64_t(qs.size() * width), -1, 1, rng);
  const std::vector<float> batch2 = RunAttention(f, b, q.data(), n_heads, 2);
  const std::vector<float> batch1 = RunAttention(f, b, q.data(), n_heads, 1);
  ASSERT_EQ(0, std::memcmp(batch1.data(), batch2.data(), batch1.size() * 4));
  for (size_t t = 0; t < qs.size(); ++t) {
    const Batch one = MakeBatch(f, {qs[t]});
    const std::vector<float> alone =
        RunAttention(f, one, q.data() + t * width, n_heads, 1);
    ASSERT_EQ(0,
              std::memcmp(alone.data(), batch2.data() + t * width, width * 4))
        << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, AttentionTest,
    ::testing::Combine(::testing::Values(1, 3, 4), ::testing::Values(64, 128),
                       ::testing::Values(16, 32)),
    [](const auto& info) {
      return "gqa" + std::to_string(std::get<0>(info.param)) + "_hd" +
             std::to_string(std::get<1>(info.param)) + "_bs" +
             std::to_string(std::get<2>(info.param));
    });

// Position 0 attends to itself only: the output is exactly its V row.
TEST(AttentionTest, FirstPositionReturnsItsValue) {
  Fixture f(1, 64, 16, {1}, 3);
  const Batch b = MakeBatch(f, {{0, 0}});
  std::vector<float> q(2 * 64, 0.5f);
  const std::vector<float> out = RunAttention(f, b, q.data(), 2, 1, 0);
  const uint16_t* v = f.kv.base + f.kv.Offset(f.tables[0][0], 0, 1, 0, 0);
  for (int h = 0; h < 2; ++h) {
    for (int d = 0; d < 64; ++d) {
      ASSERT_EQ(naive::HalfToFloat(v[d]), out[size_t(h * 64 + d)]);
    }
  }
}

}  // namespace
}  // namespace kvsession::kernels
