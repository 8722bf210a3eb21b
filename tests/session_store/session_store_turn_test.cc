// How a turn ends: kept with a history of its own choosing (EndTurn), or
// undone (AbortTurn); the history's tail without KV; ephemeral sessions.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_store/clock.h"
#include "session_store/session_store.h"
#include "tests/session_store/store_test_util.h"

namespace kvsession::session_store {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int32_t kBlockSize = 4;

class SessionStoreTurnTest : public ::testing::Test {
 protected:
  void Init(int32_t num_blocks, int32_t max_sessions = 100,
            bool share = true) {
    SessionStore::Options options;
    options.block_size = kBlockSize;
    options.num_device_blocks = num_blocks;
    options.max_sessions = max_sessions;
    options.max_pinned_tokens = 1000;
    options.share_prefixes = share;
    options.clock = &clock_;
    absl::StatusOr<std::unique_ptr<SessionStore>> store =
        SessionStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void SetUp() override { Init(64); }
  void TearDown() override {
    EXPECT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
  }

  // Computes `tokens` into the busy session (Reserve + Commit).
  void Compute(std::string_view id, std::span<const int32_t> tokens) {
    const int32_t have = static_cast<int32_t>(store_->tokens(id).size());
    ASSERT_TRUE(store_->Reserve(id, have + static_cast<int32_t>(tokens.size()))
                    .ok());
    ASSERT_TRUE(store_->Commit(id, tokens).ok());
  }
  // A kept turn whose whole prompt and reply have KV.
  void Turn(std::string_view id, const std::vector<int32_t>& history) {
    absl::StatusOr<TurnPlan> plan = store_->BeginTurn(id, history, true);
    ASSERT_TRUE(plan.ok()) << plan.status();
    Compute(id, std::span<const int32_t>(history).subspan(plan->reused_tokens));
    store_->EndTurn(id, history);
  }
  int32_t UsedBlocks() const {
    return store_->Stats().tier(Tier::kDevice).used_blocks;
  }

  FakeClock clock_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTurnTest, AbortTurnRestoresHistoryPinAndCounters) {
  const std::vector<int32_t> history = Iota(10, 100);
  const std::vector<TranscriptMessage> transcript = {{"user", "hi"}};
  ASSERT_TRUE(store_->BeginTurn("s", history, true).ok());
  Compute("s", history);
  store_->EndTurn("s", history, transcript);
  const std::vector<int32_t> prompt = Concat(history, Iota(9, 500));
  absl::StatusOr<TurnPlan> plan =
      store_->BeginTurn("s", prompt, true, /*pin=*/true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 10);
  Compute("s", std::span<const int32_t>(prompt).subspan(10, 6));
  store_->AbortTurn("s");

  absl::StatusOr<SessionInfo> info = store_->GetInfo("s");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->num_tokens, 10);
  EXPECT_EQ(info->turns, 1);
  EXPECT_FALSE(info->pinned);
  EXPECT_EQ(info->transcript, transcript);
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  EXPECT_EQ(UsedBlocks(), 3);  // 10 tokens in blocks of 4
  EXPECT_EQ(store_->Stats().pinned_tokens, 0);
  // The history's KV is intact: a retry reuses all of it.
  plan = store_->BeginTurn("s", prompt, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 10);
  store_->AbortTurn("s");
}

TEST_F(SessionStoreTurnTest, AbortTurnAfterAnEditPutsTheOldKvBack) {
  const std::vector<int32_t> history = Iota(12, 100);
  Turn("s", history);
  const std::vector<int32_t> table = store_->block_table("s");
  // A full-history turn that edits position 5 diverges there: it writes
  // into a copy of block 1 while the old blocks 1 and 2 wait.
  std::vector<int32_t> edited = history;
  edited[5] = 999;
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("s", edited, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 5);
  EXPECT_NE(store_->block_table("s")[1], table[1]);
  EXPECT_EQ(store_->Stats().cow_blocks, 1);
  Compute("s", std::span<const int32_t>(edited).subspan(5));
  EXPECT_EQ(UsedBlocks(), 3 + 2);
  store_->AbortTurn("s");

  // History, KV and blocks are the old ones.
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  EXPECT_THAT(store_->tokens("s"), ElementsAreArray(history));
  EXPECT_THAT(store_->block_table("s"), ElementsAreArray(table));
  EXPECT_EQ(UsedBlocks(), 3);
  const std::vector<int32_t> next = Concat(history, Iota(3, 700));
  plan = store_->BeginTurn("s", next, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 12);
  store_->AbortTurn("s");
}

TEST_F(SessionStoreTurnTest, AbortTurnWithoutRoomForTheCopyKeepsThePrefix) {
  Init(3);
  const std::vector<int32_t> history = Iota(12, 100);  // all 3 blocks
  Turn("s", history);
  std::vector<int32_t> edited = history;
  edited[5] = 999;
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("s", edited, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 5);
  Compute("s", std::span<const int32_t>(edited).subspan(5));
  store_->AbortTurn("s");
  // No room to keep the old blocks: the history is the old one; only its
  // first 5 tokens still have KV, the rest is tail.
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  EXPECT_EQ(store_->GetInfo("s")->num_tokens, 12);
  EXPECT_THAT(store_->tokens("s"), ElementsAreArray(Iota(5, 100)));
  EXPECT_EQ(UsedBlocks(), 2);
  // The next turn (a regenerate of the last token) computes the tail.
  std::vector<int32_t> next = history;
  next.back() = 700;
  plan = store_->BeginTurn("s", next, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 5);
  Compute("s", std::span<const int32_t>(next).subspan(5));
  store_->EndTurn("s", next);
  EXPECT_THAT(store_->tokens("s"), ElementsAreArray(next));
}

TEST_F(SessionStoreTurnTest, UndoBlocksGiveWayWhenATurnNeedsRoom) {
  Init(6);
  const std::vector<int32_t> history = Iota(12, 100);  // 3 blocks
  Turn("s", history);
  // Diverges at 4 (a block boundary): blocks 1 and 2 wait for the end.
  std::vector<int32_t> edited = Iota(4, 100);
  for (int i = 0; i < 16; ++i) edited.push_back(500 + i);  // 5 blocks
  ASSERT_TRUE(store_->BeginTurn("s", edited, true).ok());
  EXPECT_EQ(UsedBlocks(), 3);
  // 5 blocks fit only without the waiting ones.
  ASSERT_TRUE(store_->Reserve("s", 20).ok());
  EXPECT_EQ(UsedBlocks(), 5);
  store_->AbortTurn("s");
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  EXPECT_THAT(store_->tokens("s"), ElementsAreArray(Iota(4, 100)));
}

TEST_F(SessionStoreTurnTest, AbortTurnRemovesASessionItCreated) {
  const std::vector<int32_t> prompt = Iota(9, 100);
  ASSERT_TRUE(store_->BeginTurn("new", prompt, true, /*pin=*/true).ok());
  Compute("new", prompt);
  store_->AbortTurn("new");
  EXPECT_EQ(store_->GetInfo("new").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(UsedBlocks(), 0);
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.sessions, 0);
  EXPECT_EQ(stats.pinned_sessions, 0);
  EXPECT_EQ(stats.busy_sessions, 0);
}

TEST_F(SessionStoreTurnTest, HistoryMayEndInATailWithoutKv) {
  const std::vector<int32_t> prompt = Iota(8, 100);
  ASSERT_TRUE(store_->BeginTurn("s", prompt, true).ok());
  Compute("s", prompt);
  // The last sampled token was never fed back: it has no KV.
  const std::vector<int32_t> history = Concat(prompt, std::vector{42});
  store_->EndTurn("s", history);
  EXPECT_EQ(store_->GetInfo("s")->num_tokens, 9);
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  EXPECT_THAT(store_->tokens("s"), ElementsAreArray(prompt));
  EXPECT_EQ(UsedBlocks(), 2);
  const std::vector<int32_t> next = Concat(history, Iota(4, 300));
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("s", next, true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 8);
  EXPECT_EQ(plan->prompt_tokens, 13);
  store_->AbortTurn("s");
  // Undone: the tail is back.
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
}

TEST_F(SessionStoreTurnTest, EndTurnDropsComputedTokensPastTheHistory) {
  const std::vector<int32_t> prompt = Iota(6, 100);
  const std::vector<int32_t> generated = Iota(6, 200);
  ASSERT_TRUE(store_->BeginTurn("s", prompt, true).ok());
  Compute("s", prompt);
  Compute("s", generated);
  // Only two generated tokens were sent to the client.
  const std::vector<int32_t> kept =
      Concat(prompt, std::span<const int32_t>(generated).first(2));
  store_->EndTurn("s", kept);
  EXPECT_THAT(store_->tokens("s"), ElementsAreArray(kept));
  EXPECT_EQ(UsedBlocks(), 2);
}

TEST_F(SessionStoreTurnTest, CutInsideASharedBlockGivesItBack) {
  const std::vector<int32_t> prefix = Iota(8, 100);  // two full blocks
  Turn("a", Concat(prefix, std::vector{1}));
  absl::StatusOr<TurnPlan> plan =
      store_->BeginTurn("b", Concat(prefix, std::vector{2}), true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->shared_tokens, 8);
  // b keeps 6 tokens: the second block is a's too, so b may not write into
  // it later; b gives it back and its last 2 tokens become tail.
  store_->EndTurn("b", std::span<const int32_t>(prefix).first(6));
  EXPECT_THAT(store_->tokens("b"), ElementsAreArray(Iota(4, 100)));
  EXPECT_EQ(store_->GetInfo("b")->num_tokens, 6);
  EXPECT_EQ(store_->GetInfo("b")->num_blocks, 1);
  // a's block is private now; a cut inside it leaves the index, so c
  // shares only the first block.
  ASSERT_TRUE(store_->BeginTurn("a", Concat(prefix, std::vector{1}), true).ok());
  store_->EndTurn("a", std::span<const int32_t>(prefix).first(7));
  plan = store_->BeginTurn("c", Concat(prefix, std::vector{3}), true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->shared_tokens, 4);
  store_->AbortTurn("c");
}

TEST_F(SessionStoreTurnTest, DroppedSessionKeepsItsTail) {
  const std::vector<int32_t> prompt = Iota(8, 100);
  ASSERT_TRUE(store_->BeginTurn("s", prompt, true).ok());
  Compute("s", prompt);
  const std::vector<int32_t> history = Concat(prompt, std::vector{42});
  store_->EndTurn("s", history);
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 1);  // no host tier: dropped
  EXPECT_EQ(store_->GetInfo("s")->tier, Tier::kDropped);
  EXPECT_EQ(store_->GetInfo("s")->num_tokens, 9);
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  absl::StatusOr<TurnPlan> plan =
      store_->BeginTurn("s", Concat(history, std::vector{7}), true);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->recomputed);
  EXPECT_EQ(plan->reused_tokens, 0);
  store_->AbortTurn("s");
  EXPECT_THAT(store_->History("s"), ElementsAreArray(history));
  EXPECT_EQ(store_->GetInfo("s")->tier, Tier::kDevice);
}

