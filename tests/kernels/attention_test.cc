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
#include "kernels/cpu/simd.h"
#include "kernels/f16.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

// The attention kernel as it was before queries and heads were tiled, one
// (token, head) pair at a time. Its bits are the contract: a token's output
// must not change with the kernel's tiling, so the tiled kernel is compared
// to this one with memcmp.
namespace previous {

void ExpShifted(float* s, int64_t n, float mx) {
  int64_t j = 0;
#if KVS_CPU_AVX2
  const __m256 vmx = _mm256_set1_ps(mx);
  for (; j + simd::kLanes <= n; j += simd::kLanes) {
    _mm256_storeu_ps(s + j,
                     simd::Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmx)));
  }
#endif
  for (; j < n; ++j) s[j] = simd::ExpScalar(s[j] - mx);
}

void AccumulateV(const float* p, const uint16_t* v, int64_t m, int64_t hd,
                 float* out) {
  int64_t d0 = 0;
#if KVS_CPU_AVX2
  constexpr int kRegs = 8;
  for (; d0 + kRegs * simd::kLanes <= hd; d0 += kRegs * simd::kLanes) {
    __m256 acc[kRegs];
    for (int i = 0; i < kRegs; ++i) {
      acc[i] = _mm256_loadu_ps(out + d0 + i * simd::kLanes);
    }
    for (int64_t j = 0; j < m; ++j) {
      const __m256 w = _mm256_set1_ps(p[j]);
      const uint16_t* vj = v + j * hd + d0;
      for (int i = 0; i < kRegs; ++i) {
        acc[i] =
            _mm256_fmadd_ps(w, simd::LoadF16x8(vj + i * simd::kLanes), acc[i]);
      }
    }
    for (int i = 0; i < kRegs; ++i) {
      _mm256_storeu_ps(out + d0 + i * simd::kLanes, acc[i]);
    }
  }
  for (; d0 + simd::kLanes <= hd; d0 += simd::kLanes) {
    __m256 acc = _mm256_loadu_ps(out + d0);
    for (int64_t j = 0; j < m; ++j) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]),
                            simd::LoadF16x8(v + j * hd + d0), acc);
    }
    _mm256_storeu_ps(out + d0, acc);
  }
#endif
  for (; d0 < hd; ++d0) {
    float acc = out[d0];
    for (int64_t j = 0; j < m; ++j) {
      acc = std::fma(p[j], HalfToFloat(v[j * hd + d0]), acc);
    }
    out[d0] = acc;
  }
}

float RoundToHalf(float x) { return HalfToFloat(FloatToHalf(x)); }

void AttendOne(const KvCacheView& kv, int32_t layer, int32_t kv_head,
               int32_t pos, const int32_t* table, const float* q_in,
               float scale, float* q, float* scores, float* out) {
  const int32_t hd = kv.head_dim;
  for (int32_t i = 0; i < hd; ++i) q[i] = RoundToHalf(q_in[i]);
  const int32_t bs = kv.block_size;
  const int64_t n = int64_t{pos} + 1;
  for (int64_t j0 = 0; j0 < n; j0 += bs) {
    const int32_t block = table[j0 / bs];
    const uint16_t* k = kv.base + kv.Offset(block, layer, 0, kv_head, 0);
    const int64_t m = std::min<int64_t>(bs, n - j0);
    float* s = scores + j0;
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) simd::DotF32F16x4(q, k + i * hd, hd, hd, s + i);
    for (; i < m; ++i) s[i] = simd::DotF32F16(q, k + i * hd, hd);
    for (i = 0; i < m; ++i) s[i] = s[i] * scale;
  }
  float mx = scores[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, scores[j]);
  ExpShifted(scores, n, mx);
  const float inv = 1.0f / simd::SumF32(scores, n);
  for (int64_t j = 0; j < n; ++j) scores[j] = RoundToHalf(scores[j] * inv);
  std::fill(out, out + hd, 0.0f);
  for (int64_t j0 = 0; j0 < n; j0 += bs) {
    const uint16_t* v =
        kv.base + kv.Offset(table[j0 / bs], layer, 1, kv_head, 0);
    AccumulateV(scores + j0, v, std::min<int64_t>(bs, n - j0), hd, out);
  }
}

