// CudaBackend's own logic around the ops: attention run in token slices
// under a workspace cap, recorded steps that follow the attention
// partition, fused GEMM inputs, and the block sizes the backend accepts.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/ops.h"
#include "kernels/f16.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;

constexpr int32_t kHeads = 4;
constexpr int32_t kKvHeads = 2;
constexpr int32_t kHeadDim = 64;
constexpr int32_t kBlock = 16;
constexpr int32_t kBlocks = 40;  // 640 positions

std::unique_ptr<CudaBackend> MakeBackend(int32_t partition,
                                         size_t workspace_bytes) {
  CudaBackend::Options o;
  o.attention_partition = partition;
  o.attention_workspace_bytes = workspace_bytes;
  absl::StatusOr<std::unique_ptr<CudaBackend>> b = CudaBackend::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

// One sequence of kBlocks shuffled blocks of random f16 K/V, random
// queries, and the tokens of one step at `positions`.
struct AttentionStep {
  std::unique_ptr<Buffer> arena, q, out;
  KvCacheView kv;
  std::vector<int32_t> table;
  std::vector<int32_t> positions;
  std::vector<const int32_t*> tables;
  std::vector<int32_t> tokens;
  AttentionParams params{kHeads, 0.125f};

  AttentionStep(CudaBackend& be, std::vector<int32_t> pos)
      : positions(std::move(pos)) {
    kv.num_blocks = kBlocks;
    kv.block_size = kBlock;
    kv.n_layers = 1;
    kv.n_kv_heads = kKvHeads;
    kv.head_dim = kHeadDim;
    const int64_t elems = int64_t{kBlocks} * kv.BlockElems();
    arena = *be.Allocate(static_cast<size_t>(elems) * 2);
    kv.base = arena->as<uint16_t>();
    be.FillRandom(GgmlType::kF16, kv.base, elems, 17, 1.0f);
    const int64_t n = static_cast<int64_t>(positions.size());
    q = *be.Allocate(static_cast<size_t>(n * kHeads * kHeadDim) * 4);
    be.FillRandom(GgmlType::kF32, q->data(), n * kHeads * kHeadDim, 23, 3.0f);
    out = *be.Allocate(static_cast<size_t>(n * kHeads * kHeadDim) * 4);
    table.resize(kBlocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(5));
    tables.assign(positions.size(), table.data());
    tokens.assign(positions.size(), 0);
    be.Synchronize();
  }

  TokenPlacement Placement() const {
    return {static_cast<int32_t>(positions.size()), positions.data(),
            tables.data()};
  }

  // One step holding only the attention op, recorded or replayed as the
  // backend decides; returns the output.
  std::vector<float> Step(CudaBackend& be) {
    StepInputs in;
    in.tokens = tokens.data();
    in.placement = Placement();
    in.block_size = kBlock;
    in.kv_base = kv.base;
    be.RunStep(in, [&](const StepViews& v) {
      be.Attention(kv, 0, v.placement, q->as<float>(), params,
                   out->as<float>());
    });
    const size_t n = positions.size() * kHeads * kHeadDim;
    std::vector<float> host(n);
    be.CopyToHost(out->data(), host.data(), n * sizeof(float));
    return host;
  }
};

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(CudaBackendTest, AttentionInTokenSlicesEqualsOneLaunch) {
  KVS_REQUIRE_GPU();
  for (const int32_t partition : {64, 256}) {
    SCOPED_TRACE(::testing::Message() << "partition " << partition);
    std::vector<int32_t> positions(100);
    std::iota(positions.begin(), positions.end(), 400);  // a prefill chunk
    const int32_t max_pos = 499;
    const size_t per_token =
        static_cast<size_t>(AttentionWorkspaceFloats(1, kHeads, kHeadDim,
                                                     partition, max_pos)) *
        sizeof(float);
    // Caps of 1 token, 7 tokens (a ragged last slice) and the whole batch.
    std::vector<std::vector<float>> results;
    for (const size_t cap : {size_t{1}, per_token * 7, size_t{1} << 30}) {
      auto be = MakeBackend(partition, cap);
      ASSERT_NE(be, nullptr);
      AttentionStep s(*be, positions);
      const std::vector<float> got = s.Step(*be);

      // The op launched once over the whole batch, on its own uploads.
      const DeviceBuffer d_pos = ToDevice(s.positions);
      const DeviceBuffer d_table = ToDevice(s.table);
      const std::vector<const int32_t*> d_tables(positions.size(),
                                                 d_table.as<int32_t>());
      const DeviceBuffer d_tab = ToDevice(d_tables);
      DeviceBuffer ws(per_token * positions.size());
      DeviceBuffer ref(got.size() * sizeof(float));
      LaunchAttention(s.kv, 0,
                      {static_cast<int32_t>(positions.size()),
                       d_pos.as<int32_t>(), d_tab.as<const int32_t* const>()},
                      s.q->as<float>(), s.params, partition, max_pos,
                      ws.as<float>(), ref.as<float>(), be->stream());
      EXPECT_TRUE(SameBits(got, ToHost<float>(ref, got.size())))
          << "cap " << cap << " bytes";
      for (float x : got) ASSERT_TRUE(std::isfinite(x));
    }
  }
}

TEST(CudaBackendTest, RecordedStepsFollowThePartition) {
  KVS_REQUIRE_GPU();
  auto be = MakeBackend(64, size_t{256} << 20);
  ASSERT_NE(be, nullptr);
  AttentionStep s(*be, {300});  // one decode token
  std::vector<float> eager[2];
  be->set_graphs(false);
  for (int i = 0; i < 2; ++i) {
    be->set_attention_partition(i == 0 ? 64 : 256);
    eager[i] = s.Step(*be);
  }
  be->set_graphs(true);
  // Switching back and forth: each partition's recording replays its own
  // grid, never the other's.
  for (const int32_t partition : {64, 256, 64, 256}) {
    be->set_attention_partition(partition);
    for (int rep = 0; rep < 3; ++rep) {
      EXPECT_TRUE(SameBits(s.Step(*be), eager[partition == 64 ? 0 : 1]))
          << "partition " << partition << " step " << rep;
    }
  }
  EXPECT_GT(be->graph_replays(), 0);
}

// Device buffer of n floats from FillRandom.
std::unique_ptr<Buffer> RandomFloats(CudaBackend& be, int64_t n,
                                     uint64_t seed) {
  std::unique_ptr<Buffer> b = *be.Allocate(static_cast<size_t>(n) * 4);
  be.FillRandom(GgmlType::kF32, b->data(), n, seed, 2.0f);
  return b;
}

std::vector<float> Host(CudaBackend& be, const float* p, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  be.CopyToHost(p, v.data(), v.size() * sizeof(float));
  return v;
}

// The fused norm (and residual add) or SwiGLU feeding the GEMM directly
// gives the bits of the separate ops (the Backend defaults) on the same
// backend, with Q, K and V stored as one group.
TEST(CudaBackendTest, FusedGemmInputsEqualTheSeparateOps) {
  KVS_REQUIRE_GPU();
  auto be = MakeBackend(64, size_t{256} << 20);
  ASSERT_NE(be, nullptr);
  constexpr int64_t kDim = 256, kFfn = 512, kT = 5;
  const int64_t pad = be->RowPadding();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  auto host_weight = [&](int64_t rows, int64_t cols,
                         std::vector<uint16_t>* data) {
    data->resize(static_cast<size_t>(rows * cols));
    for (uint16_t& x : *data) x = FloatToBf16(u(rng));
    WeightView w;
    w.type = GgmlType::kBF16;
    w.data = data->data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = static_cast<size_t>(cols) * 2;
    return w;
  };
  std::vector<uint16_t> hq, hk, hv, hd;
  const WeightView host[3] = {host_weight(256, kDim, &hq),
                              host_weight(64, kDim, &hk),
                              host_weight(64, kDim, &hv)};
  absl::StatusOr<std::vector<WeightView>> qkv = be->PrepareWeights(host);
  ASSERT_TRUE(qkv.ok()) << qkv.status();
  absl::StatusOr<WeightView> down =
      be->PrepareWeight(host_weight(kDim, kFfn, &hd));
  ASSERT_TRUE(down.ok()) << down.status();
  const WeightView* ws[3] = {&(*qkv)[0], &(*qkv)[1], &(*qkv)[2]};
  auto norm = RandomFloats(*be, kDim, 9);
  auto residual = RandomFloats(*be, pad * kDim, 10);

  for (const bool with_residual : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "residual " << with_residual);
    std::vector<float> x_after[2];
    std::vector<std::vector<float>> outs_host[2];
    for (int fused = 0; fused < 2; ++fused) {
      auto x = RandomFloats(*be, pad * kDim, 11);
      auto scratch = RandomFloats(*be, pad * kDim, 12);
      std::vector<std::unique_ptr<Buffer>> out_bufs;
      float* outs[3];
      for (int i = 0; i < 3; ++i) {
        out_bufs.push_back(*be->Allocate(pad * ws[i]->rows * sizeof(float)));
        outs[i] = out_bufs.back()->as<float>();
      }
      const float* r = with_residual ? residual->as<float>() : nullptr;
      if (fused == 1) {
        be->AddNormMatMuls(x->as<float>(), r, norm->as<float>(), kT, kDim,
                           1e-5f, ws, outs);
      } else {
        // The op sequence the fused launch stands for.
        if (r != nullptr) be->Add(x->as<float>(), r, kT * kDim, x->as<float>());
        be->RmsNorm(x->as<float>(), norm->as<float>(), kT, kDim, 1e-5f,
                    scratch->as<float>());
        for (int i = 0; i < 3; ++i) {
          be->MatMul(*ws[i], scratch->as<float>(), kT, outs[i]);
        }
      }
      x_after[fused] = Host(*be, x->as<float>(), kT * kDim);
      for (int i = 0; i < 3; ++i) {
        outs_host[fused].push_back(Host(*be, outs[i], kT * ws[i]->rows));
      }
    }
    EXPECT_TRUE(SameBits(x_after[0], x_after[1]));
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(SameBits(outs_host[0][i], outs_host[1][i]))
          << "output " << i;
    }
  }

  std::vector<float> got[2];
  for (int fused = 0; fused < 2; ++fused) {
    auto gate = RandomFloats(*be, pad * kFfn, 13);
    auto up = RandomFloats(*be, pad * kFfn, 14);
    auto out = *be->Allocate(pad * kDim * sizeof(float));
    if (fused == 1) {
      be->SwiGluMatMul(gate->as<float>(), up->as<float>(), kT, *down,
                       out->as<float>());
    } else {
      be->SwiGlu(gate->as<float>(), up->as<float>(), kT * kFfn,
                 gate->as<float>());
      be->MatMul(*down, gate->as<float>(), kT, out->as<float>());
    }
    got[fused] = Host(*be, out->as<float>(), kT * kDim);
  }
  EXPECT_TRUE(SameBits(got[0], got[1]));
  for (float v : got[1]) ASSERT_TRUE(std::isfinite(v));
}

TEST(CudaBackendTest, BlockSizesMustDivideThePartition) {
  KVS_REQUIRE_GPU();
  auto be64 = MakeBackend(64, size_t{1} << 20);
  ASSERT_NE(be64, nullptr);
  for (int32_t ok : {1, 16, 32, 64}) EXPECT_TRUE(be64->CheckBlockSize(ok).ok());
  for (int32_t bad : {0, 48, 128, 256}) {
    EXPECT_EQ(be64->CheckBlockSize(bad).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  auto be256 = MakeBackend(256, size_t{1} << 20);
  ASSERT_NE(be256, nullptr);
  EXPECT_TRUE(be256->CheckBlockSize(128).ok());
  EXPECT_FALSE(be256->CheckBlockSize(96).ok());

  CudaBackend::Options o;
  o.attention_partition = 128;
  EXPECT_EQ(CudaBackend::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvsession::kernels::cuda
