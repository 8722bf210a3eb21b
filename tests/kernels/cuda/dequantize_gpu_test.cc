// LaunchDequantize against the CPU: DequantizeRow followed by QuantizeRow to
// F16/BF16 (FloatToHalf / FloatToBf16) must be reproduced bit for bit, for
// every weight type, on realistic data (QuantizeRow of floats), on random
// bytes with sane scales, and on random bytes with wild but finite f16
// scales (subnormal to 65504: outputs overflow to inf and underflow to
// subnormals). Also a tensor of more than 2^31 elements.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cuda/ops.h"
#include "kernels/f16.h"
#include "kernels/ggml_type.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/naive_ops.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;

constexpr GgmlType kTypes[] = {
    GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ4_0,
    GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
    GgmlType::kQ8_1, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

bool IsFloatType(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
}

size_t Bytes(GgmlType type, int64_t n) {
  const TypeTraits& t = Traits(type);
  return size_t(n / t.block_elems * t.block_bytes);
}

// Byte offsets of the f16 scale fields inside one block.
std::vector<int> ScaleOffsets(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      return {0};
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_1:  // d and s (s is not used to decode)
    case GgmlType::kQ4_K:  // d and dmin
    case GgmlType::kQ5_K:
      return {0, 2};
    case GgmlType::kQ6_K:
      return {208};
    default:
      return {};
  }
}

enum class Data { kRealistic, kRandomSane, kRandomWild };

const char* DataName(Data d) {
  switch (d) {
    case Data::kRealistic:
      return "Realistic";
    case Data::kRandomSane:
      return "RandomSane";
    default:
      return "RandomWild";
  }
}

// n elements of `type`.
std::vector<uint8_t> MakeData(GgmlType type, int64_t n, Data data,
                              std::mt19937& rng) {
  std::vector<uint8_t> bytes(Bytes(type, n));
  if (data == Data::kRealistic) {
    if (CanQuantize(type)) {
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      std::vector<float> f(static_cast<size_t>(n));
      for (float& x : f) x = u(rng);
      QuantizeRow(type, f.data(), bytes.data(), n);
    } else {  // the test library's sane random blocks
      bytes = naive::RandomWeights(type, 1, n, rng);
    }
    return bytes;
  }
  if (data == Data::kRandomSane && !IsFloatType(type)) {
    if (type == GgmlType::kQ8_1) {  // not a weight type there; sane d below
      for (uint8_t& b : bytes) b = uint8_t(rng());
      std::uniform_real_distribution<float> d(0.002f, 0.05f);
      for (size_t at = 0; at < bytes.size(); at += 36) {
        const uint16_t h = FloatToHalf(d(rng));
        std::memcpy(&bytes[at], &h, 2);
      }
      return bytes;
    }
    return naive::RandomWeights(type, 1, n, rng);
  }
  // Random bits everywhere (float types: every NaN/inf/subnormal pattern),
  // then finite f16 scales of any magnitude and sign for the block types.
  for (uint8_t& b : bytes) b = uint8_t(rng());
  const int64_t block_bytes = Traits(type).block_bytes;
  for (int off : ScaleOffsets(type)) {
    for (size_t at = size_t(off); at < bytes.size();
         at += size_t(block_bytes)) {
      uint16_t h = static_cast<uint16_t>(rng());
      if ((h & 0x7C00u) == 0x7C00u) h &= 0xBFFFu;  // inf/NaN -> finite
      std::memcpy(&bytes[at], &h, 2);
    }
  }
  return bytes;
}

// The reference: DequantizeRow, then RNE to the 16-bit type.
std::vector<uint16_t> Reference(GgmlType from, const uint8_t* src, int64_t n,
                                GgmlType to) {
  std::vector<float> f(static_cast<size_t>(n));
  DequantizeRow(from, src, f.data(), n);
  std::vector<uint16_t> h(static_cast<size_t>(n));
  QuantizeRow(to, f.data(), h.data(), n);
  return h;
}

void ExpectBitsEqual(const std::vector<uint16_t>& got,
                     const std::vector<uint16_t>& want, GgmlType from,
                     int64_t first_index) {
  ASSERT_EQ(got.size(), want.size());
  const int64_t be = Traits(from).block_elems;
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ == 0) {
      const int64_t e = first_index + int64_t(i);
      first = absl::StrCat("element ", e, " (block ", e / be, ", in block ",
                           e % be, "): gpu 0x", absl::Hex(got[i]), " cpu 0x",
                           absl::Hex(want[i]));
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << got.size()
                    << " elements differ; first at " << first;
}