TEST_F(SessionStoreTurnTest, EphemeralSessionsAreNoSessions) {
  Init(64, /*max_sessions=*/1);
  Turn("a", Iota(5, 100));
  // The limit is reached, but a one-off turn opens no session.
  const std::vector<int32_t> prompt = Iota(6, 300);
  ASSERT_TRUE(store_->BeginTurn("\x01one", prompt, true, std::nullopt, true,
                                /*ephemeral=*/true)
                  .ok());
  Compute("\x01one", prompt);
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.sessions, 1);
  EXPECT_EQ(stats.busy_sessions, 0);
  EXPECT_EQ(stats.tier(Tier::kDevice).sessions, 1);
  absl::StatusOr<SessionPage> page = store_->List(10, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->sessions.size(), 1u);
  EXPECT_EQ(page->sessions[0].id, "a");
  EXPECT_EQ(store_->GetInfo("\x01one").status().code(),
            absl::StatusCode::kNotFound);
  store_->AbortTurn("\x01one");
  EXPECT_EQ(UsedBlocks(), 2);  // a's only
}

TEST_F(SessionStoreTurnTest, EphemeralSessionsAreNeverNamed) {
  Init(2);
  const std::vector<int32_t> prompt = Iota(20, 100);
  ASSERT_TRUE(store_->BeginTurn("\x01one", prompt, true, std::nullopt, true,
                                /*ephemeral=*/true)
                  .ok());
  absl::StatusOr<uint64_t> r = store_->Reserve("\x01one", 20);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("one-off"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("\x01")));
  store_->AbortTurn("\x01one");
  EXPECT_EQ(store_->Stats().sessions, 0);
}

TEST_F(SessionStoreTurnTest, ARunningTurnShowsOnlyOnceItEnds) {
  const std::vector<int32_t> history = Iota(6, 100);
  Turn("s", history);
  const std::vector<int32_t> next = Concat(history, Iota(5, 300));
  ASSERT_TRUE(store_->BeginTurn("s", next, true).ok());
  Compute("s", std::span<const int32_t>(next).subspan(6));
  absl::StatusOr<SessionInfo> info = store_->GetInfo("s");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->busy);
  EXPECT_EQ(info->num_tokens, 6);
  EXPECT_EQ(info->turns, 1);
  store_->EndTurn("s", next);
  info = store_->GetInfo("s");
  EXPECT_EQ(info->num_tokens, 11);
  EXPECT_EQ(info->turns, 2);
}

}  // namespace
}  // namespace kvsession::session_store
