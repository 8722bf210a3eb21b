#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels {
namespace {

std::vector<float> Dequant(GgmlType type, const std::vector<uint8_t>& bytes,
                           int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), NAN);
  DequantizeRow(type, bytes.data(), out.data(), n);
  return out;
}

// `n` copies of `fill` with the listed elements replaced.
std::vector<float> Expected(int n, float fill, std::map<int, float> at) {
  std::vector<float> v(size_t(n), fill);
  for (auto [i, f] : at) v[size_t(i)] = f;
  return v;
}

void ExpectExactly(const std::vector<float>& want,
                   const std::vector<float>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i], got[i]) << "element " << i;
  }
}

// Every block below is written byte by byte and its values worked out by hand
// from the format definition; all of them are exact in f32, so the decoder
// must reproduce them exactly.

TEST(DequantizeTest, FloatTypes) {
  // f16 1, -2, 2^-24 (smallest subnormal), 65504 (largest finite).
  ExpectExactly({1.0f, -2.0f, 5.9604644775390625e-8f, 65504.0f},
                Dequant(GgmlType::kF16,
                        {0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0xFF, 0x7B}, 4));
  // bf16 1, -3, 0x4049 = 3.140625.
  ExpectExactly(
      {1.0f, -3.0f, 3.140625f},
      Dequant(GgmlType::kBF16, {0x80, 0x3F, 0x40, 0xC0, 0x49, 0x40}, 3));
  ExpectExactly({1.5f}, Dequant(GgmlType::kF32, {0x00, 0x00, 0xC0, 0x3F}, 1));
}

TEST(DequantizeTest, Q4_0) {
  // d = 0.5; x = (nibble - 8) * d. Byte j: low nibble -> element j, high
  // nibble -> element j + 16. 0x88 decodes to 0 in both halves.
  std::vector<uint8_t> b = {0x00, 0x38, 0x1F, 0x80};
  b.resize(18, 0x88);
  ExpectExactly(Expected(32, 0.0f, {{0, 3.5f}, {16, -3.5f}, {1, -4.0f}}),
                Dequant(GgmlType::kQ4_0, b, 32));
}

TEST(DequantizeTest, Q4_1) {
  // d = 1, m = -2; x = nibble * d + m. 0x22 -> 0 in both halves.
  std::vector<uint8_t> b = {0x00, 0x3C, 0x00, 0xC0, 0x53};
  b.resize(19, 0x22);
  b.push_back(0xF0);
  ExpectExactly(
      Expected(32, 0.0f, {{0, 1.0f}, {16, 3.0f}, {15, -2.0f}, {31, 13.0f}}),
      Dequant(GgmlType::kQ4_1, b, 32));
}

TEST(DequantizeTest, Q5_0) {
  // d = 0.25; qh = 0x80020001 (bits 0, 17, 31); x = (q | qh_bit << 4) - 16.
  // Untouched elements: q = 0, no high bit -> -16 * 0.25 = -4.
  std::vector<uint8_t> b = {0x00, 0x34, 0x01, 0x00, 0x02, 0x80, 0x0F, 0xA5};
  b.resize(21, 0x00);
  b.push_back(0x70);
  ExpectExactly(Expected(32, -4.0f,
                         {{0, 3.75f},     // 0xF | 0x10 = 31 -> 15
                          {16, -4.0f},    // 0 -> -16
                          {1, -2.75f},    // 5 -> -11
                          {17, 2.5f},     // 0xA | 0x10 = 26 -> 10
                          {15, -4.0f},    // 0 -> -16
                          {31, 1.75f}}),  // 7 | 0x10 = 23 -> 7
                Dequant(GgmlType::kQ5_0, b, 32));
}

TEST(DequantizeTest, Q5_1) {
  // d = 0.5, m = 1; qh = 0x00100008 (bits 3, 20); x = q * d + m.
  std::vector<uint8_t> b = {0x00, 0x38, 0x00, 0x3C, 0x08, 0x00, 0x10,
                            0x00, 0x00, 0x00, 0x00, 0x21, 0x0C};
  b.resize(24, 0x00);
  ExpectExactly(Expected(32, 1.0f,
                         {{3, 9.5f},     // 1 | 0x10 = 17
                          {19, 2.0f},    // 2
                          {4, 7.0f},     // 12
                          {20, 9.0f}}),  // 0 | 0x10 = 16
                Dequant(GgmlType::kQ5_1, b, 32));
}

TEST(DequantizeTest, Q8_0AndQ8_1) {
  // d = -0.5; q = 127, -127, 2, ..., -128.
  std::vector<uint8_t> b = {0x00, 0xB8, 0x7F, 0x81, 0x02};
  b.resize(33, 0x00);
  b.push_back(0x80);
  ExpectExactly(
      Expected(32, 0.0f, {{0, -63.5f}, {1, 63.5f}, {2, -1.0f}, {31, 64.0f}}),
      Dequant(GgmlType::kQ8_0, b, 32));
  // Q8_1: d = 2, s (ignored by decoding) = 7; q[0] = 5, q[5] = -3.
  std::vector<uint8_t> c = {0x00, 0x40, 0x00, 0x47, 0x05, 0, 0, 0, 0, 0xFD};
  c.resize(36, 0x00);
  ExpectExactly(Expected(32, 0.0f, {{0, 10.0f}, {5, -6.0f}}),
                Dequant(GgmlType::kQ8_1, c, 32));
}

