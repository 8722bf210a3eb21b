// The elementwise CUDA ops against their CPU references: SwiGlu, Add,
// AddBias, GatherRows, SplitColumns, SwiGluRounded and ConvertRows, over
// sizes that hit the vectorized and the scalar paths (aligned and misaligned
// pointers, odd lengths), in place.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <utility>
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
using ::kvsession::testing::ToleranceRatio;

template <typename T>
uint32_t Bits(T v) {
  if constexpr (sizeof(T) == 4) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    return u;
  } else {
    return v;
  }
}

// Bitwise comparison; names the first differing element, counts all.
template <typename T>
void ExpectBitsEqual(const std::vector<T>& got, const std::vector<T>& want,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    if (Bits(got[i]) != Bits(want[i]) && bad++ == 0) {
      first =
          absl::StrCat("index ", i, ": gpu 0x", absl::Hex(Bits(got[i])), " (",
                       double(got[i]), ") cpu 0x", absl::Hex(Bits(want[i])),
                       " (", double(want[i]), ")");
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                    << " elements differ; first at " << first;
}

// Copies v to the device `offset` floats past a 256-byte aligned base, so
// offset 1 makes every pointer misaligned for float4.
struct OffsetBuffer {
  DeviceBuffer buf;
  int64_t offset = 0;
  float* get() const { return buf.as<float>() + offset; }
};
OffsetBuffer ToDeviceAt(const std::vector<float>& v, int64_t offset) {
  OffsetBuffer b{DeviceBuffer((v.size() + size_t(offset)) * sizeof(float)),
                 offset};
  EXPECT_EQ(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(float),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  return b;
}
std::vector<float> ToHostAt(const OffsetBuffer& b, size_t n) {
  const std::vector<float> all = ToHost<float>(b.buf, n + size_t(b.offset));
  return std::vector<float>(all.begin() + b.offset, all.end());
}

// Gate values: the bulk in [-20, 20], plus the exp clamp region, zeros,
// tiny values and infinities.
std::vector<float> GateValues(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-20.0f, 20.0f);
  const float specials[] = {
      0.0f,   -0.0f,  1e-30f,  -1e-30f, 88.0f,
      -87.0f, 100.0f, -100.0f, 200.0f,  -200.0f,
      1e-3f,  -1e-3f, 0.5f,    -0.5f,   std::numeric_limits<float>::infinity()};
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    g[size_t(i)] = i % 17 == 5 ? specials[size_t(i / 17) % 15] : u(rng);
  }
  return g;
}

std::vector<float> Uniform(int64_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// Elementwise tests are parameterized by length; pointer offsets of 0 and
// 1 float (aligned and misaligned for float4) loop inside, since every test
// is its own process under ctest.
const auto kLengths = ::testing::Values(1, 3, 4096, 36867, (1 << 20) + 5);

std::string LengthName(const ::testing::TestParamInfo<int>& info) {
  return absl::StrCat("n", info.param);
}

// ---- SwiGlu ----

// Tolerance: the device evaluates the CPU's own exp polynomial with the same
// fma/mul/add/div sequence, so the outputs are expected to be bitwise equal
// (the number of differing elements is printed, and infinities must match
// exactly); the stated parity bound is 1e-6 relative (~8 ulp), with
// 1e-37 absolute for results that underflow.
constexpr double kSwiGluRtol = 1e-6;
constexpr double kSwiGluAtol = 1e-37;

void CheckSwiGlu(int n, int off) {
  SCOPED_TRACE(absl::StrCat("n ", n, " offset ", off));
  std::mt19937 rng(static_cast<uint32_t>(n + off));
  const std::vector<float> gate = GateValues(n, rng);
  const std::vector<float> up = Uniform(n, -3.0f, 3.0f, rng);
  std::vector<float> want(static_cast<size_t>(n));
  SwiGlu(gate.data(), up.data(), n, want.data(), CpuExec{4});

  const OffsetBuffer d_gate = ToDeviceAt(gate, off);
  const OffsetBuffer d_up = ToDeviceAt(up, off);
  OffsetBuffer d_out = ToDeviceAt(std::vector<float>(size_t(n), NAN), off);
  LaunchSwiGlu(d_gate.get(), d_up.get(), n, d_out.get(), nullptr);
  const std::vector<float> got = ToHostAt(d_out, size_t(n));
  std::string where;
  EXPECT_LE(ToleranceRatio(got, want, kSwiGluAtol, kSwiGluRtol, &where), 1.0)
      << "worst at " << where;
  int64_t diffs = 0;
  for (size_t i = 0; i < got.size(); ++i)
    diffs += Bits(got[i]) != Bits(want[i]);
  // Infinities must match exactly, NaN by kind (payloads differ by design
  // between x86 and the GPU).
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      ASSERT_EQ(Bits(got[i]), Bits(want[i]))
          << "index " << i << " gate " << gate[i] << " up " << up[i];
    } else if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i]))
          << "index " << i << " gate " << gate[i] << " up " << up[i];
    }
  }
  std::cout << "[swiglu n " << n << " off " << off << "] " << diffs << " of "
            << n << " elements not bitwise equal to the CPU\n";

  // In place (out aliases gate): same values.
  LaunchSwiGlu(d_gate.get(), d_up.get(), n, d_gate.get(), nullptr);
  ExpectBitsEqual(ToHostAt(d_gate, size_t(n)), got, "in place");
}

