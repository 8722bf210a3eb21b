// The cuBLASLt weight GEMM against the CPU MatMul, and its batch invariance:
// a token's output row is bitwise the same whatever the number of tokens
// in the call and the token's place among them.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/gemm.h"
#include "kernels/f16.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;

struct GemmCase {
  int64_t rows, cols;
  GgmlType type;
  int32_t columns;
};

std::string Name(const ::testing::TestParamInfo<GemmCase>& info) {
  return absl::StrCat(info.param.rows, "x", info.param.cols, "_",
                      TypeName(info.param.type), "_n", info.param.columns);
}

class GemmTest : public ::testing::TestWithParam<GemmCase> {
 protected:
  void SetUp() override {
    KVS_REQUIRE_GPU();
    const GemmCase& c = GetParam();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    Gemm::Options o;
    o.columns = c.columns;
    auto g = Gemm::Create(o, stream_);
    ASSERT_TRUE(g.ok()) << g.status();
    gemm_ = *std::move(g);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    host_w_.resize(c.rows * c.cols);
    for (uint16_t& x : host_w_) {
      const float f = u(rng) * 0.1f;
      x = c.type == GgmlType::kBF16 ? FloatToBf16(f) : FloatToHalf(f);
    }
    dev_w_ = ToDevice(host_w_);
    w_.type = c.type;
    w_.rows = c.rows;
    w_.cols = c.cols;
    w_.row_bytes = c.cols * 2;
    w_.data = dev_w_.get();
    absl::Status s = gemm_->Prepare(w_);
    ASSERT_TRUE(s.ok()) << s;
  }
  void TearDown() override {
    gemm_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::vector<float> Run(const std::vector<float>& x, int64_t n) {
    DeviceBuffer dx = ToDevice(x);
    DeviceBuffer dout(n * w_.rows * sizeof(float));
    gemm_->MatMul(w_, dx.as<float>(), n, dout.as<float>());
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    return ToHost<float>(dout, n * w_.rows);
  }

  std::vector<float> RandomX(int64_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    std::vector<float> x(n * w_.cols);
    for (float& v : x) v = u(rng);
    return x;
  }

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
  std::vector<uint16_t> host_w_;
  DeviceBuffer dev_w_;
  WeightView w_;
};

TEST_P(GemmTest, MatchesCpuMatMul) {
  const GemmCase& c = GetParam();
  for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{c.columns},
                    int64_t{c.columns + 5}}) {
    std::vector<float> x = RandomX(n, 11 + n);
    // The GPU rounds x to the weight type before the product; the
    // reference gets the same rounded x so the tolerance only covers the
    // summation order (f32 accumulate on both sides).
    std::vector<float> xr(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      xr[i] = c.type == GgmlType::kBF16 ? Bf16ToFloat(FloatToBf16(x[i]))
                                        : HalfToFloat(FloatToHalf(x[i]));
    }
    WeightView hw = w_;
    hw.data = host_w_.data();
    std::vector<float> want(n * c.rows);
    MatMul(hw, xr.data(), n, want.data(), CpuExec{4});
    std::vector<float> got = Run(x, n);
    std::string where;
    // Both sides accumulate in f32, in different orders (tiles, split-K):
    // the error of a sum of K random-sign terms of size ~0.1 grows like
    // sqrt(K); 2e-5 * sqrt(K) is far above it and far below the O(1) error
    // of a wrong row, column or chunk.
    const double atol = 2e-5 * std::sqrt(static_cast<double>(c.cols));
    const double ratio =
        ::kvsession::testing::ToleranceRatio(got, want, atol, 1e-4, &where);
    EXPECT_LE(ratio, 1.0) << "n=" << n << " " << where;
  }
}

TEST_P(GemmTest, RowsDoNotDependOnTheBatch) {
  const GemmCase& c = GetParam();
  const int64_t big = 2 * c.columns + 7;
  std::vector<float> x = RandomX(big, 5);
  std::vector<float> all = Run(x, big);
  // Each token alone, and a window of tokens starting elsewhere.
  for (int64_t t : {int64_t{0}, int64_t{1}, int64_t{c.columns - 1},
                    int64_t{c.columns}, big - 1}) {
    std::vector<float> one(x.begin() + t * c.cols,
                           x.begin() + (t + 1) * c.cols);
    std::vector<float> got = Run(one, 1);
    EXPECT_EQ(std::memcmp(got.data(), all.data() + t * c.rows,
                          c.rows * sizeof(float)),
              0)
        << "token " << t << " alone differs from the batch of " << big;
  }
  const int64_t start = 3;
  const int64_t n = c.columns + 2;
  std::vector<float> window(x.begin() + start * c.cols,
                            x.begin() + (start + n) * c.cols);
  std::vector<float> got = Run(window, n);
  EXPECT_EQ(std::memcmp(got.data(), all.data() + start * c.rows,
                        n * c.rows * sizeof(float)),
            0)
      << "a window of " << n << " tokens differs from the batch";
}

