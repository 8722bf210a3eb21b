// The engine against llama.cpp's logits, on the default model
// (tests/data/reference_logits.txt, written by make_reference_logits.py) and
// on small Qwen2 and Qwen3 models with K-quant tensors (tests/data/*-tiny.*,
// written by make_family_models.py and make_family_references.py).
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <ostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/generate.h"
#include "runtime/model_bundle.h"
#include "runtime/sequence_runner.h"

namespace kvsession::runtime {
namespace {

struct ReferencePrompt {
  std::vector<int32_t> tokens;
  // Per position: top ids with logits, and the logits of the sample ids.
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  std::vector<std::vector<float>> sample;
  std::vector<int32_t> greedy;
  std::vector<float> margins;  // llama.cpp's top-1 minus top-2 per step
};

struct Reference {
  std::vector<int32_t> sample_ids;
  std::vector<ReferencePrompt> prompts;
};

Reference ReadReference(const std::string& file) {
  Reference ref;
  std::ifstream in(std::string(KVSESSION_TEST_DATA_DIR) + "/" + file);
  EXPECT_TRUE(in.good());
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "sample_ids") {
      int32_t id;
      while (ls >> id) ref.sample_ids.push_back(id);
    } else if (kind == "prompt") {
      int idx;
      ls >> idx;
      ref.prompts.emplace_back();
      int32_t id;
      while (ls >> id) ref.prompts.back().tokens.push_back(id);
    } else if (kind == "pos") {
      ReferencePrompt& p = ref.prompts.back();
      int pos;
      std::string word;
      ls >> pos >> word;  // "top"
      p.top.emplace_back();
      p.sample.emplace_back();
      while (ls >> word && word != "sample") {
        const size_t colon = word.find(':');
        p.top.back().emplace_back(std::stoi(word.substr(0, colon)),
                                  std::stof(word.substr(colon + 1)));
      }
      float v;
      while (ls >> v) p.sample.back().push_back(v);
    } else if (kind == "greedy") {
      int32_t id;
      while (ls >> id) ref.prompts.back().greedy.push_back(id);
    } else if (kind == "margins") {
      float m;
      while (ls >> m) ref.prompts.back().margins.push_back(m);
    }
  }
  return ref;
}

// One model with its llama.cpp reference and the bounds it must meet.
struct ReferenceCase {
  std::string name;
  std::string model;  // path; empty: the file the variable `env` names
  std::string reference;
  double max_diff;   // bound on |ours - llama.cpp| over the checked logits
  double mean_diff;  // bound on the mean of it
  int min_full_greedy;  // continuations identical for all 32 tokens
  std::string env = "KVSESSION_MODEL";
};

void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << c.name; }

std::string DataPath(const std::string& file) {
  return std::string(KVSESSION_TEST_DATA_DIR) + "/" + file;
}

ModelBundle* LoadCached(const std::string& path) {
  static auto* bundles = new std::map<std::string, std::unique_ptr<ModelBundle>>();
  auto it = bundles->find(path);
  if (it != bundles->end()) return it->second.get();
  ModelBundle::Options o;
  o.path = path;
  absl::StatusOr<std::unique_ptr<ModelBundle>> b = ModelBundle::Load(o);
  EXPECT_TRUE(b.ok()) << b.status();
  if (!b.ok()) return nullptr;
  return bundles->emplace(path, *std::move(b)).first->second.get();
}

std::unique_ptr<SequenceRunner> RunnerFor(ModelBundle* bundle) {
  SequenceRunner::Options o;
  o.max_tokens = 1024;  // Gemma 3's long prompt passes its 512-token window
  absl::StatusOr<std::unique_ptr<SequenceRunner>> r =
      SequenceRunner::Create(bundle->model.get(), o);
  EXPECT_TRUE(r.ok());
  return *std::move(r);
}

class ReferenceModelTest : public ::testing::TestWithParam<ReferenceCase> {
 protected:
  void SetUp() override {
    std::string path = GetParam().model;
    if (path.empty()) {
      const char* env = std::getenv(GetParam().env.c_str());
      if (env == nullptr || *env == '\0') {
        GTEST_SKIP() << GetParam().env
                     << " is not set (scripts/test.sh sets it)";
      }
      path = env;
    }
    bundle_ = LoadCached(path);
    ASSERT_NE(bundle_, nullptr);
  }
  std::unique_ptr<SequenceRunner> Runner() { return RunnerFor(bundle_); }
  ModelBundle* bundle_ = nullptr;
};

