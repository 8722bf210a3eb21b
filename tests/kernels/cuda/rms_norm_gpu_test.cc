// LaunchRmsNorm against the CPU RmsNorm, and its batch invariance: a row's
// output bits do not depend on how many rows are normalized with it.
// LaunchAddRmsNormRounded against the device ops it fuses.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;
using ::kvsession::testing::ToleranceRatio;

// Tolerance against the CPU: both sum the f32 squares in double (the CPU
// sequentially, the GPU as a fixed tree), so the f32 mean differs at most by
// one rounding in rare rows; the rest is the same f32 sequence. 1e-5
// relative covers a few ulp of scale with a wide margin; 1e-6 absolute only
// matters for outputs that are ~0 anyway.
constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-6;

int64_t CountBitDiffs(const std::vector<float>& a,
                      const std::vector<float>& b) {
  int64_t n = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    n += std::memcmp(&a[i], &b[i], 4) != 0;
  }
  return n;
}

// Rows of uniform values, with every 5th row scaled up and every 7th down,
// so the mean spans many binades.
std::vector<float> MakeRows(int64_t rows, int64_t dim, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(size_t(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    const float s = r % 5 == 4 ? 1000.0f : r % 7 == 6 ? 1e-3f : 1.0f;
    for (int64_t i = 0; i < dim; ++i) x[size_t(r * dim + i)] = u(rng) * s;
  }
  return x;
}

// Norm weights in [0.5, 1.5).
std::vector<float> NormWeights(int64_t dim, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::vector<float> w(static_cast<size_t>(dim));
  for (float& v : w) v = u(rng);
  return w;
}

// One test per dim (each test is a process under ctest, so the row counts
// and eps values loop inside).
class RmsNormGpuTest : public ::testing::TestWithParam<int> {};

TEST_P(RmsNormGpuTest, MatchesCpu) {
  KVS_REQUIRE_GPU();
  const int dim = GetParam();
  for (const int n_rows : {1, 7, 64, 3000}) {
    std::mt19937 rng(static_cast<uint32_t>(n_rows * 131 + dim));
    const std::vector<float> x = MakeRows(n_rows, dim, rng);
    const std::vector<float> w = NormWeights(dim, rng);
    const DeviceBuffer d_x = ToDevice(x);
    const DeviceBuffer d_w = ToDevice(w);
    DeviceBuffer d_out(x.size() * sizeof(float));
    for (const float eps : {1e-5f, 1e-6f}) {
      SCOPED_TRACE(absl::StrCat("n_rows ", n_rows, " dim ", dim, " eps ", eps));
      std::vector<float> want(x.size());
      RmsNorm(x.data(), w.data(), n_rows, dim, eps, want.data(), CpuExec{4});
      LaunchRmsNorm(d_x.as<float>(), d_w.as<float>(), n_rows, dim, eps,
                    d_out.as<float>(), nullptr);
      const std::vector<float> got = ToHost<float>(d_out, x.size());
      std::string where;
      const double ratio = ToleranceRatio(got, want, kAtol, kRtol, &where);
      EXPECT_LE(ratio, 1.0)
          << "worst at " << where << " (row = index / " << dim << ")";
      std::cout << "[rms_norm n_rows " << n_rows << " dim " << dim << " eps "
                << eps << "] " << CountBitDiffs(got, want) << " of "
                << got.size() << " elements not bitwise equal to the CPU\n";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, RmsNormGpuTest,
                         ::testing::Values(33, 64, 576, 1000, 4096),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat("dim", info.param);
                         });

// Rows normalized one at a time, in place, equal the same rows inside a
// batch of 3000, bit for bit.
TEST(RmsNormGpuInvarianceTest, RowBitsIndependentOfBatch) {
  KVS_REQUIRE_GPU();
  constexpr int64_t kRows = 3000, kDim = 576;
  std::mt19937 rng(11);
  const std::vector<float> x = MakeRows(kRows, kDim, rng);
  const std::vector<float> w = NormWeights(kDim, rng);
  const DeviceBuffer d_x = ToDevice(x);
  const DeviceBuffer d_w = ToDevice(w);
  DeviceBuffer d_batch(x.size() * sizeof(float));
  LaunchRmsNorm(d_x.as<float>(), d_w.as<float>(), kRows, kDim, 1e-5f,
                d_batch.as<float>(), nullptr);
  const std::vector<float> batch = ToHost<float>(d_batch, x.size());
  DeviceBuffer d_single = ToDevice(x);  // normalized in place, row by row
  for (const int64_t r : {int64_t{0}, int64_t{1}, int64_t{4}, int64_t{6},
                          int64_t{1234}, kRows - 1}) {
    float* row = d_single.as<float>() + r * kDim;
    LaunchRmsNorm(row, d_w.as<float>(), 1, kDim, 1e-5f, row, nullptr);
    const std::vector<float> all = ToHost<float>(d_single, x.size());
    EXPECT_EQ(0, std::memcmp(all.data() + r * kDim, batch.data() + r * kDim,
                             kDim * sizeof(float)))
        << "row " << r;
  }
}

// The fused op (residual add, norm and rounding for a GEMM input in one
// launch) against the three ops it replaces, run on the device: bitwise,
// for x after the add and for every rounded element, padding rows zero.
TEST(AddRmsNormRoundedGpuTest, BitwiseEqualsAddRmsNormAndConvert) {
  KVS_REQUIRE_GPU();
  // (rows, rows padded to a GEMM chunk)
  const std::pair<int, int> kRowCases[] = {{1, 64}, {5, 8}, {70, 128}};
  for (const GgmlType to : {GgmlType::kBF16, GgmlType::kF16}) {
    for (const bool residual : {false, true}) {
      for (const int dim : {77, 576, 4096}) {
        for (const auto& [n_rows, padded] : kRowCases) {
          SCOPED_TRACE(absl::StrCat(TypeName(to), " residual ", residual,
                                    " dim ", dim, " rows ", n_rows, "/",
                                    padded));
          std::mt19937 rng(static_cast<uint32_t>(dim * 7 + n_rows));
          const std::vector<float> x = MakeRows(n_rows, dim, rng);
          const std::vector<float> r = MakeRows(n_rows, dim, rng);
          const std::vector<float> w = NormWeights(dim, rng);
          const DeviceBuffer d_w = ToDevice(w);
          const DeviceBuffer d_r = ToDevice(r);
          const size_t out_elems = size_t(padded) * size_t(dim);

          // The three ops.
          DeviceBuffer x3 = ToDevice(x);
          DeviceBuffer norm(x.size() * sizeof(float));
          DeviceBuffer want(out_elems * 2);
          if (residual) {
            LaunchAdd(x3.as<float>(), d_r.as<float>(), n_rows * dim,
                      x3.as<float>(), nullptr);
          }
          LaunchRmsNorm(x3.as<float>(), d_w.as<float>(), n_rows, dim, 1e-5f,
                        norm.as<float>(), nullptr);
          LaunchConvertRows(norm.as<float>(), n_rows, padded, dim, dim, to,
                            want.get(), nullptr);

          // The fused op, over an output full of garbage.
          DeviceBuffer x1 = ToDevice(x);
          DeviceBuffer got(out_elems * 2);
          ASSERT_EQ(cudaMemset(got.get(), 0xab, got.bytes()), cudaSuccess);
          LaunchAddRmsNormRounded(x1.as<float>(),
                                  residual ? d_r.as<float>() : nullptr,
                                  d_w.as<float>(), n_rows, padded, dim, 1e-5f,
                                  to, got.get(), nullptr);
          EXPECT_EQ(ToHost<uint16_t>(got, out_elems),
                    ToHost<uint16_t>(want, out_elems));
          EXPECT_EQ(CountBitDiffs(ToHost<float>(x1, x.size()),
                                  ToHost<float>(x3, x.size())),
                    0);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvsession::kernels::cuda
