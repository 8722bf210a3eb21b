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
#include "kernels/cpu/ops.h"
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

struct Problem {
  std::vector<uint8_t> w;
  WeightView view;
  std::vector<float> x;
};

Problem MakeProblem(GgmlType type, int64_t rows, int64_t cols, int64_t n_tokens,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  Problem p;
  p.w = naive::RandomWeights(type, rows, cols, rng);
  p.view = {type, p.w.data(), rows, cols, naive::RowBytes(type, cols)};
  p.x = naive::RandomFloats(n_tokens * cols, -2.0f, 2.0f, rng);
  return p;
}

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
  for (int64_t n_tokens : {1, 2, 5, 40}) {
    const Problem p =
        MakeProblem(type, kRows, kCols, n_tokens, uint32_t(n_tokens) + 100);
    for (int threads : {1, 2}) {
      const std::vector<float> got =
          RunMatMul(p.view, p.x.data(), n_tokens, threads);
      std::vector<float> want(got.size(), NAN);
      kvs_portable::MatMul(static_cast<uint32_t>(type), p.w.data(), kRows,
                           kCols, p.view.row_bytes, p.x.data(), n_tokens,
                           want.data(), threads);
      ASSERT_EQ(
          0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
          << n_tokens << " tokens, " << threads << " threads";
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
