// Batch invariance of the model (DESIGN.md invariant 5) for every family on
// one backend: a token's logits and K/V are bitwise the same in prefill and
// decode, in chunks of any length and beside any neighbours. One list of
// tests, included by model_test.cc (instantiated for the CPU backend) and
// model_cuda_gpu_test.cc (for CUDA, label gpu): the tests are parameterized
// over backends, not copied.
#ifndef KVSESSION_TESTS_RUNTIME_MODEL_INVARIANCE_TESTS_H_
#define KVSESSION_TESTS_RUNTIME_MODEL_INVARIANCE_TESTS_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_factory.h"
#include "runtime/model.h"
#include "runtime/model_bundle.h"
#include "runtime/sequence_runner.h"
#include "tests/runtime/model_test_util.h"
#include "tests/runtime/tiny_model.h"

namespace kvsession::runtime::invariance {

struct InvarianceCase {
  std::string family;
  std::string device;  // "cpu" or "cuda"
};

inline void PrintTo(const InvarianceCase& c, std::ostream* os) {
  *os << c.family << "/" << c.device;
}

inline std::vector<InvarianceCase> Cases(const std::string& device) {
  std::vector<InvarianceCase> out;
  for (const std::string& f : testing::kTinyFamilies) out.push_back({f, device});
  return out;
}

inline std::string CaseName(
    const ::testing::TestParamInfo<InvarianceCase>& info) {
  return info.param.family + "_" + info.param.device;
}

class ModelInvarianceTest : public ::testing::TestWithParam<InvarianceCase> {
 protected:
  void SetUp() override {
    if (GetParam().device == "cuda") {
      kernels::BackendOptions o;
      o.device = "cuda";
      if (!kernels::CreateBackend(o).ok()) GTEST_SKIP() << "no CUDA backend";
    }
  }
  // The family's wide tiny model (head_dim 64, Qwen3's 128: sizes the CUDA
  // attention serves).
  std::unique_ptr<ModelBundle> Load(int threads = 2) const {
    ModelBundle::Options o;
    o.path = testing::WideTinyModelPath(GetParam().family);
    o.n_threads = threads;
    o.device = GetParam().device;
    absl::StatusOr<std::unique_ptr<ModelBundle>> b = ModelBundle::Load(o);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? *std::move(b) : nullptr;
  }
  static std::unique_ptr<SequenceRunner> Runner(Model* model,
                                                uint64_t shuffle = 0,
                                                int32_t chunk = 512) {
    return testing::MakeRunner(model, 640, shuffle, chunk);
  }
  // 300 tokens cross several of the CUDA attention's 64-position
  // partitions and the CPU's 16-token KV blocks.
  static constexpr int kLong = 300;
};

TEST_P(ModelInvarianceTest, PrefillAndDecodeAreBitwiseIdentical) {
  auto b = Load();
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t> tokens =
      testing::RandomTokens(kLong, b->model->config().vocab_size, 11);
  auto prefill = Runner(b->model.get(), 5);
  std::vector<float> all;
  ASSERT_TRUE(prefill->Append(tokens, LogitsMode::kAll, &all).ok());
  auto decode = Runner(b->model.get(), 9);
  std::vector<float> stepwise, one;
  for (int32_t t : tokens) {
    ASSERT_TRUE(decode->Append({&t, 1}, LogitsMode::kLast, &one).ok());
    stepwise.insert(stepwise.end(), one.begin(), one.end());
  }
  EXPECT_TRUE(testing::BitwiseEqual(all, stepwise));
  for (int32_t p : {0, 1, 15, 16, 17, 63, 64, 255, 256, 299}) {
    ASSERT_EQ(testing::TokenKv(*prefill, p), testing::TokenKv(*decode, p))
        << "position " << p;
  }
}

TEST_P(ModelInvarianceTest, ChunkLengthDoesNotChangeAnyBit) {
  auto b = Load();
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t> tokens =
      testing::RandomTokens(kLong, b->model->config().vocab_size, 13);
  std::vector<float> reference;
  {
    auto r = Runner(b->model.get(), 0, /*chunk=*/512);
    ASSERT_TRUE(r->Append(tokens, LogitsMode::kAll, &reference).ok());
  }
  for (int32_t chunk : {1, 5, 17, 64, 65, 130}) {
    auto r = Runner(b->model.get(), chunk, chunk);
    std::vector<float> logits;
    ASSERT_TRUE(r->Append(tokens, LogitsMode::kAll, &logits).ok());
    EXPECT_TRUE(testing::BitwiseEqual(reference, logits)) << "chunk " << chunk;
  }
}

TEST_P(ModelInvarianceTest, NeighboursInTheBatchDoNotChangeAnyBit) {
  auto b = Load();
  ASSERT_NE(b, nullptr);
  Model& model = *b->model;
  const int vocab = model.config().vocab_size;
  const std::vector<std::vector<int32_t>> seqs = {
      testing::RandomTokens(20, vocab, 1), testing::RandomTokens(9, vocab, 2),
      testing::RandomTokens(270, vocab, 3)};
  const std::vector<int32_t> next = {5, 6, 7};
  // Alone: prefill, then one decode token.
  std::vector<std::vector<float>> alone_prefill, alone_decode;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto r = Runner(&model, 100 + i);
    std::vector<float> a, d;
    ASSERT_TRUE(r->Append(seqs[i], LogitsMode::kAll, &a).ok());
    ASSERT_TRUE(r->Append({&next[i], 1}, LogitsMode::kLast, &d).ok());
    alone_prefill.push_back(a);
    alone_decode.push_back(d);
  }
  // Together in one arena: the three prefills in one step, then one step
  // with the three decode tokens.
  auto arena = Runner(&model);
  const kernels::KvCacheView& kv = arena->kv();
  std::vector<std::vector<int32_t>> tables = {{7, 2}, {0}, {}};
  // 17 blocks in descending order, clear of the other two tables and
  // inside the 40-block arena.
  for (int32_t blk = 39; blk >= 23; --blk) tables[2].push_back(blk);
  std::vector<SequenceChunk> batch(3);
  for (size_t i = 0; i < 3; ++i) {
    batch[i].tokens = seqs[i];
    batch[i].start_pos = 0;
    batch[i].block_table = tables[i];
    batch[i].logits = LogitsMode::kAll;
  }
  std::vector<float> logits;
  ASSERT_TRUE(model.Forward(batch, kv, &logits).ok());
  size_t off = 0;
  for (size_t i = 0; i < 3; ++i) {
    std::vector<float> mine(logits.begin() + off,
                            logits.begin() + off + alone_prefill[i].size());
    EXPECT_TRUE(testing::BitwiseEqual(mine, alone_prefill[i]))
        << "sequence " << i;
    off += alone_prefill[i].size();
  }
  for (size_t i = 0; i < 3; ++i) {
    batch[i].tokens = {&next[i], 1};
    batch[i].start_pos = static_cast<int32_t>(seqs[i].size());
    batch[i].logits = LogitsMode::kLast;
  }
  ASSERT_TRUE(model.Forward(batch, kv, &logits).ok());
  for (size_t i = 0; i < 3; ++i) {
    std::vector<float> mine(logits.begin() + i * vocab,
                            logits.begin() + (i + 1) * vocab);
    EXPECT_TRUE(testing::BitwiseEqual(mine, alone_decode[i]))
        << "sequence " << i;
  }
}

TEST_P(ModelInvarianceTest, ThreadCountDoesNotChangeAnyBit) {
  auto one = Load(1);
  auto two = Load(2);
  ASSERT_NE(one, nullptr);
  ASSERT_NE(two, nullptr);
  const std::vector<int32_t> tokens =
      testing::RandomTokens(33, one->model->config().vocab_size, 17);
  std::vector<float> a, b;
  ASSERT_TRUE(
      Runner(one->model.get())->Append(tokens, LogitsMode::kAll, &a).ok());
  ASSERT_TRUE(
      Runner(two->model.get())->Append(tokens, LogitsMode::kAll, &b).ok());
  EXPECT_TRUE(testing::BitwiseEqual(a, b));
}

}  // namespace kvsession::runtime::invariance

#endif  // KVSESSION_TESTS_RUNTIME_MODEL_INVARIANCE_TESTS_H_
