// The engine on the default model against llama.cpp's logits
// (tests/data/reference_logits.txt, written by make_reference_logits.py).
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
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
};

struct Reference {
  std::vector<int32_t> sample_ids;
  std::vector<ReferencePrompt> prompts;
};

Reference ReadReference() {
  Reference ref;
  std::ifstream in(std::string(KVSESSION_TEST_DATA_DIR) + "/reference_logits.txt");
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
    }
  }
  return ref;
}

class DefaultModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("KVSESSION_MODEL");
    if (path == nullptr || *path == '\0') return;
    ModelBundle::Options o;
    o.path = path;
    absl::StatusOr<std::unique_ptr<ModelBundle>> b = ModelBundle::Load(o);
    ASSERT_TRUE(b.ok()) << b.status();
    bundle_ = b->release();
  }
  static void TearDownTestSuite() {
    delete bundle_;
    bundle_ = nullptr;
  }
  void SetUp() override {
    if (bundle_ == nullptr) {
      GTEST_SKIP() << "KVSESSION_MODEL is not set (scripts/test.sh sets it)";
    }
  }
  std::unique_ptr<SequenceRunner> Runner() {
    SequenceRunner::Options o;
    o.max_tokens = 512;
    absl::StatusOr<std::unique_ptr<SequenceRunner>> r =
        SequenceRunner::Create(bundle_->model.get(), o);
    EXPECT_TRUE(r.ok());
    return *std::move(r);
  }
  static ModelBundle* bundle_;
};
ModelBundle* DefaultModelTest::bundle_ = nullptr;

// llama.cpp and this engine quantize activations to 8 bits the same way but
// differ in f16 rounding inside attention (llama.cpp rounds Q to f16 for
// Q.K, we keep it f32) and in summation order. Across 30 layers that moves
// logits (spread ~ +-20) by up to ~0.5; a wrong op moves them by several
// units and changes the argmax. We assert max |diff| < 1.0 on the top-32 and
// the 256 sampled ids of every position, mean |diff| < 0.1, and the same
// argmax wherever llama.cpp's top-2 margin exceeds 0.5.
TEST_F(DefaultModelTest, LogitsMatchLlamaCppAtEveryPosition) {
  const Reference ref = ReadReference();
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
  EXPECT_LT(worst, 1.0);
  EXPECT_LT(sum / count, 0.1);
}

TEST_F(DefaultModelTest, GreedyContinuationMatchesLlamaCpp) {
  const Reference ref = ReadReference();
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    const ReferencePrompt& p = ref.prompts[i];
    auto runner = Runner();
    GenerateOptions o;
    o.max_tokens = static_cast<int32_t>(p.greedy.size());
    o.ignore_eos = true;
    std::vector<int32_t> out;
    absl::StatusOr<GenerateStats> st =
        Generate(*runner, *bundle_->tokenizer, p.tokens, o,
                 [&](int32_t t) { out.push_back(t); });
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(out, p.greedy) << "prompt " << i;
  }
}

TEST_F(DefaultModelTest, AnswersTheCapitalOfFrance) {
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

}  // namespace
}  // namespace kvsession::runtime
