// The service on the CUDA backend and the default model: follow-up turns
// continue exactly as a recomputation of the same tokens would, also when
// sessions were swapped to pinned host memory and back, or dropped and
// recomputed (DESIGN.md invariant 1).
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_factory.h"
#include "tests/service/test_server.h"

namespace kvsession::testing {
namespace {

constexpr int kSessions = 6;
constexpr int kRounds = 3;
constexpr int kMaxTokens = 12;

const char* ModelOrNull() {
  const char* m = std::getenv("KVSESSION_MODEL");
  return m != nullptr && *m != '\0' ? m : nullptr;
}

bool HaveCuda() {
  static const bool have = [] {
    kernels::BackendOptions o;
    o.device = "cuda";
    return kernels::CreateBackend(o).ok();
  }();
  return have;
}

#define REQUIRE_CUDA_AND_MODEL()                                         \
  do {                                                                   \
    if (!HaveCuda()) GTEST_SKIP() << "no CUDA backend";                  \
    if (ModelOrNull() == nullptr) GTEST_SKIP() << "KVSESSION_MODEL unset"; \
  } while (0)

TestServerOptions OnCuda(int64_t device_bytes, int64_t host_bytes) {
  TestServerOptions o;
  o.model_path = ModelOrNull();
  o.device = "cuda";
  o.engine.block_size = 16;
  o.engine.kv_device_bytes = device_bytes;
  o.engine.kv_host_bytes = host_bytes;
  return o;
}

// A fresh computation, without any cache, of the prompt the turn saw.
TurnOutput Recompute(TestServer& server, const std::string& session,
                     int32_t prompt_tokens) {
  absl::StatusOr<std::vector<int32_t>> held =
      server.engine().SessionTokens(session);
  EXPECT_TRUE(held.ok());
  v1::CompleteRequest fresh;
  for (int i = 0; i < prompt_tokens && held.ok(); ++i) {
    fresh.mutable_tokens()->add_ids((*held)[i]);
  }
  fresh.set_max_tokens(kMaxTokens);
  fresh.set_ignore_eos(true);
  fresh.set_use_cache(false);
  return RunComplete(server.stub(), fresh);
}

TEST(CudaServiceTest, MultiTurnReusesHistoryAndMatchesRecompute) {
  REQUIRE_CUDA_AND_MODEL();
  TestServer server(OnCuda(256ll << 20, 0));
  const char* questions[] = {"What is the capital of France?",
                             "And of Italy?", "Which of the two is larger?",
                             "Say it again in one word."};
  int32_t history = 0;
  for (const char* q : questions) {
    v1::ChatRequest req = UserTurn("e2e", q, kMaxTokens);
    req.set_ignore_eos(true);
    TurnOutput cached = RunChat(server.stub(), req);
    ASSERT_TRUE(cached.status.ok()) << cached.status.error_message();
    EXPECT_EQ(cached.summary.cached_tokens(), history) << q;
    TurnOutput recomputed =
        Recompute(server, "e2e", cached.summary.prompt_tokens());
    ASSERT_TRUE(recomputed.status.ok());
    EXPECT_EQ(recomputed.summary.cached_tokens(), 0);
    EXPECT_EQ(cached.tokens, recomputed.tokens) << q;
    history = cached.summary.session_tokens();
  }
}

using Transcript = std::map<std::string, std::vector<TurnOutput>>;

// Round-robin over the sessions: the least recently used one speaks next.
Transcript RunRounds(TestServer& server) {
  Transcript out;
  for (int round = 0; round < kRounds; ++round) {
    for (int s = 0; s < kSessions; ++s) {
      const std::string id = "s" + std::to_string(s);
      v1::ChatRequest r = UserTurn(
          id, "tell me about " + id + " in round " + std::to_string(round),
          kMaxTokens);
      r.set_ignore_eos(true);
      TurnOutput o = RunChat(server.stub(), r);
      EXPECT_TRUE(o.status.ok()) << id << ": " << o.status.error_message();
      out[id].push_back(o);
    }
  }
  return out;
}

class CudaTiersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_CUDA_AND_MODEL();
    if (reference_ == nullptr) {
      TestServer unlimited(OnCuda(512ll << 20, 0));
      reference_ = new Transcript(RunRounds(unlimited));
      block_bytes_ = unlimited.engine().kv_block_bytes();
      for (const auto& [id, turns] : *reference_) {
        max_blocks_ = std::max<int64_t>(
            max_blocks_, (turns.back().summary.session_tokens() + 15) / 16);
      }
    }
  }
  // Room for two sessions of the final size plus a running turn's blocks.
  int64_t DeviceBytes() const { return (2 * max_blocks_ + 2) * block_bytes_; }