class SwiGluGpuTest : public ::testing::TestWithParam<int> {};

TEST_P(SwiGluGpuTest, MatchesCpu) {
  KVS_REQUIRE_GPU();
  for (const int off : {0, 1}) CheckSwiGlu(GetParam(), off);
}

INSTANTIATE_TEST_SUITE_P(Lengths, SwiGluGpuTest, kLengths, LengthName);

// ---- Add ----

// One IEEE f32 add per element on both sides: bitwise.
void CheckAdd(int n, int off) {
  SCOPED_TRACE(absl::StrCat("n ", n, " offset ", off));
  std::mt19937 rng(static_cast<uint32_t>(7 * n + off));
  std::vector<float> a = Uniform(n, -100.0f, 100.0f, rng);
  const std::vector<float> b = Uniform(n, -1.0f, 1.0f, rng);
  std::vector<float> want(static_cast<size_t>(n));
  Add(a.data(), b.data(), n, want.data(), CpuExec{4});
  const OffsetBuffer d_a = ToDeviceAt(a, off);
  const OffsetBuffer d_b = ToDeviceAt(b, off);
  OffsetBuffer d_out = ToDeviceAt(std::vector<float>(size_t(n), NAN), off);
  LaunchAdd(d_a.get(), d_b.get(), n, d_out.get(), nullptr);
  ExpectBitsEqual(ToHostAt(d_out, size_t(n)), want, "out");
  // out aliasing b.
  LaunchAdd(d_a.get(), d_b.get(), n, d_b.get(), nullptr);
  ExpectBitsEqual(ToHostAt(d_b, size_t(n)), want, "out == b");

  // Subnormal operands and results (no flush to zero).
  const std::vector<float> ta = {1e-39f, -3e-39f, 1e-45f};
  const std::vector<float> tb = {2e-39f, 1e-39f, 1e-45f};
  std::vector<float> tw(3);
  Add(ta.data(), tb.data(), 3, tw.data(), CpuExec{1});
  const DeviceBuffer d_ta = ToDevice(ta);
  const DeviceBuffer d_tb = ToDevice(tb);
  DeviceBuffer d_to(3 * sizeof(float));
  LaunchAdd(d_ta.as<float>(), d_tb.as<float>(), 3, d_to.as<float>(), nullptr);
  ExpectBitsEqual(ToHost<float>(d_to, 3), tw, "subnormals");
}

class AddGpuTest : public ::testing::TestWithParam<int> {};

TEST_P(AddGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  for (const int off : {0, 1}) CheckAdd(GetParam(), off);
}

INSTANTIATE_TEST_SUITE_P(Lengths, AddGpuTest, kLengths, LengthName);

// ---- AddBias ----

