// MatMul with K-quant weights (Q4_K, Q5_K, Q6_K against Q8_K activations),
// plus Q5_0 (Q8_0 activations): exact dots of hand-made blocks, agreement
// with a double-precision reference, bitwise batch/thread invariance and
// bitwise equality of the AVX2 and portable builds.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/qdot_k.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"
#include "tests/kernels/naive_ops.h"
#ifndef KVSESSION_PORTABLE_VARIANT
#include "tests/kernels/portable/portable_kernels.h"
#endif

namespace kvsession::kernels {
namespace {

constexpr int kQk = 256;

void Put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v & 0xFF);
  p[1] = uint8_t(v >> 8);
}

std::vector<float> RunMatMul(const WeightView& w, const float* x,
                             int64_t n_tokens, int threads) {
  std::vector<float> out(size_t(n_tokens * w.rows), NAN);
  MatMul(w, x, n_tokens, out.data(), CpuExec{threads});
  return out;
}

// Activations whose Q8_K quantization is exact: x = d_a * q with q[0] =
// -128 the first element of largest magnitude, so the block's d is d_a and
// its values q (d_a a power of two).
constexpr double kDa = 0.25;
int ActQ(int e) { return e == 0 ? -128 : (e * 37 + 11) % 255 - 127; }
std::vector<float> ExactActivations(int n_tokens) {
  std::vector<float> x(size_t(n_tokens) * kQk);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(kDa * ActQ(int(i % kQk)));
  return x;
}

