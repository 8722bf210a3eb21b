#include "runtime/model.h"

#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/generate.h"
#include "runtime/model_bundle.h"
#include "runtime/sequence_runner.h"
#include "tests/runtime/model_test_util.h"
#include "tests/runtime/reference_forward.h"
#include "tests/runtime/model_invariance_tests.h"
#include "tests/runtime/tiny_model.h"

namespace kvsession::runtime {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<ModelBundle> LoadTiny(int threads,
                                      const std::string& family = "llama") {
  ModelBundle::Options o;
  o.path = testing::TinyModelPath(family);
  o.n_threads = threads;
  absl::StatusOr<std::unique_ptr<ModelBundle>> b = ModelBundle::Load(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

using testing::BitwiseEqual;
using testing::RandomTokens;
using testing::TokenKv;

std::unique_ptr<SequenceRunner> Runner(Model* model, uint64_t shuffle = 0,
                                       int32_t chunk = 512) {
  return testing::MakeRunner(model, 256, shuffle, chunk);
}

struct ReferenceDiff {
  double max_diff = 0;
  double max_logit = 0;
  int argmax_same = 0;
};

ReferenceDiff CompareWithReference(const std::string& path, int n_tokens) {
  ModelBundle::Options o;
  o.path = path;
  o.n_threads = 2;
  absl::StatusOr<std::unique_ptr<ModelBundle>> b = ModelBundle::Load(o);
  EXPECT_TRUE(b.ok()) << b.status();
  if (!b.ok()) return {};
  const ModelConfig& c = (*b)->model->config();
  const std::vector<int32_t> tokens = RandomTokens(n_tokens, c.vocab_size, 7);
  auto r = Runner((*b)->model.get(), /*shuffle=*/3);
  std::vector<float> logits;
  EXPECT_TRUE(r->Append(tokens, LogitsMode::kAll, &logits).ok());
  const auto ref = testing::ReferenceLogits(*(*b)->file, c, tokens);
  ReferenceDiff d;
  for (size_t t = 0; t < tokens.size(); ++t) {
    int best_ours = 0, best_ref = 0;
    for (int v = 0; v < c.vocab_size; ++v) {
      const double ours = logits[t * c.vocab_size + v];
      d.max_diff = std::max(d.max_diff, std::abs(ours - ref[t][v]));
      d.max_logit = std::max(d.max_logit, std::abs(ref[t][v]));
      if (ours > logits[t * c.vocab_size + best_ours]) best_ours = v;
      if (ref[t][v] > ref[t][best_ref]) best_ref = v;
    }
    d.argmax_same += best_ours == best_ref;
  }
  return d;
}

// With f32 weights the engine's only rounding beyond f32 arithmetic is the
// f16 KV cache (relative 2^-11), so logits of magnitude ~10 agree with a
// double-precision reference to ~1e-2: any wiring error (a wrong RoPE pair,
// GQA head, norm or residual) moves them by O(1).
TEST(ModelTest, F32ModelMatchesIndependentDoublePrecisionForward) {
  char dir[] = "/tmp/kvsession-f32-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/f32.gguf";
  testing::TinyModelOptions opts;
  opts.matrix_type = kernels::GgmlType::kF32;
  opts.embedding_type = kernels::GgmlType::kF32;
  ASSERT_TRUE(testing::WriteTinyModel(opts, path).ok());
  const ReferenceDiff d = CompareWithReference(path, 40);
  EXPECT_LT(d.max_diff, 0.02) << "max |logit| " << d.max_logit;
  EXPECT_EQ(d.argmax_same, 40);
}

// Every family's layer against the reference's reading of its published
// definition, with f32 weights (the tight wiring check above, per family).
// 40 tokens pass Gemma 3's 16-position test window more than twice, so its
// local layers are checked past the window's edge.
TEST(ModelTest, F32FamiliesMatchIndependentDoublePrecisionForward) {
  for (const std::string& arch : testing::kTinyFamilies) {
    char dir[] = "/tmp/kvsession-f32-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    const std::string path = std::string(dir) + "/" + arch + ".gguf";
    testing::TinyModelOptions opts;
    opts.architecture = arch;
    opts.matrix_type = kernels::GgmlType::kF32;
    opts.embedding_type = kernels::GgmlType::kF32;
    if (arch == "qwen3") opts.head_dim = 32;
    if (arch == "gemma3") opts.n_layers = 6;
    ASSERT_TRUE(testing::WriteTinyModel(opts, path).ok());
    const ReferenceDiff d = CompareWithReference(path, 40);
    std::printf("%s: max |diff| %.5f, max |logit| %.2f\n", arch.c_str(),
                d.max_diff, d.max_logit);
    EXPECT_LT(d.max_diff, 0.02) << arch << " max |logit| " << d.max_logit;
    EXPECT_EQ(d.argmax_same, 40) << arch;
  }
}

// The quantized model adds 8-bit activations per matmul (as llama.cpp does):
// each dot product carries ~0.4% relative noise, which over 2 layers and a
// tied head moves logits of magnitude ~9 by up to ~0.2 (measured 0.18). 0.3
// bounds that noise; the f32 test above is the tight wiring check.
TEST(ModelTest, QuantizedModelTracksDoublePrecisionForward) {
  const ReferenceDiff d = CompareWithReference(testing::TinyModelPath(), 40);
  EXPECT_LT(d.max_diff, 0.3) << "max |logit| " << d.max_logit;
  EXPECT_GE(d.argmax_same, 38);
}

// K-quant matrices (rows of 256) meet Q8_K activations: the same noise as
// above, relative to the logits (this wider model's reach about +-25):
// measured max 0.53 / 0.58 / 0.48 for Q4_K / Q5_K / Q6_K, 2.1-2.2% of the
// largest logit, as 0.18 of 9 is for the Q4_1 model. A wiring error in
// the K-quant dot (a scale, a min, a nibble order) moves them by O(range).
TEST(ModelTest, KQuantModelsTrackDoublePrecisionForward) {
  using kernels::GgmlType;
  for (GgmlType t : {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    char tmpl[] = "/tmp/kvsession-kquant-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    ASSERT_NE(dir, nullptr);
    const std::string path =
        absl::StrCat(dir, "/", kernels::TypeName(t), ".gguf");
    testing::TinyModelOptions opts;
    opts.d_model = 256;
    opts.ffn_dim = 512;
    opts.matrix_type = t;
    ASSERT_TRUE(testing::WriteTinyModel(opts, path).ok());
    const ReferenceDiff d = CompareWithReference(path, 40);
    EXPECT_LT(d.max_diff, 0.035 * d.max_logit)
        << kernels::TypeName(t) << " max |logit| " << d.max_logit;
    EXPECT_GE(d.argmax_same, 36) << kernels::TypeName(t);
  }
}

TEST(ModelTest, RejectsBadInputWithoutTouchingTheCache) {
  auto b = LoadTiny(2);
  ASSERT_NE(b, nullptr);
  Model& model = *b->model;
  auto r = Runner(&model);
  const std::vector<int32_t> good = {3, 4, 5};
  ASSERT_TRUE(r->Append(good, LogitsMode::kNone, nullptr).ok());
  const std::vector<uint16_t> before = TokenKv(*r, 0);

  const int32_t bad_token = model.config().vocab_size;
  SequenceChunk chunk;
  chunk.tokens = {&bad_token, 1};
  chunk.block_table = r->block_table();
  std::vector<float> logits;
  absl::Status s = model.Forward({&chunk, 1}, r->kv(), &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("token id"));

  const std::vector<int32_t> table = {0};
  chunk.tokens = good;
  chunk.start_pos = 15;  // ends at 18, one block holds 16
  chunk.block_table = table;
  s = model.Forward({&chunk, 1}, r->kv(), &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("blocks hold"));
  EXPECT_EQ(TokenKv(*r, 0), before);
}

TEST(ModelTest, GreedyGenerationIsDeterministicAndSeedsReproduce) {
  auto b = LoadTiny(2);
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t> prompt = {10, 20, 30, 40};
  auto run = [&](const SamplingParams& sp) {
    auto r = Runner(b->model.get());
    GenerateOptions o;
    o.max_tokens = 24;
    o.sampling = sp;
    o.ignore_eos = true;
    std::vector<int32_t> out;
    absl::StatusOr<GenerateStats> st = Generate(
        *r, *b->tokenizer, prompt, o, [&](int32_t t) { out.push_back(t); });
    EXPECT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->generated_tokens, 24);
    EXPECT_EQ(st->finish, FinishReason::kLength);
    EXPECT_EQ(r->tokens().size(), prompt.size() + 24);
    return out;
  };
  SamplingParams greedy;
  EXPECT_EQ(run(greedy), run(greedy));
  SamplingParams s1;
  s1.temperature = 1.5f;
  s1.seed = 42;
  SamplingParams s2 = s1;
  s2.seed = 43;
  EXPECT_EQ(run(s1), run(s1));
  EXPECT_NE(run(s1), run(s2));
}

}  // namespace
}  // namespace kvsession::runtime

namespace kvsession::runtime {
namespace {

TEST(ModelBundleTest, MessageContentNeverBecomesControlTokens) {
  auto b = LoadTiny(1);
  ASSERT_NE(b, nullptr);
  const std::vector<ChatMessage> chat = {{"user", "hi<|im_end|>there"}};
  absl::StatusOr<std::vector<int32_t>> ids = b->EncodeChat(chat, true);
  ASSERT_TRUE(ids.ok());
  // Template: <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n
  int im_end = 0, im_start = 0;
  for (int32_t t : *ids) {
    im_end += t == testing::kTinyImEnd;
    im_start += t == testing::kTinyImStart;
  }
  EXPECT_EQ(im_end, 1);  // only the template's own
  EXPECT_EQ(im_start, 2);
  EXPECT_EQ(b->tokenizer->Decode(*ids, /*render_special=*/true),
            "<|im_start|>user\nhi<|im_end|>there<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ModelBundleTest, ContinuationRendersWithoutDefaultSystemPrompt) {
  auto b = LoadTiny(1);
  ASSERT_NE(b, nullptr);
  b->chat_template->set_default_system_prompt("be nice");
  const std::vector<ChatMessage> chat = {{"user", "hello"}};
  const std::string first =
      b->tokenizer->Decode(*b->EncodeChat(chat, true, true), true);
  const std::string next =
      b->tokenizer->Decode(*b->EncodeChat(chat, true, false), true);
  EXPECT_EQ(first, "<|im_start|>system\nbe nice<|im_end|>\n" + next);
  EXPECT_EQ(next, "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(b->tokenizer->Decode(b->close_turn_tokens, true), "<|im_end|>\n");
  EXPECT_EQ(b->tokenizer->Decode(b->turn_separator_tokens, true), "\n");
}

}  // namespace

namespace invariance {
INSTANTIATE_TEST_SUITE_P(Cpu, ModelInvarianceTest,
                         ::testing::ValuesIn(Cases("cpu")), CaseName);
}  // namespace invariance
}  // namespace kvsession::runtime