  void ExpectSameAsReference(const Transcript& got) {
    for (const auto& [id, turns] : *reference_) {
      ASSERT_EQ(got.at(id).size(), turns.size());
      for (size_t r = 0; r < turns.size(); ++r) {
        EXPECT_EQ(got.at(id)[r].tokens, turns[r].tokens)
            << id << " round " << r;
      }
    }
  }

  static Transcript* reference_;
  static int64_t max_blocks_;
  static int64_t block_bytes_;
};

Transcript* CudaTiersTest::reference_ = nullptr;
int64_t CudaTiersTest::max_blocks_ = 0;
int64_t CudaTiersTest::block_bytes_ = 0;

TEST_F(CudaTiersTest, SwappedSessionsMatchUnlimitedMemory) {
  TestServer server(OnCuda(DeviceBytes(), 256ll << 20));
  const Transcript got = RunRounds(server);
  ExpectSameAsReference(got);
  int swap_ins = 0;
  for (const auto& [id, turns] : got) {
    for (size_t r = 1; r < turns.size(); ++r) {
      const v1::TurnSummary& s = turns[r].summary;
      EXPECT_EQ(s.cached_tokens(), turns[r - 1].summary.session_tokens())
          << id << " round " << r;
      if (s.cached_tier() == v1::CACHE_TIER_HOST) {
        EXPECT_GT(s.swap_in_seconds(), 0);
        ++swap_ins;
      }
    }
  }
  EXPECT_GT(swap_ins, 0);
  EXPECT_EQ(server.engine().Stats().recomputed_turns, 0);
  // A swapped-in session's next turn equals a recomputation.
  const std::string id = "s0";
  v1::ChatRequest r = UserTurn(id, "one more question", kMaxTokens);
  r.set_ignore_eos(true);
  TurnOutput last = RunChat(server.stub(), r);
  ASSERT_TRUE(last.status.ok());
  EXPECT_EQ(last.summary.cached_tier(), v1::CACHE_TIER_HOST);
  TurnOutput recomputed = Recompute(server, id, last.summary.prompt_tokens());
  EXPECT_EQ(last.tokens, recomputed.tokens);
}

TEST_F(CudaTiersTest, DroppedSessionsAreRecomputedExactly) {
  TestServer server(OnCuda(DeviceBytes(), 0));
  const Transcript got = RunRounds(server);
  ExpectSameAsReference(got);
  EXPECT_GT(server.engine().Stats().recomputed_turns, 0);
}

TEST_F(CudaTiersTest, EvictAllAndBackIsExact) {
  TestServer server(OnCuda(512ll << 20, 512ll << 20));
  const Transcript first = RunRounds(server);
  EXPECT_GT(server.engine().EvictAll(session_store::Tier::kDevice), 0);
  v1::ChatRequest r = UserTurn("s3", "and now?", kMaxTokens);
  r.set_ignore_eos(true);
  TurnOutput after = RunChat(server.stub(), r);
  ASSERT_TRUE(after.status.ok());
  EXPECT_EQ(after.summary.cached_tier(), v1::CACHE_TIER_HOST);
  TurnOutput recomputed =
      Recompute(server, "s3", after.summary.prompt_tokens());
  EXPECT_EQ(after.tokens, recomputed.tokens);
}

}  // namespace
}  // namespace kvsession::testing
