// LaunchFillRandom against the CPU FillRandom: bitwise equal for F32, F16
// and BF16, over seeds, scales (including ones that make f16 subnormals and
// overflow to inf) and lengths; and beyond 2^31 elements.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
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
using ::kvsession::testing::ToHost;

size_t ElemBytes(GgmlType type) { return type == GgmlType::kF32 ? 4 : 2; }

// Compares raw bytes element by element; names the first difference.
void ExpectBytesEqual(const std::vector<uint8_t>& got,
                      const std::vector<uint8_t>& want, size_t elem,
                      int64_t first_index) {
  ASSERT_EQ(got.size(), want.size());
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); i += elem) {
    if (std::memcmp(&got[i], &want[i], elem) != 0 && bad++ == 0) {
      uint32_t g = 0, w = 0;
      std::memcpy(&g, &got[i], elem);
      std::memcpy(&w, &want[i], elem);
      first = absl::StrCat("element ", first_index + int64_t(i / elem),
                           ": gpu 0x", absl::Hex(g), " cpu 0x", absl::Hex(w));
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << got.size() / elem
                    << " elements differ; first at " << first;
}

void CheckFillRandom(GgmlType type, int n, uint64_t seed, float scale) {
  SCOPED_TRACE(
      absl::StrCat(TypeName(type), " n ", n, " seed ", seed, " scale ", scale));
  const size_t bytes = size_t(n) * ElemBytes(type);
  std::vector<uint8_t> want(bytes);
  FillRandom(type, want.data(), n, seed, scale, CpuExec{4});
  DeviceBuffer d(bytes);
  ASSERT_EQ(cudaMemset(d.get(), 0xCD, bytes), cudaSuccess);
  LaunchFillRandom(type, d.get(), n, seed, scale, nullptr);
  ExpectBytesEqual(ToHost<uint8_t>(d, bytes), want, ElemBytes(type), 0);
}

// One test per type (every test is a process under ctest); lengths, seeds
// and scales loop inside. Scale 1e-6 makes f16 subnormals, 7e4 overflows
// f16 to inf.
class FillRandomGpuTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(FillRandomGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  for (const int n : {1, 1000, (1 << 20) + 3}) {
    for (const uint64_t seed : {uint64_t{0}, uint64_t{42}, ~uint64_t{0}}) {
      for (const float scale : {1.0f, 0.02f, 1e-6f, 7e4f}) {
        CheckFillRandom(GetParam(), n, seed, scale);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, FillRandomGpuTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16,
                                           GgmlType::kBF16),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return std::string(TypeName(info.param));
                         });

// More than 2^31 F16 elements: the values past 2^31 use the 64-bit index.
TEST(FillRandomGpuLargeTest, BeyondTwoToThe31Elements) {
  KVS_REQUIRE_GPU();
  constexpr int64_t kN = (int64_t{1} << 31) + 1000;
  constexpr uint64_t kSeed = 1234;
  constexpr float kScale = 0.5f;
  DeviceBuffer d(size_t(kN) * 2);
  ASSERT_NE(d.get(), nullptr);
  LaunchFillRandom(GgmlType::kF16, d.get(), kN, kSeed, kScale, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (const int64_t first :
       {int64_t{0}, (int64_t{1} << 31) - 500, kN - 1000}) {
    constexpr int64_t kCount = 1000;
    std::vector<uint8_t> got(kCount * 2);
    ASSERT_EQ(cudaMemcpy(got.data(), d.as<uint16_t>() + first, got.size(),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    std::vector<uint8_t> want(kCount * 2);
    for (int64_t i = 0; i < kCount; ++i) {
      const uint16_t h = FloatToHalf(
          RandomUnit(kSeed, static_cast<uint64_t>(first + i)) * kScale);
      std::memcpy(&want[size_t(i) * 2], &h, 2);
    }
    SCOPED_TRACE(absl::StrCat("elements from ", first));
    ExpectBytesEqual(got, want, 2, first);
  }
}

}  // namespace
}  // namespace kvsession::kernels::cuda