std::vector<float> Attention(const KvCacheView& kv, int32_t layer,
                             const TokenPlacement& placement, const float* q,
                             int32_t n_heads, float scale) {
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t hd = kv.head_dim;
  std::vector<float> out(size_t(placement.n_tokens) * n_heads * hd);
  std::vector<float> q_half(static_cast<size_t>(hd));
  std::vector<float> scores;
  for (int32_t t = 0; t < placement.n_tokens; ++t) {
    const int32_t pos = placement.positions[t];
    scores.resize(size_t(pos) + 1);
    for (int32_t h = 0; h < n_heads; ++h) {
      const int64_t off = (int64_t{t} * n_heads + h) * hd;
      AttendOne(kv, layer, h / group, pos, placement.block_tables[t], q + off,
                scale, q_half.data(), scores.data(), out.data() + off);
    }
  }
  return out;
}

}  // namespace previous

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
                                int32_t layer = 1, int32_t window = 0) {
  std::vector<float> out(b.positions.size() * size_t(n_heads * f.kv.head_dim),
                         NAN);
  const AttentionParams params{n_heads, 1.0f / std::sqrt(float(f.kv.head_dim)),
                               window};
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

// Queries of every context length 1..1100 (one sequence prefilled in chunks
// of uneven size), other sequences' prefill chunks and single decode tokens
// interleaved between them, and a run of one sequence's tokens whose
// positions are not consecutive: every output is the previous kernel's, bit
// for bit, with 1 and 2 threads.
TEST_P(AttentionTest, BitwiseEqualsPreviousKernel) {
  const auto [ratio, head_dim, block_size] = GetParam();
  constexpr int32_t kKvHeads = 2;
  const int32_t n_heads = kKvHeads * ratio;
  Fixture f(kKvHeads, head_dim, block_size, {1100, 1, 37, 517, 64},
            uint32_t(ratio * 77 + head_dim + block_size));
  std::vector<Query> qs;
  auto chunk = [&qs](int seq, int32_t first, int32_t last) {
    for (int32_t p = first; p <= last; ++p) qs.push_back({seq, p});
  };
  chunk(0, 0, 298);
  qs.push_back({1, 0});
  chunk(0, 299, 700);
  chunk(2, 0, 36);
  qs.push_back({3, 516});
  chunk(0, 701, 703);
  chunk(4, 40, 63);
  chunk(0, 704, 1099);
  chunk(3, 100, 110);
  qs.push_back({4, 7});
  for (int32_t p : {5, 3, 900, 901, 17, 16, 15}) qs.push_back({0, p});
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(41);
  const std::vector<float> q = naive::RandomFloats(
      int64_t(qs.size()) * n_heads * head_dim, -1.5f, 1.5f, rng);
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const std::vector<float> want =
      previous::Attention(f.kv, 1, b.placement(), q.data(), n_heads, scale);
  const size_t width = size_t(n_heads * head_dim);
  for (int threads : {1, 2}) {
    const std::vector<float> got =
        RunAttention(f, b, q.data(), n_heads, threads);
    ASSERT_EQ(want.size(), got.size());
    for (size_t t = 0; t < qs.size(); ++t) {
      ASSERT_EQ(0, std::memcmp(want.data() + t * width, got.data() + t * width,
                               width * sizeof(float)))
          << "token " << t << " (sequence " << qs[t].seq << ", position "
          << qs[t].pos << "), " << threads << " threads";
    }
  }
}

// Head sizes that are not a multiple of the widest register blocks, and a
// block size that is not a multiple of 8, against the previous kernel.
TEST(AttentionTest, BitwiseEqualsPreviousKernelOddShapes) {
  for (const auto& [head_dim, block_size] :
       std::vector<std::pair<int, int>>{{72, 24}, {40, 16}, {8, 5}, {20, 16}}) {
    constexpr int32_t kKvHeads = 3;
    const int32_t n_heads = kKvHeads * 3;
    Fixture f(kKvHeads, head_dim, block_size, {300, 41}, uint32_t(head_dim));
    std::vector<Query> qs;
    for (int32_t p = 0; p < 300; ++p) qs.push_back({0, p});
    for (int32_t p : {40, 0, 23, 24, 25}) qs.push_back({1, p});
    const Batch b = MakeBatch(f, qs);
    std::mt19937 rng(5);
    const std::vector<float> q = naive::RandomFloats(
        int64_t(qs.size()) * n_heads * head_dim, -1.5f, 1.5f, rng);
    const std::vector<float> want =
        previous::Attention(f.kv, 0, b.placement(), q.data(), n_heads,
                            1.0f / std::sqrt(float(head_dim)));
    for (int threads : {1, 2}) {
      const std::vector<float> got =
          RunAttention(f, b, q.data(), n_heads, threads, 0);
      ASSERT_EQ(
          0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
          << "head_dim " << head_dim << " block_size " << block_size << ", "
          << threads << " threads";
    }
  }
}

// Infinities and NaNs in the queries (so in the scores: inf, NaN, a NaN as
// first score) come out as the previous kernel's bits too.
TEST(AttentionTest, BitwiseEqualsPreviousKernelNonFinite) {
  constexpr int32_t kKvHeads = 3, kHeads = 9, kHeadDim = 64;
  Fixture f(kKvHeads, kHeadDim, 16, {200}, 8);
  std::vector<Query> qs;
  for (int32_t p = 0; p < 200; ++p) qs.push_back({0, p});
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(6);
  std::vector<float> q = naive::RandomFloats(
      int64_t(qs.size()) * kHeads * kHeadDim, -1.5f, 1.5f, rng);
  const float specials[] = {INFINITY, -INFINITY, NAN, -NAN, 1e30f, 0.0f};
  std::uniform_int_distribution<size_t> pick(0, q.size() - 1);
  for (int i = 0; i < 300; ++i) q[pick(rng)] = specials[i % 6];
  // Non-finite K and V too: position 0 of KV head 1 (every query's first
  // score NaN there) and scattered elements.
  const int32_t* table = f.tables[0].data();
  f.arena[size_t(f.kv.Offset(table[0], 1, 0, 1, 0) + 5)] = 0x7e00;  // NaN
  const uint16_t half_specials[] = {0x7c00, 0xfc00, 0x7e00, 0xfe01};
  std::uniform_int_distribution<int32_t> slot(1, 199), elem(0, kHeadDim - 1);
  for (int i = 0; i < 40; ++i) {
    const int32_t j = slot(rng);
    f.arena[size_t(f.kv.Offset(table[j / 16], 1, i % 2, i % kKvHeads, j % 16) +
                   elem(rng))] = half_specials[i % 4];
  }
  const std::vector<float> want =
      previous::Attention(f.kv, 1, b.placement(), q.data(), kHeads, 0.125f);
  std::vector<float> got(want.size());
  Attention(f.kv, 1, b.placement(), q.data(), {kHeads, 0.125f}, got.data(),
            CpuExec{2});
  ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
}

// Position 0 attends to itself only: the output is exactly its V row.
// Sliding window: each query attends to its last `window` positions only.
// Block-table entries wholly before every query's window of that sequence
// are -1, as a store that freed them leaves them: touching one fails.
class AttentionWindowTest
    : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

std::vector<Query> WindowQueries() {
  // A prefill run of sequence 2 (tiles of consecutive positions), decode
  // tokens of the others, positions on and around block and window edges.
  std::vector<Query> qs = {{0, 3}, {1, 40}, {1, 41}};
  for (int32_t p = 60; p < 100; ++p) qs.push_back({2, p});
  qs.push_back({1, 16});
  return qs;
}

void FreeBeforeWindows(Fixture& f, const std::vector<Query>& qs,
                       int32_t window) {
  for (size_t s = 0; s < f.tables.size(); ++s) {
    int32_t lo = INT32_MAX;
    for (const Query& q : qs) {
      if (q.seq == int(s)) lo = std::min(lo, WindowStart(q.pos, window));
    }
    for (int32_t i = 0; (i + 1) * f.kv.block_size <= lo; ++i) {
      f.tables[s][size_t(i)] = -1;
    }
  }
}

TEST_P(AttentionWindowTest, MatchesNaiveReference) {
  const auto [ratio, head_dim, window] = GetParam();
  constexpr int32_t kKvHeads = 1;
  const int32_t n_heads = kKvHeads * ratio;
  Fixture f(kKvHeads, head_dim, 16, {4, 42, 100}, uint32_t(window + head_dim));
  const std::vector<Query> qs = WindowQueries();
  FreeBeforeWindows(f, qs, window);
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(5);
  const std::vector<float> q =
      naive::RandomFloats(int64_t(qs.size()) * n_heads * head_dim, -1, 1, rng);
  const std::vector<float> got =
      RunAttention(f, b, q.data(), n_heads, 2, 1, window);
  const std::vector<double> want =
      naive::Attention(f.kv, 1, b.placement(), q.data(), n_heads,
                       1.0f / std::sqrt(float(head_dim)), window);
  // As MatchesNaiveReference, plus: with windows of a few positions each
  // softmax weight is large, and where the f32 scores differ in the last bit
  // the f16 rounding of a weight p may land one f16 step away (2^-11 p,
  // 1.2e-4 at p = 0.5, |v| <= 1). A window off by one position moves outputs
  // by ~1/window >= 3e-2.
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(want[i], got[i], 3e-4) << "element " << i;
  }
}

// A windowed token's output is bitwise the same in the prefill run, alone
// (a decode step) and with 1 or 2 threads.
TEST_P(AttentionWindowTest, BatchInvariant) {
  const auto [ratio, head_dim, window] = GetParam();
  const int32_t n_heads = ratio;
  Fixture f(1, head_dim, 16, {4, 42, 100}, 31);
  const std::vector<Query> qs = WindowQueries();
  FreeBeforeWindows(f, qs, window);
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(8);
  const size_t width = size_t(n_heads * head_dim);
  const std::vector<float> q =
      naive::RandomFloats(int64_t(qs.size() * width), -1, 1, rng);
  const std::vector<float> batch2 =
      RunAttention(f, b, q.data(), n_heads, 2, 1, window);
  const std::vector<float> batch1 =
      RunAttention(f, b, q.data(), n_heads, 1, 1, window);
  ASSERT_EQ(0, std::memcmp(batch1.data(), batch2.data(), batch1.size() * 4));
  for (size_t t = 0; t < qs.size(); ++t) {
    const Batch one = MakeBatch(f, {qs[t]});
    const std::vector<float> alone =
        RunAttention(f, one, q.data() + t * width, n_heads, 1, 1, window);
    ASSERT_EQ(0,
              std::memcmp(alone.data(), batch2.data() + t * width, width * 4))
        << "token " << t;
  }
}

// A window at least as long as the context is no window, bit for bit.
TEST(AttentionWindowTest, LongWindowIsFullAttention) {
  Fixture f(1, 64, 16, {4, 42, 100}, 12);
  const std::vector<Query> qs = WindowQueries();
  const Batch b = MakeBatch(f, qs);
  std::mt19937 rng(2);
  const std::vector<float> q =
      naive::RandomFloats(int64_t(qs.size()) * 4 * 64, -1, 1, rng);
  const std::vector<float> full = RunAttention(f, b, q.data(), 4, 2, 1, 0);
  const std::vector<float> wide = RunAttention(f, b, q.data(), 4, 2, 1, 100);
  ASSERT_EQ(0, std::memcmp(full.data(), wide.data(), full.size() * 4));
}

// (GQA ratio, head_dim, window): Gemma 3 270M is 4 query heads on one KV
// head of 256; windows shorter than, equal to and longer than a block, and
// not multiples of it. head_dim 36 takes the one-pair path.
INSTANTIATE_TEST_SUITE_P(
    Grid, AttentionWindowTest,
    ::testing::Combine(::testing::Values(1, 4), ::testing::Values(36, 64, 256),
                       ::testing::Values(1, 7, 16, 33)),
    [](const auto& info) {
      return "gqa" + std::to_string(std::get<0>(info.param)) + "_hd" +
             std::to_string(std::get<1>(info.param)) + "_w" +
             std::to_string(std::get<2>(info.param));
    });

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