void CheckDequantize(GgmlType from, GgmlType to, int blocks, Data data) {
  // Float types have 1-element blocks; make their lengths odd and larger so
  // the 8-element groups end in a partial one.
  const int64_t n = IsFloatType(from)
                        ? int64_t{blocks} * 37 + 3
                        : int64_t{blocks} * Traits(from).block_elems;
  SCOPED_TRACE(absl::StrCat(TypeName(from), " -> ", TypeName(to), " n ", n,
                            " data ", DataName(data)));
  std::mt19937 rng(static_cast<uint32_t>(from) * 1000u +
                   static_cast<uint32_t>(blocks) * 10u +
                   static_cast<uint32_t>(data));
  const std::vector<uint8_t> src = MakeData(from, n, data, rng);
  const std::vector<uint16_t> want = Reference(from, src.data(), n, to);

  const DeviceBuffer d_src = ToDevice(src);
  // One element of slack so the output can also start misaligned (2 bytes
  // past a 16-byte boundary), which takes the scalar store path.
  DeviceBuffer d_dst((size_t(n) + 8) * sizeof(uint16_t));
  for (const int shift : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("dst shift ", shift));
    ASSERT_EQ(cudaMemset(d_dst.get(), 0xCD, d_dst.bytes()), cudaSuccess);
    LaunchDequantize(from, d_src.get(), n, to, d_dst.as<uint16_t>() + shift,
                     nullptr);
    const std::vector<uint16_t> all = ToHost<uint16_t>(d_dst, size_t(n) + 8);
    const std::vector<uint16_t> got(all.begin() + shift,
                                    all.begin() + shift + n);
    ExpectBitsEqual(got, want, from, 0);
    // Nothing written past the end.
    EXPECT_EQ(all[size_t(n) + size_t(shift)], 0xCDCD);
  }
}

// One test per source type (every test is a process under ctest); the
// target type, the length and the kind of data loop inside.
class DequantizeGpuTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(DequantizeGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  const GgmlType from = GetParam();
  ASSERT_TRUE(CanDequantize(from)) << TypeName(from);
  for (const GgmlType to : {GgmlType::kF16, GgmlType::kBF16}) {
    for (const int blocks : {1, 7, 300}) {
      for (const Data data :
           {Data::kRealistic, Data::kRandomSane, Data::kRandomWild}) {
        CheckDequantize(from, to, blocks, data);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, DequantizeGpuTest, ::testing::ValuesIn(kTypes),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return std::string(TypeName(info.param));
                         });

TEST(DequantizeGpuApiTest, CanDequantizeWeightTypes) {
  for (const GgmlType t : kTypes) EXPECT_TRUE(CanDequantize(t)) << TypeName(t);
  EXPECT_FALSE(CanDequantize(GgmlType::kQ8_K));
}

// More than 2^31 elements (Q4_K, ~1.2 GB in, ~4.3 GB out): blocks at both
// ends hold random data, the zero blocks between decode to +0. Checks that
// 64-bit indexing reaches the end and that nothing wraps onto the start.
TEST(DequantizeGpuLargeTest, BeyondTwoToThe31Elements) {
  KVS_REQUIRE_GPU();
  constexpr int64_t kBlocks = (int64_t{1} << 31) / 256 + 5;
  constexpr int64_t kN = kBlocks * 256;
  constexpr int64_t kEdge = 4;  // random blocks at each end
  DeviceBuffer d_src(size_t(kBlocks) * sizeof(BlockQ4K));
  DeviceBuffer d_dst(size_t(kN) * sizeof(uint16_t));
  ASSERT_NE(d_src.get(), nullptr);
  ASSERT_NE(d_dst.get(), nullptr);
  ASSERT_EQ(cudaMemset(d_src.get(), 0, d_src.bytes()), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_dst.get(), 0xCD, d_dst.bytes()), cudaSuccess);
  std::mt19937 rng(99);
  const std::vector<uint8_t> head =
      naive::RandomWeights(GgmlType::kQ4_K, 1, kEdge * 256, rng);
  const std::vector<uint8_t> tail =
      naive::RandomWeights(GgmlType::kQ4_K, 1, kEdge * 256, rng);
  auto* src = d_src.as<uint8_t>();
  ASSERT_EQ(cudaMemcpy(src, head.data(), head.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(src + d_src.bytes() - tail.size(), tail.data(),
                       tail.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  LaunchDequantize(GgmlType::kQ4_K, d_src.get(), kN, GgmlType::kF16,
                   d_dst.get(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto fetch = [&](int64_t first, int64_t count) {
    std::vector<uint16_t> v(static_cast<size_t>(count));
    EXPECT_EQ(cudaMemcpy(v.data(), d_dst.as<uint16_t>() + first,
                         size_t(count) * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    return v;
  };
  ExpectBitsEqual(
      fetch(0, kEdge * 256),
      Reference(GgmlType::kQ4_K, head.data(), kEdge * 256, GgmlType::kF16),
      GgmlType::kQ4_K, 0);
  ExpectBitsEqual(
      fetch(kN - kEdge * 256, kEdge * 256),
      Reference(GgmlType::kQ4_K, tail.data(), kEdge * 256, GgmlType::kF16),
      GgmlType::kQ4_K, kN - kEdge * 256);
  // Zero blocks in the middle and across 2^31 (the tail's random blocks
  // start at 2^31 + 256).
  for (const int64_t at : {kN / 2, (int64_t{1} << 31) - 512}) {
    const std::vector<uint16_t> z = fetch(at, 768);
    ExpectBitsEqual(z, std::vector<uint16_t>(768, 0), GgmlType::kQ4_K, at);
  }
}

}  // namespace
}  // namespace kvsession::kernels::cuda