// Several weights over one input (rounded once), and outputs written as
// whole chunks in place: the valid rows equal single MatMul calls bit for
// bit.
TEST_P(GemmTest, SharedInputAndPaddedOutputGiveTheSameRows) {
  const GemmCase& c = GetParam();
  const int64_t n = c.columns + 3;
  const int64_t padded = 2 * c.columns;
  std::vector<float> x = RandomX(n, 9);
  std::vector<float> want = Run(x, n);
  DeviceBuffer dx = ToDevice(x);
  DeviceBuffer a(padded * c.rows * sizeof(float));
  DeviceBuffer b(padded * c.rows * sizeof(float));
  const WeightView* ws[2] = {&w_, &w_};
  float* outs[2] = {a.as<float>(), b.as<float>()};
  gemm_->MatMuls(ws, dx.as<float>(), n, outs, /*padded_out=*/true);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  for (const DeviceBuffer* d : {&a, &b}) {
    std::vector<float> got = ToHost<float>(*d, n * c.rows);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)),
              0);
  }
}

// Weights stored back to back (Q, K and V) run as one GEMM of their joined
// shape, split into their outputs: each part's rows are bitwise the rows of
// the whole weight's own product. Weights that are not adjacent run apart.
TEST_P(GemmTest, AdjacentWeightsRunAsOneGemm) {
  const GemmCase& c = GetParam();
  const int64_t r0 = c.rows / 2, r1 = c.rows / 4, r2 = c.rows - r0 - r1;
  WeightView parts[3] = {w_, w_, w_};
  int64_t first = 0;
  for (int i = 0; i < 3; ++i) {
    parts[i].rows = i == 0 ? r0 : i == 1 ? r1 : r2;
    parts[i].data = static_cast<const uint8_t*>(w_.data) + first * w_.row_bytes;
    first += parts[i].rows;
    ASSERT_TRUE(gemm_->Prepare(parts[i]).ok());
  }
  const WeightView* ws[3] = {&parts[0], &parts[1], &parts[2]};
  WeightView joined;
  ASSERT_TRUE(Gemm::Joined(ws, &joined));
  EXPECT_EQ(joined.rows, c.rows);
  EXPECT_EQ(joined.data, w_.data);

  const int64_t n = c.columns + 3;
  const int64_t padded = 2 * c.columns;
  std::vector<float> x = RandomX(n, 13);
  std::vector<float> whole = Run(x, n);
  DeviceBuffer dx = ToDevice(x);
  std::vector<DeviceBuffer> outs_buf;
  float* outs[3];
  for (int i = 0; i < 3; ++i) {
    outs_buf.emplace_back(padded * parts[i].rows * sizeof(float));
    outs[i] = outs_buf.back().as<float>();
  }
  const int64_t runs = gemm_->joined_runs();
  gemm_->MatMuls(ws, dx.as<float>(), n, outs, /*padded_out=*/true);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(gemm_->joined_runs(), runs + 1);
  int64_t offset = 0;
  for (int i = 0; i < 3; ++i) {
    const std::vector<float> got =
        ToHost<float>(outs_buf[i], n * parts[i].rows);
    for (int64_t t = 0; t < n; ++t) {
      ASSERT_EQ(std::memcmp(got.data() + t * parts[i].rows,
                            whole.data() + t * c.rows + offset,
                            parts[i].rows * sizeof(float)),
                0)
          << "part " << i << " token " << t;
    }
    offset += parts[i].rows;
  }

  // Out of order, the parts are not adjacent: three GEMMs.
  const WeightView* shuffled[3] = {&parts[1], &parts[0], &parts[2]};
  EXPECT_FALSE(Gemm::Joined(shuffled, &joined));
  float* souts[3] = {outs[1], outs[0], outs[2]};
  gemm_->MatMuls(shuffled, dx.as<float>(), n, souts, /*padded_out=*/true);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(gemm_->joined_runs(), runs + 1);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmTest,
    ::testing::Values(GemmCase{576, 576, GgmlType::kF16, 64},
                      GemmCase{192, 576, GgmlType::kF16, 64},
                      GemmCase{1536, 576, GgmlType::kF16, 64},
                      GemmCase{576, 1536, GgmlType::kF16, 64},
                      GemmCase{4096, 4096, GgmlType::kBF16, 64},
                      GemmCase{1024, 4096, GgmlType::kBF16, 64},
                      GemmCase{4096, 14336, GgmlType::kBF16, 64},
                      GemmCase{49152, 576, GgmlType::kF16, 64},
                      GemmCase{4096, 4096, GgmlType::kBF16, 128},
                      GemmCase{1000, 384, GgmlType::kF16, 16}),
    Name);

}  // namespace
}  // namespace kvsession::kernels::cuda