TEST(DequantizeTest, Q4_K) {
  // d = 1, dmin = 0.5. The 12 scale bytes encode, by ggml's 6-bit packing,
  // sub-block scales {1, 2, 3, 4, 18, 0, 7, 57} and mins {5, 0, 1, 0, 3, 0,
  // 33, 0}: bytes 0-3 low 6 bits = scales 0-3, top 2 bits = scales 4-7 bits
  // 4-5 (0x41 -> 1 and 16 for scale 4, 0xC4 -> 4 and 48 for scale 7); bytes
  // 4-7 likewise for mins (0x81 -> min 2 = 1 and 32 for min 6); bytes 8-11
  // low nibble = scales 4-7 bits 0-3, high nibble = mins 4-7 bits 0-3.
  // x = d * scale * q - dmin * min; qs byte 32c + l holds sub-block 2c
  // (low nibble) and 2c + 1 (high nibble) at offset l.
  std::vector<uint8_t> b = {0x00, 0x3C, 0x00, 0x38, 0x41, 0x02, 0x03, 0xC4,
                            0x05, 0x00, 0x81, 0x00, 0x32, 0x00, 0x17, 0x09};
  b.resize(144, 0x00);
  b[16 + 0] = 0xA3;        // sub 0 elem 0: q 3; sub 1 elem 32: q 10
  b[16 + 64 + 5] = 0x7F;   // sub 4 elem 133: q 15; sub 5 elem 165: q 7
  b[16 + 96 + 31] = 0x1E;  // sub 6 elem 223: q 14; sub 7 elem 255: q 1
  // q = 0 elsewhere: x = -0.5 * min of the sub-block.
  std::vector<float> want(256);
  const float zero_q[8] = {-2.5f, 0.0f, -0.5f, 0.0f, -1.5f, 0.0f, -16.5f, 0.0f};
  for (int i = 0; i < 256; ++i) want[size_t(i)] = zero_q[i / 32];
  want[0] = 0.5f;      // 1 * 3 - 2.5
  want[32] = 20.0f;    // 2 * 10 - 0
  want[133] = 268.5f;  // 18 * 15 - 1.5
  want[165] = 0.0f;    // 0 * 7 - 0
  want[223] = 81.5f;   // 7 * 14 - 16.5
  want[255] = 57.0f;   // 57 * 1 - 0
  ExpectExactly(want, Dequant(GgmlType::kQ4_K, b, 256));
}

TEST(DequantizeTest, Q6_K) {
  // Layout: ql[128] | qh[64] | scales[16] | d. d = 0.5. Element i: half
  // h = i / 128, group g = (i % 128) / 32, l = i % 32; low 4 bits from
  // ql[64h + l + 32 (g % 2)] (low nibble for g < 2, high otherwise), high 2
  // bits from qh[32h + l] >> 2g, scale scales[8h + l / 16 + 2g];
  // x = d * scale * (q - 32).
  std::vector<uint8_t> b(210, 0x00);
  b[0] = 0xF5;         // elem 0 low 5; elem 64 low 15
  b[32] = 0x3C;        // elem 32 low 12; elem 96 low 3
  b[128 + 0] = 0x86;   // qh: elem 0 hi 2, elem 32 hi 1, elem 64 hi 0, 96 hi 2
  b[127] = 0xA0;       // elem 255 low 10 (elem 191 low 0)
  b[128 + 63] = 0xC0;  // elem 255 hi 3
  int8_t scales[16];
  for (int8_t& s : scales) s = 1;
  scales[0] = 2;    // half 0, l < 16, g 0
  scales[2] = -3;   // half 0, l < 16, g 1
  scales[5] = 4;    // half 0, l >= 16, g 2
  scales[15] = -1;  // half 1, l >= 16, g 3
  std::memcpy(b.data() + 192, scales, 16);
  b[208] = 0x00;
  b[209] = 0x38;
  // q = 0 elsewhere: x = 0.5 * scale * -32 = -16 * scale.
  std::vector<float> want(256);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, g = (i % 128) / 32, l = i % 32;
    want[size_t(i)] = -16.0f * scales[8 * h + l / 16 + 2 * g];
  }
  want[0] = 5.0f;      // q = 5 | 2 << 4 = 37 -> 5; 0.5 * 2 * 5
  want[64] = -8.5f;    // q = 15 -> -17; 0.5 * 1 * -17
  want[32] = 6.0f;     // q = 12 | 1 << 4 = 28 -> -4; 0.5 * -3 * -4
  want[96] = 1.5f;     // q = 3 | 2 << 4 = 35 -> 3; 0.5 * 1 * 3
  want[255] = -13.0f;  // q = 10 | 3 << 4 = 58 -> 26; 0.5 * -1 * 26
  ExpectExactly(want, Dequant(GgmlType::kQ6_K, b, 256));
}

// Random rows of every type against the naive decoder: both evaluate the same
// f32 expression per element (ggml's), so the results match bit for bit.
class DequantizeRandomTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(DequantizeRandomTest, MatchesNaiveDecoder) {
  const GgmlType type = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(type) + 1);
  const int64_t n = 4 * 256;
  const std::vector<uint8_t> w = naive::RandomWeights(type, 1, n, rng);
  const std::vector<float> want = naive::Dequantize(type, w.data(), n);
  const std::vector<float> got = Dequant(type, w, n);
  ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DequantizeRandomTest,
                         ::testing::ValuesIn(naive::kWeightTypes),
                         naive::TypeParamName());

}  // namespace
}  // namespace kvsession::kernels
