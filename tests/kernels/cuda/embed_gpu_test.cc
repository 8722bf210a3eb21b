// LaunchEmbed against the CPU Embed: rows of F32, F16 and BF16 tables must
// come out bitwise equal (the conversions are exact), NaN payloads included.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
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

size_t ElemBytes(GgmlType type) { return type == GgmlType::kF32 ? 4 : 2; }

// Bitwise comparison of two f32 vectors; names the first differing element
// and counts all of them.
void ExpectBitsEqual(const std::vector<float>& got,
                     const std::vector<float>& want, int64_t cols) {
  ASSERT_EQ(got.size(), want.size());
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (a != b && bad++ == 0) {
      first =
          absl::StrCat("token ", int64_t(i) / cols, " col ", int64_t(i) % cols,
                       ": gpu ", got[i], " (0x", absl::Hex(a), ") cpu ",
                       want[i], " (0x", absl::Hex(b), ")");
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << got.size()
                    << " elements differ; first at " << first;
}

// A table whose even rows hold ordinary values (QuantizeRow of uniform
// floats) and whose odd rows hold random bits: every NaN, inf and subnormal
// pattern must survive exactly.
std::vector<uint8_t> MakeTable(GgmlType type, int64_t rows, int64_t cols,
                               std::mt19937& rng) {
  const size_t row_bytes = ElemBytes(type) * size_t(cols);
  std::vector<uint8_t> table(row_bytes * size_t(rows));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> f(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = table.data() + size_t(r) * row_bytes;
    if (r % 2 == 0) {
      for (float& x : f) x = u(rng);
      QuantizeRow(type, f.data(), row, cols);
    } else {
      for (size_t i = 0; i < row_bytes; ++i) row[i] = uint8_t(rng());
    }
  }
  return table;
}

// One test per table type (each test is a process under ctest, so shapes
// loop inside): cols x n_tokens.
class EmbedGpuTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(EmbedGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  const GgmlType type = GetParam();
  constexpr int64_t kVocab = 1000;
  for (const int cols : {64, 77, 576, 4096}) {
    std::mt19937 rng(static_cast<uint32_t>(cols * 7919) ^
                     static_cast<uint32_t>(type));
    const std::vector<uint8_t> table = MakeTable(type, kVocab, cols, rng);
    const size_t row_bytes = ElemBytes(type) * size_t(cols);
    const DeviceBuffer d_table = ToDevice(table);
    for (const int n_tokens : {1, 64, 3000}) {
      SCOPED_TRACE(absl::StrCat("type ", TypeName(type), " cols ", cols,
                                " n_tokens ", n_tokens));
      std::vector<int32_t> tokens(static_cast<size_t>(n_tokens));
      std::uniform_int_distribution<int32_t> tok(0, kVocab - 1);
      for (int32_t& t : tokens) t = tok(rng);
      tokens[0] = kVocab - 1;  // the last row, and repeats below
      if (n_tokens > 2) tokens[1] = 0;
      if (n_tokens > 3) tokens[2] = tokens[n_tokens - 1];

      const WeightView cpu_view{type, table.data(), kVocab, cols, row_bytes};
      std::vector<float> want(size_t(n_tokens) * size_t(cols));
      Embed(cpu_view, tokens.data(), n_tokens, want.data(), CpuExec{4});

      const DeviceBuffer d_tokens = ToDevice(tokens);
      DeviceBuffer d_out(want.size() * sizeof(float));
      ASSERT_EQ(cudaMemset(d_out.get(), 0xFF, d_out.bytes()), cudaSuccess);
      const WeightView gpu_view{type, d_table.get(), kVocab, cols, row_bytes};
      LaunchEmbed(gpu_view, d_tokens.as<int32_t>(), n_tokens, d_out.as<float>(),
                  nullptr);
      ExpectBitsEqual(ToHost<float>(d_out, want.size()), want, cols);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, EmbedGpuTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16,
                                           GgmlType::kBF16),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return std::string(TypeName(info.param));
                         });

// A table larger than 2^31 bytes: rows beyond that offset must be read from
// the right place (64-bit row offsets).
TEST(EmbedGpuLargeTest, RowsBeyondTwoGiB) {
  KVS_REQUIRE_GPU();
  constexpr int64_t kCols = 4096;
  constexpr int64_t kRows = 270000;  // 270000 * 8 KiB > 2^31 bytes
  constexpr size_t kRowBytes = kCols * 2;
  DeviceBuffer d_table(size_t(kRows) * kRowBytes);
  ASSERT_NE(d_table.get(), nullptr);
  ASSERT_EQ(cudaMemset(d_table.get(), 0, d_table.bytes()), cudaSuccess);
  // Row 262144 starts exactly at byte 2^31.
  const std::vector<int32_t> tokens = {kRows - 1, 262144, 3, 262145};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> want;
  for (const int32_t tok : tokens) {
    std::vector<float> f(kCols);
    for (float& x : f) x = u(rng);
    std::vector<uint16_t> h(kCols);
    QuantizeRow(GgmlType::kF16, f.data(), h.data(), kCols);
    ASSERT_EQ(cudaMemcpy(d_table.as<uint8_t>() + size_t(tok) * kRowBytes,
                         h.data(), kRowBytes, cudaMemcpyHostToDevice),
              cudaSuccess);
    for (const uint16_t x : h) want.push_back(HalfToFloat(x));
  }
  const DeviceBuffer d_tokens = ToDevice(tokens);
  DeviceBuffer d_out(want.size() * sizeof(float));
  const WeightView view{GgmlType::kF16, d_table.get(), kRows, kCols, kRowBytes};
  LaunchEmbed(view, d_tokens.as<int32_t>(), int64_t(tokens.size()),
              d_out.as<float>(), nullptr);
  ExpectBitsEqual(ToHost<float>(d_out, want.size()), want, kCols);
}

}  // namespace
}  // namespace kvsession::kernels::cuda