// The engine rounds where llama.cpp's CPU path rounds (8-bit activations
// with its x86 rounding, the same per-block integer dot and scale order, f16
// Q and softmax weights in attention, RMSNorm summed in double), but not
// bit for bit everywhere: exp() in SiLU and softmax are different
// polynomials, and any last-bit difference can flip an 8-bit activation
// rounding in the next layer. Measured over the 28,512 checked values of the
// 5 prompts (logits spread about +-20): max |diff| 0.92, mean |diff| 0.113.
// For scale: against an exact double-precision forward of the same weights,
// each implementation is off by a mean of 0.1-0.8 per position (8-bit
// activations), so the two agree better than either agrees with exact math.
// A wrong op (RoPE pairing, GQA head, norm) moves logits by several units.
// We assert max < 1.5, mean < 0.2, and the same argmax wherever llama.cpp's
// top-2 margin exceeds 0.5.
TEST_P(ReferenceModelTest, LogitsMatchLlamaCppAtEveryPosition) {
  const Reference ref = ReadReference(GetParam().reference);
  ASSERT_EQ(ref.prompts.size(), 5u);
  const int vocab = bundle_->model->config().vocab_size;
  double worst = 0, sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const ReferencePrompt& p = ref.prompts[i];
    auto runner = Runner();
    std::vector<float> logits;
    ASSERT_TRUE(runner->Append(p.tokens, LogitsMode::kAll, &logits).ok());
    ASSERT_EQ(logits.size(), p.tokens.size() * vocab);
    for (size_t pos = 0; pos < p.tokens.size(); ++pos) {
      const float* row = logits.data() + pos * vocab;
      auto check = [&](int32_t id, float expected) {
        const double d = std::abs(row[id] - expected);
        worst = std::max(worst, d);
        sum += d;
        ++count;
      };
      for (const auto& [id, v] : p.top[pos]) check(id, v);
      for (size_t s = 0; s < ref.sample_ids.size(); ++s) {
        check(ref.sample_ids[s], p.sample[pos][s]);
      }
      const auto& top = p.top[pos];
      if (top[0].second - top[1].second > 0.5f) {
        int32_t best = 0;
        for (int32_t v = 1; v < vocab; ++v) {
          if (row[v] > row[best]) best = v;
        }
        EXPECT_EQ(best, top[0].first) << "prompt " << i << " position " << pos;
      }
    }
  }
  RecordProperty("max_abs_diff", std::to_string(worst));
  RecordProperty("mean_abs_diff", std::to_string(sum / count));
  std::printf("logits vs llama.cpp: max |diff| %.4f, mean |diff| %.5f over %lld values\n",
              worst, sum / count, static_cast<long long>(count));
  EXPECT_LT(worst, GetParam().max_diff);
  EXPECT_LT(sum / count, GetParam().mean_diff);
}

// Greedy continuations agree token for token until a step where llama.cpp's
// own top-2 margin is below 0.5 logits, i.e. a tie within the noise above;
// from there either token is a correct greedy choice and the sequences may
// part. (On the checked-in prompts, 3 of 5 agree for all 32 tokens; the
// other two part at margins of 0.23 and 0.03.)
TEST_P(ReferenceModelTest, GreedyContinuationMatchesLlamaCppUpToATie) {
  constexpr float kTieMargin = 0.5f;
  const Reference ref = ReadReference(GetParam().reference);
  int full_matches = 0;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const ReferencePrompt& p = ref.prompts[i];
    ASSERT_EQ(p.margins.size(), p.greedy.size());
    auto runner = Runner();
    GenerateOptions o;
    o.max_tokens = static_cast<int32_t>(p.greedy.size());
    o.ignore_eos = true;
    std::vector<int32_t> out;
    absl::StatusOr<GenerateStats> st =
        Generate(*runner, *bundle_->tokenizer, p.tokens, o,
                 [&](int32_t t) { out.push_back(t); });
    ASSERT_TRUE(st.ok()) << st.status();
    ASSERT_EQ(out.size(), p.greedy.size());
    size_t k = 0;
    while (k < out.size() && out[k] == p.greedy[k]) ++k;
    if (k == out.size()) {
      ++full_matches;
      continue;
    }
    EXPECT_LT(p.margins[k], kTieMargin)
        << "prompt " << i << " parts from llama.cpp at step " << k
        << " where llama.cpp's top-2 margin is " << p.margins[k];
  }
  std::printf("greedy continuations identical to llama.cpp: %d of %zu\n",
              full_matches, ref.prompts.size());
  EXPECT_GE(full_matches, GetParam().min_full_greedy);
}

