// The model on the CUDA backend: batch invariance (model_invariance_tests.h,
// shared with the CPU backend), agreement with the CPU backend (stated
// tolerance), every weight type, random models and device sampling.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend_factory.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/model_bundle.h"
#include "runtime/sequence_runner.h"
#include "tests/runtime/model_test_util.h"
#include "tests/runtime/model_invariance_tests.h"
#include "tests/runtime/tiny_model.h"

namespace kvsession::runtime {
namespace {

bool HaveCuda() {
  static const bool have = [] {
    kernels::BackendOptions o;
    o.device = "cuda";
    return kernels::CreateBackend(o).ok();
  }();
  return have;
}

#define REQUIRE_CUDA()                                     \
  do {                                                     \
    if (!HaveCuda()) GTEST_SKIP() << "no CUDA backend";    \
  } while (0)

std::unique_ptr<ModelBundle> Load(const std::string& path,
                                  const std::string& device) {
  ModelBundle::Options o;
  o.path = path;
  o.n_threads = 4;
  o.device = device;
  absl::StatusOr<std::unique_ptr<ModelBundle>> b = ModelBundle::Load(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

using testing::BitwiseEqual;
using testing::RandomTokens;
using testing::TokenKv;

std::unique_ptr<SequenceRunner> Runner(Model* model, uint64_t shuffle = 0,
                                       int32_t chunk = 512) {
  return testing::MakeRunner(model, 640, shuffle, chunk);
}

// The tiny test model with head_dim 64 (a head size the CUDA attention
// serves; the default tiny model's is 16).
testing::TinyModelOptions Tiny64() {
  testing::TinyModelOptions o;
  o.d_model = 256;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 512;
  return o;
}

const std::string& TinyPath() {
  static const std::string* path = [] {
    auto* p = new std::string(::testing::TempDir() + "/tiny64.gguf");
    EXPECT_TRUE(testing::WriteTinyModel(Tiny64(), *p).ok());
    return p;
  }();
  return *path;
}


// KV blocks must divide the attention's partition of 64 positions: the
// engine refuses other sizes at start-up instead of failing in a step.
TEST(ModelCudaTest, EngineRefusesBlocksTheAttentionCannotAddress) {
  REQUIRE_CUDA();
  auto b = Load(TinyPath(), "cuda");
  ASSERT_NE(b, nullptr);
  Engine::Options o;
  o.kv_device_bytes = 16ll << 20;
  for (int32_t bad : {48, 128}) {
    o.block_size = bad;
    EXPECT_EQ(Engine::Create(b.get(), o).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  o.block_size = 32;
  EXPECT_TRUE(Engine::Create(b.get(), o).ok());
}



// The CPU backend dots quantized weights with Q8 activations; the CUDA
// backend dequantizes weights to f16 and rounds activations to f16. Both
// approximate the same f32 model, so logits agree to a few percent of
// their range and the argmax agrees almost everywhere. A wiring error
// (wrong head, pair or block) moves logits by O(range).
void ExpectTracksCpu(const std::string& path, const std::string& what) {
  auto gpu = Load(path, "cuda");
  auto cpu = Load(path, "cpu");
  ASSERT_NE(gpu, nullptr);
  ASSERT_NE(cpu, nullptr);
  const int vocab = cpu->model->config().vocab_size;
  const std::vector<int32_t> tokens = RandomTokens(40, vocab, 21);
  std::vector<float> a, c;
  ASSERT_TRUE(Runner(gpu->model.get())->Append(tokens, LogitsMode::kAll, &a).ok());
  ASSERT_TRUE(Runner(cpu->model.get())->Append(tokens, LogitsMode::kAll, &c).ok());
  ASSERT_EQ(a.size(), c.size());
  double max_diff = 0, range = 0;
  int argmax_same = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* x = a.data() + t * vocab;
    const float* y = c.data() + t * vocab;
    for (int v = 0; v < vocab; ++v) {
      max_diff = std::max(max_diff, std::fabs(double{x[v]} - y[v]));
      range = std::max(range, std::fabs(double{y[v]}));
    }
    argmax_same += std::max_element(x, x + vocab) - x ==
                   std::max_element(y, y + vocab) - y;
  }
  EXPECT_LE(max_diff, 0.05 * range + 0.02) << what;
  EXPECT_GE(argmax_same, 36) << what << ": argmax agrees on " << argmax_same
                             << " of 40";
}

TEST(ModelCudaTest, EveryWeightTypeTracksTheCpuBackend) {
  REQUIRE_CUDA();
  using kernels::GgmlType;
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16,
                     GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1,
                     GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ4_K,
                     GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    testing::TinyModelOptions o = Tiny64();
    o.matrix_type = t;
    o.embedding_type = t == GgmlType::kQ4_1 ? GgmlType::kQ8_0 : t;
    o.tied_output = t != GgmlType::kQ5_0;
    const std::string path = absl::StrCat(::testing::TempDir(), "/tiny_",
                                          kernels::TypeName(t), ".gguf");
    ASSERT_TRUE(testing::WriteTinyModel(o, path).ok());
    ExpectTracksCpu(path, kernels::TypeName(t));
  }
}

TEST(ModelCudaTest, RandomModelMatchesTheCpuBackend) {
  REQUIRE_CUDA();
  kernels::BackendOptions bo;
  bo.device = "cuda";
  auto gpu_backend = kernels::CreateBackend(bo);
  ASSERT_TRUE(gpu_backend.ok()) << gpu_backend.status();
  bo.device = "cpu";
  bo.n_threads = 4;
  auto cpu_backend = kernels::CreateBackend(bo);
  ASSERT_TRUE(cpu_backend.ok());
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 256;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.ffn_dim = 512;
  c.vocab_size = 1000;
  c.context_length = 1024;
  c.rope.head_dim = c.rope.rot_dim = 64;
  RandomWeights w;
  w.seed = 3;
  w.type = kernels::GgmlType::kBF16;
  auto gm = Model::CreateRandom(c, gpu_backend->get(), w);
  auto cm = Model::CreateRandom(c, cpu_backend->get(), w);
  ASSERT_TRUE(gm.ok()) << gm.status();
  ASSERT_TRUE(cm.ok()) << cm.status();
  EXPECT_EQ((*gm)->weight_bytes(), (*cm)->weight_bytes());
  const std::vector<int32_t> tokens = RandomTokens(30, c.vocab_size, 4);
  std::vector<float> a, b;
  ASSERT_TRUE(Runner(gm->get())->Append(tokens, LogitsMode::kAll, &a).ok());
  ASSERT_TRUE(Runner(cm->get())->Append(tokens, LogitsMode::kAll, &b).ok());
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, range = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(double{a[i]} - b[i]));
    range = std::max(range, std::fabs(double{b[i]}));
  }
  // Same bf16 weights on both sides; the GPU rounds activations to bf16
  // before each GEMM (relative 2^-9), the CPU keeps f32.
  EXPECT_LE(max_diff, 0.03 * range + 0.01);
}

TEST(ModelCudaTest, DeviceSamplingPicksTheArgmax) {
  REQUIRE_CUDA();
  auto b = Load(TinyPath(), "cuda");
  ASSERT_NE(b, nullptr);
  Model& model = *b->model;
  const int vocab = model.config().vocab_size;
  const std::vector<int32_t> tokens = RandomTokens(12, vocab, 8);
  auto r1 = Runner(&model, 1);
  auto r2 = Runner(&model, 1);
  std::vector<int32_t> table = r1->block_table();
  SequenceChunk chunk;
  chunk.tokens = tokens;
  chunk.block_table = table;
  chunk.logits = LogitsMode::kAll;
  std::vector<float> logits;
  ASSERT_TRUE(model.Forward({&chunk, 1}, r1->kv(), &logits).ok());
  std::vector<RowSampling> rows(tokens.size());
  for (RowSampling& rs : rows) rs.on_device = true;
  rows[3].on_device = false;  // one host row in the middle
  std::vector<int32_t> sampled;
  std::vector<float> host_rows;
  ASSERT_TRUE(model.ForwardSampled({&chunk, 1}, r2->kv(), rows, &sampled,
                                   &host_rows)
                  .ok());
  ASSERT_EQ(sampled.size(), tokens.size());
  ASSERT_EQ(host_rows.size(), static_cast<size_t>(vocab));
  EXPECT_EQ(std::memcmp(host_rows.data(), logits.data() + 3 * vocab,
                        vocab * sizeof(float)),
            0);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* row = logits.data() + t * vocab;
    if (t == 3) {
      EXPECT_EQ(sampled[t], -1);
      continue;
    }
    EXPECT_EQ(sampled[t], std::max_element(row, row + vocab) - row)
        << "row " << t;
  }
}

}  // namespace

namespace invariance {
INSTANTIATE_TEST_SUITE_P(Cuda, ModelInvarianceTest,
                         ::testing::ValuesIn(Cases("cuda")), CaseName);
}  // namespace invariance
}  // namespace kvsession::runtime