// One IEEE f32 add per element on both sides: bitwise, out separate and in
// place (out == x), rows of widths below, at and above one CTA's 256
// threads, on aligned and misaligned pointers.
void CheckAddBias(int n_rows, int dim, int off) {
  SCOPED_TRACE(absl::StrCat("n_rows ", n_rows, " dim ", dim, " offset ", off));
  std::mt19937 rng(static_cast<uint32_t>(n_rows * 131 + dim * 7 + off));
  const int64_t n = int64_t{n_rows} * dim;
  const std::vector<float> x = Uniform(n, -100.0f, 100.0f, rng);
  const std::vector<float> bias = Uniform(dim, -1.0f, 1.0f, rng);
  std::vector<float> want(static_cast<size_t>(n));
  AddBias(x.data(), bias.data(), n_rows, dim, want.data(), CpuExec{4});
  const OffsetBuffer d_x = ToDeviceAt(x, off);
  const OffsetBuffer d_bias = ToDeviceAt(bias, off);
  OffsetBuffer d_out = ToDeviceAt(std::vector<float>(size_t(n), NAN), off);
  LaunchAddBias(d_x.get(), d_bias.get(), n_rows, dim, d_out.get(), nullptr);
  ExpectBitsEqual(ToHostAt(d_out, size_t(n)), want, "out");
  // In place: out aliasing x.
  LaunchAddBias(d_x.get(), d_bias.get(), n_rows, dim, d_x.get(), nullptr);
  ExpectBitsEqual(ToHostAt(d_x, size_t(n)), want, "out == x");
}

// Parameterized by dim (1 and 77: fewer threads than a CTA; 896 and 4096:
// Qwen2 widths, several strides); n_rows loops inside.
class AddBiasGpuTest : public ::testing::TestWithParam<int> {};

TEST_P(AddBiasGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  for (const int n_rows : {1, 7, 513}) {
    for (const int off : {0, 1}) CheckAddBias(n_rows, GetParam(), off);
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, AddBiasGpuTest,
                         ::testing::Values(1, 77, 256, 896, 4096),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat("dim", info.param);
                         });

// ---- GatherRows ----

// A copy: bitwise, repeats and the last source row included.
void CheckGatherRows(int n_rows, int dim) {
  SCOPED_TRACE(absl::StrCat("n_rows ", n_rows, " dim ", dim));
  constexpr int kSrcRows = 5000;
  std::mt19937 rng(static_cast<uint32_t>(n_rows * 17 + dim));
  const std::vector<float> src = Uniform(int64_t{kSrcRows} * dim, -5, 5, rng);
  std::vector<int32_t> rows(static_cast<size_t>(n_rows));
  std::uniform_int_distribution<int32_t> r(0, kSrcRows - 1);
  for (int32_t& v : rows) v = r(rng);
  rows[0] = kSrcRows - 1;
  if (n_rows > 2) rows[1] = rows[n_rows - 1];
  std::vector<float> want(size_t(n_rows) * size_t(dim));
  for (int i = 0; i < n_rows; ++i) {
    std::memcpy(want.data() + size_t(i) * dim,
                src.data() + size_t(rows[i]) * dim,
                size_t(dim) * sizeof(float));
  }
  const DeviceBuffer d_src = ToDevice(src);
  const DeviceBuffer d_rows = ToDevice(rows);
  DeviceBuffer d_dst(want.size() * sizeof(float));
  LaunchGatherRows(d_src.as<float>(), d_rows.as<int32_t>(), n_rows, dim,
                   d_dst.as<float>(), nullptr);
  ExpectBitsEqual(ToHost<float>(d_dst, want.size()), want, "dst");
}

// Parameterized by dim (1, 77: the scalar path; the others: float4);
// n_rows loops inside.
class GatherRowsGpuTest : public ::testing::TestWithParam<int> {};

TEST_P(GatherRowsGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  for (const int n_rows : {1, 64, 3000}) CheckGatherRows(n_rows, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Dims, GatherRowsGpuTest,
                         ::testing::Values(1, 64, 77, 576, 4096),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat("dim", info.param);
                         });

// ---- SplitColumns ----

// A copy: bitwise equal to the CPU SplitColumns, buffers past each
// segment's rows untouched.
void CheckSplitColumns(int n_rows, const std::vector<int64_t>& widths) {
  SCOPED_TRACE(absl::StrCat("n_rows ", n_rows, " segments ", widths.size(),
                            " first width ", widths[0]));
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  std::mt19937 rng(static_cast<uint32_t>(n_rows * 31 + total));
  const std::vector<float> src = Uniform(int64_t{n_rows} * total, -5, 5, rng);
  constexpr int kSpareRows = 2;  // must keep their fill
  std::vector<std::vector<float>> want;
  std::vector<float*> want_ptrs;
  std::vector<DeviceBuffer> d_dsts;
  std::vector<float*> d_ptrs;
  for (int64_t w : widths) {
    want.emplace_back(size_t(n_rows + kSpareRows) * size_t(w), 7.0f);
    want_ptrs.push_back(want.back().data());
    d_dsts.push_back(ToDevice(want.back()));
    d_ptrs.push_back(d_dsts.back().as<float>());
  }
  SplitColumns(src.data(), n_rows, widths, want_ptrs, CpuExec{2});
  const DeviceBuffer d_src = ToDevice(src);
  LaunchSplitColumns(d_src.as<float>(), n_rows, widths, d_ptrs, nullptr);
  for (size_t i = 0; i < widths.size(); ++i) {
    ExpectBitsEqual(ToHost<float>(d_dsts[i], want[i].size()), want[i],
                    absl::StrCat("segment ", i));
  }
}