class DefaultModelTest : public ReferenceModelTest {};
INSTANTIATE_TEST_SUITE_P(Default, DefaultModelTest,
                         ::testing::Values(ReferenceCase{"default", ""}));

TEST_P(DefaultModelTest, AnswersTheCapitalOfFrance) {
  const std::vector<ChatMessage> chat = {
      {"user", "What is the capital of France?"}};
  absl::StatusOr<std::vector<int32_t>> prompt = bundle_->EncodeChat(chat, true);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  auto runner = Runner();
  GenerateOptions o;
  o.max_tokens = 32;
  std::vector<int32_t> out;
  ASSERT_TRUE(Generate(*runner, *bundle_->tokenizer, *prompt, o,
                       [&](int32_t t) { out.push_back(t); })
                  .ok());
  const std::string answer = bundle_->tokenizer->Decode(out);
  EXPECT_NE(answer.find("Paris"), std::string::npos) << answer;
}

// Gemma 3 270M, the base model: it continues the question with " Paris",
// as llama.cpp does on this file.
class Gemma3ModelTest : public ReferenceModelTest {};
INSTANTIATE_TEST_SUITE_P(
    Gemma3, Gemma3ModelTest,
    ::testing::Values(ReferenceCase{"gemma3_270m", "", "", 0, 0, 0,
                                    "KVSESSION_GEMMA3_MODEL"}),
    [](const ::testing::TestParamInfo<ReferenceCase>& info) {
      return info.param.name;
    });

TEST_P(Gemma3ModelTest, BaseModelContinuesWithParis) {
  const std::vector<int32_t> prompt = bundle_->tokenizer->Encode(
      "Question: What is the capital of France?\nAnswer:",
      /*parse_special=*/false, /*add_special=*/true);
  ASSERT_EQ(prompt.front(), bundle_->tokenizer->bos_id());
  auto runner = Runner();
  GenerateOptions o;
  o.max_tokens = 4;
  std::vector<int32_t> out;
  ASSERT_TRUE(Generate(*runner, *bundle_->tokenizer, prompt, o,
                       [&](int32_t t) { out.push_back(t); })
                  .ok());
  const std::string answer = bundle_->tokenizer->Decode(out);
  EXPECT_EQ(answer.rfind(" Paris", 0), 0u) << answer;
}

// The default model: bounds and their reasons above. The Qwen models (random
// weights, logits spread about +-15 with a standard deviation of 3.2) have
// Q4_K/Q6_K/Q8_0 matrices, so activations meet them as Q8_K/Q8_0 as in
// llama.cpp; measured max |diff| 0.40 (qwen2) and 0.54 (qwen3), mean 0.072
// and 0.063. Bounds are about twice that; NeoX RoPE taken for adjacent-pair
// RoPE, or the Qwen3 q/k norms left out, give max 8.8 and 9.5, mean 1.0.
// Gemma 3 270M (Q4_K_M, logits up to ~30) is noisier by nature: llama.cpp
// differs from itself by max 2.9, mean 0.31 between a 512-token batch and
// token-by-token evaluation of the same prompt. Measured against it: max
// 4.2, mean 0.24 over 234,720 values (the last prompt, 750 tokens, passes
// the 512-position window). Attending past the window gives max 24.9, mean
// 1.15; the global RoPE base on local layers max 20, mean 2.4.
INSTANTIATE_TEST_SUITE_P(
    Models, ReferenceModelTest,
    ::testing::Values(
        ReferenceCase{"smollm2", "", "reference_logits.txt", 1.5, 0.2, 1},
        ReferenceCase{"qwen2", DataPath("qwen2-tiny.gguf"),
                      "qwen2-tiny.reference.txt", 1.0, 0.12, 1},
        ReferenceCase{"qwen3", DataPath("qwen3-tiny.gguf"),
                      "qwen3-tiny.reference.txt", 1.0, 0.12, 1},
        ReferenceCase{"gemma3_270m", "", "gemma3-270m.reference.txt", 6.0,
                      0.35, 1, "KVSESSION_GEMMA3_MODEL"}),
    [](const ::testing::TestParamInfo<ReferenceCase>& info) {
      return info.param.name;
    });

}  // namespace
}  // namespace kvsession::runtime
