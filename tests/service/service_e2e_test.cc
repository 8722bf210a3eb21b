// The service on the default model and on Gemma 3 270M (its vocab's Gemma
// template, sliding-window layers): follow-up turns reuse the whole history
// and continue exactly as a recomputation of the same tokens would.
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/service/test_server.h"

namespace kvsession::testing {
namespace {

// The variable naming the model file.
class ModelServiceTest : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Models, ModelServiceTest,
                         ::testing::Values("KVSESSION_MODEL",
                                           "KVSESSION_GEMMA3_MODEL"));

TEST_P(ModelServiceTest, MultiTurnReusesHistoryAndMatchesRecompute) {
  const char* model = std::getenv(GetParam().c_str());
  if (model == nullptr || *model == '\0') {
    GTEST_SKIP() << GetParam() << " is not set (scripts/test.sh sets it)";
  }
  TestServerOptions options;
  options.model_path = model;
  options.threads = 2;
  TestServer server(options);
  auto& stub = server.stub();
  const char* questions[] = {"What is the capital of France?",
                             "And of Italy?", "Which of the two is larger?"};
  int32_t history = 0;
  for (const char* q : questions) {
    TurnOutput cached = RunChat(stub, UserTurn("e2e", q, 24));
    ASSERT_TRUE(cached.status.ok()) << cached.status.error_message();
    EXPECT_EQ(cached.summary.cached_tokens(), history) << q;
    EXPECT_GT(cached.summary.prefilled_tokens(), 0);
    // A fresh computation of exactly the prompt this turn saw.
    absl::StatusOr<std::vector<int32_t>> held =
        server.engine().SessionTokens("e2e");
    ASSERT_TRUE(held.ok());
    v1::CompleteRequest fresh;
    for (int i = 0; i < cached.summary.prompt_tokens(); ++i) {
      fresh.mutable_tokens()->add_ids((*held)[i]);
    }
    fresh.set_max_tokens(24);
    // No cache at all, not even blocks other sessions share: every token
    // is computed from scratch.
    fresh.set_use_cache(false);
    TurnOutput recomputed = RunComplete(stub, fresh);
    ASSERT_TRUE(recomputed.status.ok());
    EXPECT_EQ(recomputed.summary.cached_tokens(), 0);
    EXPECT_EQ(cached.tokens, recomputed.tokens) << q;
    history = cached.summary.session_tokens();
  }
}

}  // namespace
}  // namespace kvsession::testing