TEST(SplitColumnsGpuTest, BitwiseEqualsCpu) {
  KVS_REQUIRE_GPU();
  // Q, K, V of Llama-3-8B and of the default model; odd widths; one and
  // four segments.
  for (const int n_rows : {1, 64, 513}) {
    CheckSplitColumns(n_rows, {4096, 1024, 1024});
    CheckSplitColumns(n_rows, {576, 192, 192});
    CheckSplitColumns(n_rows, {5, 300, 1, 77});
    CheckSplitColumns(n_rows, {1000});
  }
}

// ---- SwiGluRounded ----

// SwiGlu then ConvertRows on the device, against the fused op: bitwise,
// padding rows zero.
TEST(SwiGluRoundedGpuTest, BitwiseEqualsSwiGluAndConvert) {
  KVS_REQUIRE_GPU();
  // (rows, rows padded to a GEMM chunk)
  const std::pair<int, int> kRowCases[] = {{1, 64}, {70, 128}};
  for (const GgmlType to : {GgmlType::kBF16, GgmlType::kF16}) {
    for (const int dim : {77, 1536, 14336}) {
      for (const auto& [n_rows, padded] : kRowCases) {
        SCOPED_TRACE(absl::StrCat(TypeName(to), " dim ", dim, " rows ", n_rows,
                                  "/", padded));
        std::mt19937 rng(static_cast<uint32_t>(dim + n_rows));
        const int64_t n = int64_t{n_rows} * dim;
        const DeviceBuffer gate = ToDevice(Uniform(n, -8, 8, rng));
        const DeviceBuffer up = ToDevice(Uniform(n, -3, 3, rng));
        const size_t out_elems = size_t(padded) * size_t(dim);
        DeviceBuffer act(n * sizeof(float));
        DeviceBuffer want(out_elems * 2);
        LaunchSwiGlu(gate.as<float>(), up.as<float>(), n, act.as<float>(),
                     nullptr);
        LaunchConvertRows(act.as<float>(), n_rows, padded, dim, dim, to,
                          want.get(), nullptr);
        DeviceBuffer got(out_elems * 2);
        ASSERT_EQ(cudaMemset(got.get(), 0xab, got.bytes()), cudaSuccess);
        LaunchSwiGluRounded(gate.as<float>(), up.as<float>(), n_rows, padded,
                            dim, to, got.get(), nullptr);
        ExpectBitsEqual(ToHost<uint16_t>(got, out_elems),
                        ToHost<uint16_t>(want, out_elems), "rounded");
      }
    }
  }
}

// ---- ConvertRows ----

// f32 values that exercise RNE to F16 and BF16: ordinary values, every
// exponent range (f16 subnormals, underflow, overflow to inf), exact ties,
// NaNs with payloads (quiet and signalling, both signs), infinities and
// random bit patterns.
float ConvertValue(std::mt19937& rng) {
  switch (rng() % 8) {
    case 0: {
      std::uniform_int_distribution<int> e(-30, 17);
      std::uniform_real_distribution<float> m(1.0f, 2.0f);
      const float x = std::ldexp(m(rng), e(rng));
      return rng() % 2 ? x : -x;
    }
    case 1: {
      // Midpoint of two adjacent finite f16 values, exact in f32.
      const uint16_t a = static_cast<uint16_t>(rng() % 0x7BFF);
      const float x = 0.5f * (HalfToFloat(a) + HalfToFloat(a + 1));
      return rng() % 2 ? x : -x;
    }
    case 2: {
      // A bf16 tie: low 16 bits exactly 0x8000.
      const uint32_t u = (rng() & 0xFFFF0000u) | 0x8000u;
      float x;
      std::memcpy(&x, &u, 4);
      return std::isnan(x) ? 1.0f : x;
    }
    case 3: {
      const uint32_t specials[] = {
          0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u,   // 0, inf
          0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x7FA5A5A5u,   // NaNs
          0xFF812345u, 0x477FE000u, 0x477FEFFFu, 0x477FF000u,   // f16 max
          0x33800000u, 0x33000000u, 0x33000001u, 0x00000001u,   // tiny
          0x387FE000u, 0x38800000u, 0x7F7FFFFFu, 0x7F7F8000u};  // bf16 max
      const uint32_t u = specials[rng() % 20];
      float x;
      std::memcpy(&x, &u, 4);
      return x;
    }
    case 4: {
      const uint32_t u = static_cast<uint32_t>(rng());
      float x;
      std::memcpy(&x, &u, 4);
      return x;
    }
    default: {
      std::uniform_real_distribution<float> u(-4.0f, 4.0f);
      return u(rng);
    }
  }
}