// 6-bit scales and mins packed as ggml does for Q4_K/Q5_K: bytes 0-3 low 6
// bits = scales 0-3, top 2 bits = bits 4-5 of scales 4-7; bytes 4-7 likewise
// for the mins; bytes 8-11 low nibble = scales 4-7 bits 0-3, high nibble =
// mins 4-7 bits 0-3.
void PackScales(const int sc[8], const int m[8], uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t(m[j] | ((m[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

// Expected dot of an affine K block: sum_e (d * sc[e/32] * q(e) - dmin *
// m[e/32]) * kDa * ActQ(e), exact in double.
template <typename Q>
double AffineDot(double d, double dmin, const int sc[8], const int m[8], Q q) {
  double s = 0;
  for (int e = 0; e < kQk; ++e) {
    s += (d * sc[e / 32] * q(e) - dmin * m[e / 32]) * kDa * ActQ(e);
  }
  return s;
}

constexpr int kSc[8] = {1, 2, 3, 63, 18, 0, 7, 57};
constexpr int kMin[8] = {5, 0, 1, 63, 3, 40, 33, 0};

// The same expected value for the token in a batch of 1, 2 (decode path) and
// 5 (tile path), and for the block as row 0 and row 2 of a matrix.
void ExpectExactDot(GgmlType type, const std::vector<uint8_t>& block,
                    double want) {
  const size_t bytes = block.size();
  std::vector<uint8_t> w(3 * bytes, 0);
  std::memcpy(w.data(), block.data(), bytes);
  std::memcpy(w.data() + 2 * bytes, block.data(), bytes);
  const WeightView view{type, w.data(), 3, kQk, bytes};
  for (int n_tokens : {1, 2, 5}) {
    const std::vector<float> x = ExactActivations(n_tokens);
    const std::vector<float> out = RunMatMul(view, x.data(), n_tokens, 1);
    for (int t = 0; t < n_tokens; ++t) {
      EXPECT_EQ(float(want), out[size_t(t) * 3]) << n_tokens << " tokens";
      EXPECT_EQ(float(want), out[size_t(t) * 3 + 2]) << n_tokens << " tokens";
    }
  }
}

TEST(MatMulKTest, HandMadeQ4_KBlock) {
  // d = 1 (f16 0x3C00), dmin = 0.5 (0x3800); element e of sub-block j = e/32
  // has q(e) = (5e + 3) % 16, stored at qs[32 (e / 64) + e % 32], low nibble
  // for even j.
  auto q = [](int e) { return (5 * e + 3) % 16; };
  std::vector<uint8_t> b(144, 0);
  Put16(&b[0], 0x3C00);
  Put16(&b[2], 0x3800);
  PackScales(kSc, kMin, &b[4]);
  for (int e = 0; e < kQk; ++e) {
    b[16 + 32 * (e / 64) + e % 32] |= uint8_t(q(e) << ((e / 32) % 2 * 4));
  }
  ExpectExactDot(GgmlType::kQ4_K, b, AffineDot(1.0, 0.5, kSc, kMin, q));
}

TEST(MatMulKTest, HandMadeQ5_KBlock) {
  // d = 0.5, dmin = 2 (0x4000); q(e) = (7e + 1) % 32: low 4 bits as Q4_K
  // (qs after qh), bit 4 in bit j = e / 32 of qh[e % 32].
  auto q = [](int e) { return (7 * e + 1) % 32; };
  std::vector<uint8_t> b(176, 0);
  Put16(&b[0], 0x3800);
  Put16(&b[2], 0x4000);
  PackScales(kSc, kMin, &b[4]);
  for (int e = 0; e < kQk; ++e) {
    b[48 + 32 * (e / 64) + e % 32] |=
        uint8_t((q(e) & 15) << ((e / 32) % 2 * 4));
    b[16 + e % 32] |= uint8_t((q(e) >> 4) << (e / 32));
  }
  ExpectExactDot(GgmlType::kQ5_K, b, AffineDot(0.5, 2.0, kSc, kMin, q));
}

TEST(MatMulKTest, HandMadeQ6_KBlock) {
  // ql[128] | qh[64] | scales[16] | d = 0.125 (0x3000). Element e = 128h +
  // 32k + l: u = q + 32 has its low 4 bits in ql[64h + 32 (k % 2) + l] (high
  // nibble for k >= 2), its top 2 bits at 2k of qh[32h + l]; scale e / 16.
  auto q = [](int e) { return (11 * e + 5) % 64 - 32; };
  const int sc[16] = {1,   -2, 3,    127, -128, 0,  9, -7,
                      100, 45, -100, 12,  -1,   64, 2, -33};
  std::vector<uint8_t> b(210, 0);
  double want = 0;
  for (int e = 0; e < kQk; ++e) {
    const int u = q(e) + 32, h = e / 128, k = (e % 128) / 32, l = e % 32;
    b[64 * h + 32 * (k % 2) + l] |= uint8_t((u & 15) << (k >= 2 ? 4 : 0));
    b[128 + 32 * h + l] |= uint8_t((u >> 4) << (2 * k));
    want += 0.125 * sc[e / 16] * q(e) * kDa * ActQ(e);
  }
  for (int g = 0; g < 16; ++g) b[192 + g] = uint8_t(int8_t(sc[g]));
  Put16(&b[208], 0x3000);
  ExpectExactDot(GgmlType::kQ6_K, b, want);
}

// Q5_0 takes the quantized path too: d = 0.5, q = (3e % 32) - 16 meets
// Q8_0 activations q_a = ActQ8(e) with d_a = 1/64 (exactly representable:
// amax = 127/64), so the result is exact.
TEST(MatMulKTest, HandMadeQ5_0Block) {
  auto q = [](int e) { return (3 * e) % 32 - 16; };
  auto qa = [](int e) { return e == 0 ? 127 : (e * 13 + 5) % 255 - 127; };
  std::vector<uint8_t> b(22, 0);
  Put16(&b[0], 0x3800);
  uint32_t qh = 0;
  double want = 0;
  std::vector<float> x(32);
  for (int e = 0; e < 32; ++e) {
    const int u = q(e) + 16;
    b[6 + e % 16] |= uint8_t((u & 15) << (e / 16 * 4));
    qh |= uint32_t(u >> 4) << e;
    x[size_t(e)] = float(qa(e)) / 64;
    want += 0.5 * q(e) * qa(e) / 64.0;
  }
  std::memcpy(&b[2], &qh, 4);
  const WeightView view{GgmlType::kQ5_0, b.data(), 1, 32, 22};
  EXPECT_EQ(float(want), RunMatMul(view, x.data(), 1, 1)[0]);
}

using naive::MakeProblem;
using naive::Problem;

// |dmin * m| of each 32-element sub-block of a Q4_K/Q5_K row (0 for Q6_K).
std::vector<double> SubBlockMins(GgmlType type, const uint8_t* row,
                                 int64_t cols) {
  std::vector<double> mins(size_t(cols / 32), 0.0);
  if (type == GgmlType::kQ6_K) return mins;
  const int64_t bytes = Traits(type).block_bytes;
  for (int64_t i = 0; i < cols / 32; ++i) {
    const uint8_t* b = row + (i / 8) * bytes;
    const int j = int(i % 8);
    const int m = j < 4 ? (b[4 + j + 4] & 63)
                        : ((b[4 + j + 4] >> 4) | ((b[4 + j] >> 6) << 4));
    mins[size_t(i)] =
        std::fabs(double(naive::HalfToFloat(uint16_t(b[2] | (b[3] << 8)))) * m);
  }
  return mins;
}

class MatMulKRefTest
    : public ::testing::TestWithParam<std::tuple<GgmlType, int64_t, int>> {};

// Against dequantized weights (f32) . dequantized Q8_K activations (f32),
// summed in double. The kernel's integer sums are exact; its float error is
// a few roundings per super-block (the int -> float conversions, d_w * d_a,
// the fma), and the f32 decode on the reference side rounds d * sc * q -
// dmin * m per element, relative to |d * sc * q| + |dmin * m| <= |w| + 2 *
// |dmin * m|. (nb + 8) * 2^-22 of sum |a| * (|w| + 2 |dmin * m|) bounds both.
TEST_P(MatMulKRefTest, MatchesDoubleReference) {
  const auto [type, cols, threads] = GetParam();
  constexpr int64_t kRows = 29, kTokens = 7;
  const Problem p = MakeProblem(type, kRows, cols, kTokens, uint32_t(cols));
  const std::vector<float> out =
      RunMatMul(p.view, p.x.data(), kTokens, threads);
  const int64_t nb = cols / kQk;
  for (int64_t t = 0; t < kTokens; ++t) {
    const std::vector<uint8_t> q8 =
        naive::Quantize(GgmlType::kQ8_K, p.x.data() + t * cols, cols);
    const std::vector<float> a =
        naive::Dequantize(GgmlType::kQ8_K, q8.data(), cols);
    for (int64_t r = 0; r < kRows; ++r) {
      const uint8_t* row = p.w.data() + r * p.view.row_bytes;
      const std::vector<float> w = naive::Dequantize(type, row, cols);
      const std::vector<double> mins = SubBlockMins(type, row, cols);
      double want = 0, mag = 0;
      for (int64_t k = 0; k < cols; ++k) {
        want += double(w[k]) * double(a[k]);
        mag += std::fabs(double(a[k])) *
               (std::fabs(double(w[k])) + 2 * mins[size_t(k / 32)]);
      }
      const double tol = double(nb + 8) * std::ldexp(1.0, -22) * mag;
      ASSERT_NEAR(out[size_t(t * kRows + r)], want, tol)
          << "token " << t << " row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    KTypes, MatMulKRefTest,
    ::testing::Combine(::testing::Values(GgmlType::kQ4_K, GgmlType::kQ5_K,
                                         GgmlType::kQ6_K),
                       ::testing::Values(256, 768, 2048),
                       ::testing::Values(1, 2)),
    [](const auto& info) {
      return std::string(TypeName(std::get<0>(info.param))) + "_c" +
             std::to_string(std::get<1>(info.param)) + "_th" +
             std::to_string(std::get<2>(info.param));
    });

// ---- Fused decode (qdot_k::FusedSums) vs unpacked (Unpack + Sums) ----

// A finite f16 (exponent 31 = inf/nan avoided), or one of the extremes.
uint16_t RandomHalf(std::mt19937& rng) {
  static constexpr uint16_t kEdge[] = {0x7BFF, 0xFBFF, 0x0001, 0x8001,
                                       0x0400, 0x3C00, 0x0000};
  const uint32_t v = rng();
  if (v % 4 == 0) return kEdge[(v >> 2) % 7];
  uint16_t h = uint16_t(v >> 8);
  if (((h >> 10) & 31) == 31) h &= 0xBFFF;
  return h;
}

// n super-blocks of `type` (raw bytes): each field independently random or
// extreme: all-0xFF quant bytes (Q4_K nibbles 15, Q5_K values 31, Q6_K
// values 63), all zero, all-0xFF scale bytes (6-bit scales and mins 63),
// Q6_K scales -128 / 127, f16 d and dmin at +-65504, subnormal, zero.
std::vector<uint8_t> KBlocks(GgmlType type, int64_t n, std::mt19937& rng) {
  const size_t bytes = size_t(Traits(type).block_bytes);
  std::vector<uint8_t> out(bytes * size_t(n));
  auto fill = [&](uint8_t* p, size_t len, bool q6_scales) {
    const uint32_t mode = rng() % 5;
    for (size_t i = 0; i < len; ++i) {
      uint8_t v = uint8_t(rng());
      if (mode == 1) v = 0xFF;
      if (mode == 2) v = 0x00;
      if (mode == 3) v = q6_scales ? 0x80 : 0xFF;  // -128
      if (mode == 4 && q6_scales) v = 0x7F;
      p[i] = v;
    }
  };
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* b = out.data() + bytes * size_t(i);
    if (type == GgmlType::kQ6_K) {
      fill(b, 128, false);       // ql
      fill(b + 128, 64, false);  // qh
      fill(b + 192, 16, true);   // scales
      Put16(b + 208, RandomHalf(rng));
    } else {
      Put16(b, RandomHalf(rng));
      Put16(b + 2, RandomHalf(rng));
      fill(b + 4, 12, false);  // scales and mins
      if (type == GgmlType::kQ5_K) {
        fill(b + 16, 32, false);  // qh
        fill(b + 48, 128, false);
      } else {
        fill(b + 16, 128, false);
      }
    }
  }
  return out;
}

// A Q8_K block: random, all -128, all 127, or alternating -128 / 127;
// bsums consistent with qs.
BlockQ8K RandomQ8K(std::mt19937& rng) {
  BlockQ8K a;
  const uint32_t mode = rng() % 4;
  for (int k = 0; k < kQk; ++k) {
    int v = int(rng() % 256) - 128;
    if (mode == 1) v = -128;
    if (mode == 2) v = 127;
    if (mode == 3) v = k % 2 ? 127 : -128;
    a.qs[k] = int8_t(v);
  }
  for (int g = 0; g < kQk / 16; ++g) {
    int sum = 0;
    for (int k = 16 * g; k < 16 * g + 16; ++k) sum += a.qs[k];
    a.bsums[g] = int16_t(sum);
  }
  a.d = float(rng() % 1000 + 1) / 4096.0f;
  return a;
}

// isum and msum of the header comment of qdot_k.h, from the ggml bit layout
// directly (no KUnpacked).
qdot_k::KSums NaiveKSums(GgmlType type, const uint8_t* b, const BlockQ8K& a) {
  int64_t isum = 0, msum = 0;
  if (type == GgmlType::kQ6_K) {
    for (int e = 0; e < kQk; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      const int low = (b[64 * h + 32 * (k % 2) + l] >> (k >= 2 ? 4 : 0)) & 15;
      const int top = (b[128 + 32 * h + l] >> (2 * k)) & 3;
      isum += int64_t(int8_t(b[192 + e / 16])) * (low | (top << 4)) * a.qs[e];
    }
    for (int g = 0; g < 16; ++g) msum += 32 * int8_t(b[192 + g]) * a.bsums[g];
  } else {
    const bool q5 = type == GgmlType::kQ5_K;
    const uint8_t* qs = b + (q5 ? 48 : 16);
    for (int e = 0; e < kQk; ++e) {
      const int j = e / 32;
      int q = (qs[32 * (e / 64) + e % 32] >> (4 * (j % 2))) & 15;
      if (q5) q |= ((b[16 + e % 32] >> j) & 1) << 4;
      uint8_t sc, m;
      Q4KScaleMin(b + 4, j, &sc, &m);
      isum += int64_t(sc) * q * a.qs[e];
    }
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      Q4KScaleMin(b + 4, j, &sc, &m);
      msum += int64_t(m) * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
    }
  }
  // The int32 bound the kernels rely on.
  EXPECT_LT(std::abs(isum) + std::abs(msum), int64_t{1} << 30);
  return {int32_t(isum), int32_t(msum)};
}

template <typename Block, int R, int T>
void ExpectFusedSumsExact(GgmlType type, uint32_t seed) {
  std::mt19937 rng(seed);
  constexpr int kTrials = 200;
  const size_t bytes = sizeof(Block);
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::vector<uint8_t> w = KBlocks(type, R, rng);
    BlockQ8K a[T];
    for (BlockQ8K& x : a) x = RandomQ8K(rng);
    qdot_k::KSums fused[R * T];
    qdot_k::FusedSums<Block, R, T>(w.data(), int64_t(bytes), a, 1, fused);
    for (int r = 0; r < R; ++r) {
      qdot_k::KUnpacked u;
      qdot_k::Unpack(*reinterpret_cast<const Block*>(w.data() + r * bytes), &u);
      qdot_k::KSums unpacked[T];
      qdot_k::Sums<1, T>(&u, 0, a, 1, unpacked);
      for (int t = 0; t < T; ++t) {
        const qdot_k::KSums want = NaiveKSums(type, w.data() + r * bytes, a[t]);
        ASSERT_EQ(want.isum, unpacked[t].isum) << "trial " << trial;
        ASSERT_EQ(want.msum, unpacked[t].msum) << "trial " << trial;
        const qdot_k::KSums f = fused[r * T + t];
        if (type == GgmlType::kQ6_K) {  // folded: {isum - msum, 0}
          ASSERT_EQ(want.isum - want.msum, f.isum) << "trial " << trial;
          ASSERT_EQ(0, f.msum) << "trial " << trial;
        } else {
          ASSERT_EQ(want.isum, f.isum) << "trial " << trial << " r " << r;
          ASSERT_EQ(want.msum, f.msum) << "trial " << trial << " r " << r;
        }
      }
    }
  }
}

template <typename Block>
void ExpectFusedSumsExactAllTiles(GgmlType type) {
  ExpectFusedSumsExact<Block, 1, 1>(type, 1);
  ExpectFusedSumsExact<Block, 1, 2>(type, 2);
  ExpectFusedSumsExact<Block, 1, 3>(type, 3);
  ExpectFusedSumsExact<Block, 1, 4>(type, 4);
  ExpectFusedSumsExact<Block, 2, 1>(type, 5);
  ExpectFusedSumsExact<Block, 2, 2>(type, 6);
}

TEST(MatMulKFusedTest, Q4_KSumsEqualUnpackedAndNaive) {
  ExpectFusedSumsExactAllTiles<BlockQ4K>(GgmlType::kQ4_K);
}
TEST(MatMulKFusedTest, Q5_KSumsEqualUnpackedAndNaive) {
  ExpectFusedSumsExactAllTiles<BlockQ5K>(GgmlType::kQ5_K);
}
TEST(MatMulKFusedTest, Q6_KSumsEqualUnpackedAndNaive) {
  ExpectFusedSumsExactAllTiles<BlockQ6K>(GgmlType::kQ6_K);
}

// Weights from KBlocks, activations with constant tokens (every Q8_K value
// -128) among random ones.
Problem MakeExtremeProblem(GgmlType type, int64_t rows, int64_t cols,
                           int64_t n_tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  Problem p;
  p.w = KBlocks(type, rows * cols / kQk, rng);
  p.view = {type, p.w.data(), rows, cols, naive::RowBytes(type, cols)};
  p.x = naive::RandomFloats(n_tokens * cols, -2.0f, 2.0f, rng);
  for (int64_t t = 0; t < n_tokens; t += 3) {
    for (int64_t k = 0; k < cols; ++k)
      p.x[size_t(t * cols + k)] = t % 2 ? 1.5f : -0.75f;
  }
  return p;
}

class MatMulKPathTest : public ::testing::TestWithParam<GgmlType> {};

// Every KPath (and MatMul) gives the same bits for any token count and
// thread count, on random and extreme blocks.
TEST_P(MatMulKPathTest, AllPathsBitwiseEqual) {
  using matmul_internal::KPath;
  const GgmlType type = GetParam();
  constexpr int64_t kRows = 13, kCols = 768;
  for (int64_t n_tokens : {1, 2, 3, 4, 5, 6, 8, 9, 17}) {
    for (bool extreme : {false, true}) {
      const uint32_t seed = uint32_t(n_tokens) + (extreme ? 1000 : 0);
      const Problem p =
          extreme ? MakeExtremeProblem(type, kRows, kCols, n_tokens, seed)
                  : MakeProblem(type, kRows, kCols, n_tokens, seed);
      std::vector<float> want(size_t(n_tokens * kRows), NAN);
      matmul_internal::MatMulKPath(p.view, p.x.data(), n_tokens, want.data(),
                                   CpuExec{1}, KPath::kPanel);
      for (KPath path :
           {KPath::kAuto, KPath::kFused, KPath::kPanel, KPath::kUnpackOne}) {
        for (int threads : {1, 2}) {
          std::vector<float> got(want.size(), NAN);
          matmul_internal::MatMulKPath(p.view, p.x.data(), n_tokens, got.data(),
                                       CpuExec{threads}, path);
          ASSERT_EQ(0, std::memcmp(got.data(), want.data(),
                                   want.size() * sizeof(float)))
              << n_tokens << " tokens, path " << int(path) << ", " << threads
              << " threads, extreme " << extreme;
        }
      }
      const std::vector<float> mm = RunMatMul(p.view, p.x.data(), n_tokens, 2);
      ASSERT_EQ(
          0, std::memcmp(mm.data(), want.data(), want.size() * sizeof(float)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(KTypes, MatMulKPathTest,
                         ::testing::Values(GgmlType::kQ4_K, GgmlType::kQ5_K,
                                           GgmlType::kQ6_K),
                         naive::TypeParamName());

const GgmlType kInvariantTypes[] = {GgmlType::kQ4_K, GgmlType::kQ5_K,
                                    GgmlType::kQ6_K, GgmlType::kQ5_0};

class MatMulKInvarianceTest : public ::testing::TestWithParam<GgmlType> {};

// Token t alone vs inside batches of 3, 17 and 64 (other tokens around it,
// starting at different offsets), with 1 and 2 threads: memcmp-equal rows.
TEST_P(MatMulKInvarianceTest, TokenRowsBitwiseEqualInAnyBatch) {
  const GgmlType type = GetParam();
  constexpr int64_t kRows = 41, kCols = 768, kTokens = 80;
  const Problem p = MakeProblem(type, kRows, kCols, kTokens, 5);
  for (int64_t t : {0, 2, 16, 40}) {
    const std::vector<float> one =
        RunMatMul(p.view, p.x.data() + t * kCols, 1, 1);
    for (int64_t batch : {3, 17, 64}) {
      for (int threads : {1, 2}) {
        // t sits at position t % batch of a batch starting at t - t % batch.
        const int64_t first = t - t % batch;
        const std::vector<float> all =
            RunMatMul(p.view, p.x.data() + first * kCols, batch, threads);
        ASSERT_EQ(0, std::memcmp(one.data(), all.data() + (t - first) * kRows,
                                 kRows * sizeof(float)))
            << "token " << t << " batch " << batch << " threads " << threads;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatMulKInvarianceTest,
                         ::testing::ValuesIn(kInvariantTypes),
                         naive::TypeParamName());

#ifndef KVSESSION_PORTABLE_VARIANT

// The AVX2 build and the portable build (tests/kernels/portable) produce the
// same bits for every quantized type, on the decode and the tile paths.
class MatMulPortableTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(MatMulPortableTest, Avx2BitwiseEqualsPortable) {
#if defined(__x86_64__)
  ASSERT_TRUE(KVS_CPU_AVX2) << "the default x86 build should use AVX2";
#endif
  ASSERT_FALSE(kvs_portable::UsesAvx2());
  const GgmlType type = GetParam();
  constexpr int64_t kRows = 37, kCols = 1024;
  const bool k_quant = matmul_internal::IsKQuant(type);
  for (int64_t n_tokens : {1, 2, 3, 4, 5, 40}) {
    for (bool extreme : {false, true}) {
      if (extreme && !k_quant) continue;
      const uint32_t seed = uint32_t(n_tokens) + 100;
      const Problem p =
          extreme ? MakeExtremeProblem(type, kRows, kCols, n_tokens, seed)
                  : MakeProblem(type, kRows, kCols, n_tokens, seed);
      for (int threads : {1, 2}) {
        const std::vector<float> got =
            RunMatMul(p.view, p.x.data(), n_tokens, threads);
        std::vector<float> want(got.size(), NAN);
        kvs_portable::MatMul(static_cast<uint32_t>(type), p.w.data(), kRows,
                             kCols, p.view.row_bytes, p.x.data(), n_tokens,
                             want.data(), threads);
        ASSERT_EQ(
            0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
            << n_tokens << " tokens, " << threads << " threads, extreme "
            << extreme;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(QuantTypes, MatMulPortableTest,
                         ::testing::Values(GgmlType::kQ4_K, GgmlType::kQ5_K,
                                           GgmlType::kQ6_K, GgmlType::kQ4_0,
                                           GgmlType::kQ4_1, GgmlType::kQ5_0,
                                           GgmlType::kQ5_1, GgmlType::kQ8_0),
                         naive::TypeParamName());

#endif  // KVSESSION_PORTABLE_VARIANT

}  // namespace
}  // namespace kvsession::kernels
