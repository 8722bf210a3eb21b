// CudaBackend's own logic around the ops: attention run in token slices
// under a workspace cap, recorded steps that follow the attention
// partition, and the block sizes the backend accepts.
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
    if (!be.BeginStep(in)) {
      be.Attention(kv, 0, Placement(), q->as<float>(), params,
                   out->as<float>());
      be.EndStep();
    }
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