struct ConvertCase {
  int n_rows;
  int n_rows_padded;
  int n_cols;
  int ld_out;
};

// Rows < n_rows: bitwise QuantizeRow of the row. Padding rows: n_cols zeros.
// Columns n_cols .. ld_out - 1: never written (keep the 0xABAB fill).
void CheckConvertRows(GgmlType to, const ConvertCase& c) {
  SCOPED_TRACE(absl::StrCat(TypeName(to), " n_rows ", c.n_rows,
                            " n_rows_padded ", c.n_rows_padded, " n_cols ",
                            c.n_cols, " ld_out ", c.ld_out));
  std::mt19937 rng(static_cast<uint32_t>(c.n_rows * 3 + c.n_cols));
  std::vector<float> x(size_t(c.n_rows) * size_t(c.n_cols));
  for (float& v : x) v = ConvertValue(rng);
  constexpr uint16_t kFill = 0xABAB;
  const size_t out_elems = size_t(c.n_rows_padded) * size_t(c.ld_out);
  std::vector<uint16_t> want(out_elems, kFill);
  for (int r = 0; r < c.n_rows_padded; ++r) {
    uint16_t* row = want.data() + size_t(r) * c.ld_out;
    if (r < c.n_rows) {
      QuantizeRow(to, x.data() + size_t(r) * c.n_cols, row, c.n_cols);
    } else {
      std::fill(row, row + c.n_cols, uint16_t{0});
    }
  }
  const DeviceBuffer d_x = ToDevice(x);
  DeviceBuffer d_out = ToDevice(std::vector<uint16_t>(out_elems, kFill));
  LaunchConvertRows(d_x.as<float>(), c.n_rows, c.n_rows_padded, c.n_cols,
                    c.ld_out, to, d_out.get(), nullptr);
  const std::vector<uint16_t> got = ToHost<uint16_t>(d_out, out_elems);
  ASSERT_EQ(got.size(), want.size());
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ == 0) {
      const size_t r = i / size_t(c.ld_out), col = i % size_t(c.ld_out);
      const float in = r < size_t(c.n_rows) && col < size_t(c.n_cols)
                           ? x[r * size_t(c.n_cols) + col]
                           : 0.0f;
      first = absl::StrCat("row ", r, " col ", col, ": gpu 0x",
                           absl::Hex(got[i]), " cpu 0x", absl::Hex(want[i]),
                           " input 0x", absl::Hex(Bits(in)), " (", in, ")");
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << got.size()
                    << " elements differ; first at " << first;
}

// Parameterized by target type; the shapes (n_rows, n_rows_padded, n_cols,
// ld_out) loop inside.
class ConvertRowsGpuTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(ConvertRowsGpuTest, BitwiseEqualsQuantizeRow) {
  KVS_REQUIRE_GPU();
  for (const ConvertCase& c :
       {ConvertCase{1, 1, 64, 64}, ConvertCase{5, 8, 576, 576},
        ConvertCase{64, 64, 4096, 4104}, ConvertCase{3000, 3008, 77, 80},
        ConvertCase{0, 16, 64, 64}, ConvertCase{7, 7, 1, 3},
        // Several column tiles of 2048: whole, a last tile of one vector,
        // and the scalar path across tiles.
        ConvertCase{1, 64, 14336, 14336}, ConvertCase{2, 64, 2056, 2064},
        ConvertCase{3, 4, 4100, 4100}}) {
    CheckConvertRows(GetParam(), c);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, ConvertRowsGpuTest,
                         ::testing::Values(GgmlType::kF16, GgmlType::kBF16),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return std::string(TypeName(info.param));
                         });

}  // namespace
}  // namespace kvsession::kernels::cuda
