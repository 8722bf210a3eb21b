#include "session_store/session_store.h"

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_store/clock.h"
#include "tests/session_store/store_test_util.h"

namespace kvsession::session_store {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int32_t kBlockSize = 4;

class SessionStoreTest : public ::testing::Test {
 protected:
  void Init(int32_t num_blocks, int32_t max_sessions = 10000) {
    SessionStore::Options options;
    options.block_size = kBlockSize;
    options.num_device_blocks = num_blocks;
    options.max_sessions = max_sessions;
    options.idle_ttl = absl::Hours(1);
    options.block_bytes = 1024;
    options.clock = &clock_;
    // These tests count one session's blocks; sharing between sessions and
    // the host tier are tested in session_store_tiers_test.cc.
    options.share_prefixes = false;
    absl::StatusOr<std::unique_ptr<SessionStore>> store =
        SessionStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void SetUp() override { Init(64); }
  void TearDown() override {
    if (store_ != nullptr) {
      EXPECT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
    }
  }

  int32_t FreeBlocks() const {
    return store_->Stats().tier(Tier::kDevice).free_blocks;
  }

  FakeClock clock_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTest, CreateRejectsBadOptions) {
  SessionStore::Options options;
  options.num_device_blocks = 8;
  options.block_size = 0;
  EXPECT_EQ(SessionStore::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.block_size = 16;
  options.max_sessions = 0;
  EXPECT_EQ(SessionStore::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.max_sessions = 1;
  options.idle_ttl = absl::ZeroDuration();
  EXPECT_EQ(SessionStore::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.idle_ttl = absl::Seconds(1);
  options.num_device_blocks = -1;
  EXPECT_EQ(SessionStore::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.num_device_blocks = 1;
  EXPECT_TRUE(SessionStore::Create(options).ok());
}

TEST_F(SessionStoreTest, FirstTurnReusesNothing) {
  const std::vector<int32_t> prompt = Iota(10, 100);
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("a", prompt, true);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 0);
  EXPECT_EQ(plan->prompt_tokens, 10);
  EXPECT_EQ(plan->prefill_tokens(), 10);
  EXPECT_EQ(plan->reused_from, Tier::kDropped);
  ASSERT_TRUE(store_->Reserve("a", 10).ok());
  EXPECT_THAT(store_->block_table("a"), SizeIs(3));
  ASSERT_TRUE(store_->Commit("a", prompt).ok());
  store_->EndTurn("a");
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(prompt));
}

TEST_F(SessionStoreTest, AppendTurnReusesWholeHistory) {
  const std::vector<int32_t> p1 = Iota(10, 100);
  const std::vector<int32_t> g1 = Iota(5, 200);
  ASSERT_TRUE(RunTurn(*store_, "a", p1, g1).ok());
  // The last generated token was never fed back.
  EXPECT_EQ(store_->tokens("a").size(), 14u);
  const std::vector<int32_t> p2 = Concat(Concat(p1, g1), Iota(3, 300));
  absl::StatusOr<TurnPlan> plan = RunTurn(*store_, "a", p2, Iota(2, 400));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 14);
  EXPECT_EQ(plan->prompt_tokens, 18);
  EXPECT_EQ(plan->reused_from, Tier::kDevice);
  EXPECT_EQ(store_->tokens("a").size(), 19u);
  absl::StatusOr<SessionInfo> info = store_->GetInfo("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->turns, 2);
  EXPECT_EQ(info->prompt_tokens, 28);
  EXPECT_EQ(info->reused_tokens, 14);
  EXPECT_EQ(info->num_blocks, 5);
}

TEST_F(SessionStoreTest, EditInTheMiddleReusesCommonPrefix) {
  const std::vector<int32_t> history = Iota(20, 100);
  ASSERT_TRUE(RunTurn(*store_, "a", history, {}).ok());
  std::vector<int32_t> edited = Concat(history, Iota(4, 500));
  edited[7] = 999;
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("a", edited, false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 7);
  EXPECT_EQ(plan->prefill_tokens(), 17);
  EXPECT_THAT(store_->tokens("a"),
              ElementsAreArray(history.begin(), history.begin() + 7));
  store_->EndTurn("a");
}

TEST_F(SessionStoreTest, IdenticalPromptReusesAllButLastToken) {
  const std::vector<int32_t> prompt = Iota(12, 100);
  ASSERT_TRUE(RunTurn(*store_, "a", prompt, {}).ok());
  absl::StatusOr<TurnPlan> plan = RunTurn(*store_, "a", prompt, {}, false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 11);
  EXPECT_EQ(plan->prefill_tokens(), 1);
  // A shorter prompt (regenerate an earlier reply) reuses all but its last.
  const std::vector<int32_t> shorter(prompt.begin(), prompt.begin() + 5);
  plan = RunTurn(*store_, "a", shorter, {}, false);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 4);
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(shorter));
  // A one-token prompt always computes that token.
  plan = RunTurn(*store_, "a", std::vector<int32_t>{100}, {}, false);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reused_tokens, 0);
}

TEST_F(SessionStoreTest, TruncationReleasesBlocksPastThePrefix) {
  const std::vector<int32_t> history = Iota(20, 100);  // 5 blocks of 4
  ASSERT_TRUE(RunTurn(*store_, "a", history, {}).ok());
  EXPECT_EQ(FreeBlocks(), 59);
  const std::vector<int32_t> table = store_->block_table("a");

  // Prefix of 9 tokens: blocks 0 and 1 are full, block 2 holds token 8.
  // During the turn the old blocks wait (an undone turn puts them back)
  // and block 2 is written into a private copy; its end releases them.
  std::vector<int32_t> prompt = history;
  prompt[9] = 999;
  ASSERT_TRUE(store_->BeginTurn("a", prompt, false).ok());
  EXPECT_EQ(FreeBlocks(), 58);
  EXPECT_THAT(std::vector<int32_t>(store_->block_table("a").begin(),
                                   store_->block_table("a").begin() + 2),
              ElementsAreArray(table.begin(), table.begin() + 2));
  EXPECT_NE(store_->block_table("a")[2], table[2]);
  store_->EndTurn("a");
  EXPECT_EQ(FreeBlocks(), 61);
  const std::vector<int32_t> kept = store_->block_table("a");
  ASSERT_EQ(kept.size(), 3u);

  // Prefix of exactly 8 tokens: the third block goes too.
  prompt = std::vector<int32_t>(history.begin(), history.begin() + 9);
  prompt[8] = 999;
  ASSERT_TRUE(store_->BeginTurn("a", prompt, false).ok());
  EXPECT_THAT(store_->block_table("a"),
              ElementsAreArray(kept.begin(), kept.begin() + 2));
  store_->EndTurn("a");
  EXPECT_EQ(FreeBlocks(), 62);

  // Nothing in common: every block is released.
  ASSERT_TRUE(store_->BeginTurn("a", std::vector<int32_t>{7, 7}, false).ok());
  EXPECT_THAT(store_->block_table("a"), IsEmpty());
  store_->EndTurn("a");
  EXPECT_EQ(FreeBlocks(), 64);
}

TEST_F(SessionStoreTest, EndTurnReleasesUnusedReservation) {
  ASSERT_TRUE(store_->BeginTurn("a", Iota(5, 0), true).ok());
  ASSERT_TRUE(store_->Reserve("a", 100).ok());
  EXPECT_EQ(FreeBlocks(), 64 - 25);
  ASSERT_TRUE(store_->Reserve("a", 50).ok());  // never shrinks
  EXPECT_THAT(store_->block_table("a"), SizeIs(25));
  ASSERT_TRUE(store_->Commit("a", Iota(5, 0)).ok());
  store_->EndTurn("a");
  EXPECT_THAT(store_->block_table("a"), SizeIs(2));
  EXPECT_EQ(FreeBlocks(), 62);
}

TEST_F(SessionStoreTest, ReserveExhaustionLeavesStateUnchanged) {
  Init(4);
  // a runs (3 blocks), so nothing can be evicted to make room for b.
  ASSERT_TRUE(store_->BeginTurn("a", Iota(12, 0), true).ok());
  ASSERT_TRUE(store_->Reserve("a", 12).ok());
  ASSERT_TRUE(store_->Commit("a", Iota(12, 0)).ok());
  ASSERT_TRUE(store_->BeginTurn("b", Iota(8, 0), true).ok());
  absl::Status st = store_->Reserve("b", 8).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("needs 2 more KV blocks"));
  EXPECT_THAT(st.message(), HasSubstr("1 of 4 device blocks are free"));
  EXPECT_THAT(st.message(), HasSubstr("2 running sessions"));
  EXPECT_THAT(store_->block_table("b"), IsEmpty());
  EXPECT_EQ(FreeBlocks(), 1);
  EXPECT_TRUE(store_->CheckInvariants().ok());
  ASSERT_TRUE(store_->Reserve("b", 4).ok());
  EXPECT_EQ(FreeBlocks(), 0);
  store_->EndTurn("b");
  EXPECT_EQ(FreeBlocks(), 1);  // nothing committed, the block goes back
  store_->EndTurn("a");
}

TEST_F(SessionStoreTest, CommitPastReservationFails) {
  ASSERT_TRUE(store_->BeginTurn("a", Iota(6, 0), true).ok());
  ASSERT_TRUE(store_->Reserve("a", 6).ok());  // 2 blocks: 8 positions
  ASSERT_TRUE(store_->Commit("a", Iota(6, 0)).ok());
  absl::Status st = store_->Commit("a", Iota(3, 6));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("only 8 positions are reserved"));
  EXPECT_THAT(store_->tokens("a"), SizeIs(6));
  ASSERT_TRUE(store_->Commit("a", Iota(2, 6)).ok());
  store_->EndTurn("a");
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(Iota(8, 0)));
}

TEST_F(SessionStoreTest, ReserveAndCommitNeedARunningTurn) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(4, 0), {}).ok());
  EXPECT_EQ(store_->Reserve("a", 10).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Commit("a", Iota(1, 0)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Reserve("zz", 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Commit("zz", Iota(1, 0)).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->BeginTurn("a", Iota(5, 0), false).ok());
  EXPECT_EQ(store_->Reserve("a", -1).status().code(),
            absl::StatusCode::kInvalidArgument);
  store_->EndTurn("a");
}

TEST_F(SessionStoreTest, BusySessionIsAbortedAndUnchanged) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(10, 0), {}).ok());
  ASSERT_TRUE(store_->BeginTurn("a", Iota(12, 0), false).ok());
  ASSERT_TRUE(store_->Reserve("a", 12).ok());
  const std::vector<int32_t> table = store_->block_table("a");
  absl::StatusOr<TurnPlan> second = store_->BeginTurn("a", Iota(3, 50), true);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(second.status().message(),
              HasSubstr("session a is busy with another request"));
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(Iota(10, 0)));
  EXPECT_EQ(store_->block_table("a"), table);
  EXPECT_EQ(store_->Stats().busy_sessions, 1);
  ASSERT_TRUE(store_->Commit("a", Iota(2, 10)).ok());
  store_->EndTurn("a");
  EXPECT_TRUE(store_->BeginTurn("a", Iota(3, 50), true).ok());
  store_->EndTurn("a");
}

TEST_F(SessionStoreTest, BadInputLeavesStoreUnchanged) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(10, 0), {}).ok());
  const StoreStats before = store_->Stats();
  EXPECT_EQ(store_->BeginTurn("a", {}, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->BeginTurn("", Iota(2, 0), true).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<TurnPlan> missing = store_->BeginTurn("b", Iota(2, 0), false);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(store_->Contains("b"));
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(Iota(10, 0)));
  EXPECT_EQ(store_->Stats().sessions, before.sessions);
  EXPECT_EQ(store_->Stats().turns, before.turns);
  EXPECT_EQ(FreeBlocks(), before.tier(Tier::kDevice).free_blocks);
  EXPECT_FALSE(store_->GetInfo("a")->busy);
}

TEST_F(SessionStoreTest, DeleteFreesAllBlocks) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(17, 0), {}).ok());  // 5 blocks
  ASSERT_TRUE(RunTurn(*store_, "b", Iota(8, 0), {}).ok());   // 2 blocks
  EXPECT_EQ(FreeBlocks(), 57);
  ASSERT_TRUE(store_->Delete("a").ok());
  EXPECT_EQ(FreeBlocks(), 62);
  EXPECT_FALSE(store_->Contains("a"));
  EXPECT_EQ(store_->Delete("a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetInfo("a").status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(store_->BeginTurn("b", Iota(9, 0), false).ok());
  absl::Status st = store_->Delete("b");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("busy"));
  EXPECT_TRUE(store_->Contains("b"));
  store_->EndTurn("b");
  ASSERT_TRUE(store_->Delete("b").ok());
  EXPECT_EQ(FreeBlocks(), 64);
  EXPECT_EQ(store_->Stats().sessions, 0);
  EXPECT_EQ(store_->Stats().deleted_sessions, 2);
}

TEST_F(SessionStoreTest, IdleSessionsExpireBusyOnesSurvive) {
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(8, 0), {}).ok());
  clock_.Advance(absl::Minutes(30));
  ASSERT_TRUE(RunTurn(*store_, "b", Iota(8, 0), {}).ok());
  ASSERT_TRUE(store_->BeginTurn("c", Iota(8, 0), true).ok());
  ASSERT_TRUE(store_->Reserve("c", 8).ok());

  clock_.Set(t0 + absl::Hours(1));  // exactly the TTL: not yet
  EXPECT_EQ(store_->ExpireIdle(), 0);
  clock_.Set(t0 + absl::Hours(1) + absl::Seconds(1));
  EXPECT_EQ(store_->ExpireIdle(), 1);
  EXPECT_FALSE(store_->Contains("a"));
  EXPECT_TRUE(store_->Contains("b"));
  EXPECT_EQ(FreeBlocks(), 60);

  clock_.Advance(absl::Hours(10));
  EXPECT_EQ(store_->ExpireIdle(), 1);  // b; c is running
  EXPECT_TRUE(store_->Contains("c"));
  EXPECT_EQ(store_->ExpireIdle(), 0);

  store_->EndTurn("c");  // last used now
  clock_.Advance(absl::Minutes(59));
  EXPECT_EQ(store_->ExpireIdle(), 0);
  clock_.Advance(absl::Minutes(2));
  EXPECT_EQ(store_->ExpireIdle(), 1);
  EXPECT_EQ(FreeBlocks(), 64);
  EXPECT_EQ(store_->Stats().expired_sessions, 3);
}

TEST_F(SessionStoreTest, UseRefreshesTtl) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(4, 0), {}).ok());
  ASSERT_TRUE(RunTurn(*store_, "b", Iota(4, 0), {}).ok());
  clock_.Advance(absl::Minutes(50));
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(5, 0), {}, false).ok());
  clock_.Advance(absl::Minutes(20));
  EXPECT_EQ(store_->ExpireIdle(), 1);
  EXPECT_TRUE(store_->Contains("a"));
  EXPECT_FALSE(store_->Contains("b"));
}

TEST_F(SessionStoreTest, MaxSessions) {
  Init(64, /*max_sessions=*/3);
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(4, 0), {}).ok());
  clock_.Advance(absl::Minutes(30));
  ASSERT_TRUE(RunTurn(*store_, "b", Iota(4, 0), {}).ok());
  ASSERT_TRUE(store_->BeginTurn("c", Iota(4, 0), true).ok());
  absl::StatusOr<TurnPlan> d = store_->BeginTurn("d", Iota(4, 0), true);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(d.status().message(), HasSubstr("the limit is 3"));
  EXPECT_FALSE(store_->Contains("d"));
  EXPECT_EQ(store_->Stats().sessions, 3);
  // Existing sessions still take turns at the limit.
  clock_.Advance(absl::Minutes(20));
  EXPECT_TRUE(RunTurn(*store_, "a", Iota(6, 0), {}, false).ok());

  // Once b is past its TTL (a is not), opening a session reclaims b.
  clock_.Advance(absl::Minutes(41));
  EXPECT_TRUE(RunTurn(*store_, "d", Iota(4, 0), {}).ok());
  EXPECT_FALSE(store_->Contains("b"));
  EXPECT_TRUE(store_->Contains("a"));
  EXPECT_TRUE(store_->Contains("c"));  // busy for 61 minutes, kept
  EXPECT_EQ(store_->Stats().sessions, 3);
  store_->EndTurn("c");
}

TEST_F(SessionStoreTest, GetInfoAndStats) {
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(9, 0), Iota(3, 50)).ok());
  clock_.Advance(absl::Seconds(5));
  ASSERT_TRUE(store_->BeginTurn("b", Iota(4, 0), true).ok());
  ASSERT_TRUE(store_->Reserve("b", 4).ok());

  absl::StatusOr<SessionInfo> a = store_->GetInfo("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->id, "a");
  EXPECT_EQ(a->num_tokens, 11);
  EXPECT_EQ(a->num_blocks, 3);
  EXPECT_EQ(a->tier, Tier::kDevice);
  EXPECT_FALSE(a->busy);
  EXPECT_EQ(a->created, t0);
  EXPECT_EQ(a->last_used, t0);
  EXPECT_TRUE(store_->GetInfo("b")->busy);

  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.sessions, 2);
  EXPECT_EQ(stats.busy_sessions, 1);
  const TierStats& dev = stats.tier(Tier::kDevice);
  EXPECT_EQ(dev.sessions, 2);
  EXPECT_EQ(dev.capacity_blocks, 64);
  EXPECT_EQ(dev.used_blocks, 4);
  EXPECT_EQ(dev.free_blocks, 60);
  EXPECT_EQ(dev.capacity_bytes, 64 * 1024);
  EXPECT_EQ(dev.used_bytes, 4 * 1024);
  EXPECT_EQ(stats.tier(Tier::kHost).capacity_blocks, 0);
  EXPECT_EQ(stats.tier(Tier::kDropped).sessions, 0);
  EXPECT_EQ(stats.turns, 2);
  EXPECT_EQ(stats.prompt_tokens, 13);
  store_->EndTurn("b");
  EXPECT_EQ(TierName(Tier::kHost), "host");
}

TEST_F(SessionStoreTest, PagingVisitsEverySessionOnce) {
  Init(2500);
  std::vector<std::string> ids;
  for (int i = 0; i < 2500; ++i) ids.push_back(absl::StrFormat("s%05d", i));
  std::vector<std::string> shuffled = ids;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  for (const std::string& id : shuffled) {
    ASSERT_TRUE(RunTurn(*store_, id, std::vector<int32_t>{1}, {}).ok());
  }
  for (int32_t page_size : {1000, 7}) {
    std::vector<std::string> seen;
    std::string token;
    int pages = 0;
    do {
      absl::StatusOr<SessionPage> page = store_->List(page_size, token);
      ASSERT_TRUE(page.ok()) << page.status();
      ASSERT_FALSE(page->sessions.empty());
      ASSERT_LE(page->sessions.size(), static_cast<size_t>(page_size));
      for (const SessionInfo& info : page->sessions) seen.push_back(info.id);
      token = page->next_page_token;
      ++pages;
    } while (!token.empty());
    EXPECT_EQ(seen, ids) << "page size " << page_size;
    EXPECT_EQ(pages, (2500 + page_size - 1) / page_size);
  }
}

TEST_F(SessionStoreTest, PagingIsStableWhileSessionsChange) {
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(RunTurn(*store_, absl::StrFormat("s%02d", i),
                        std::vector<int32_t>{1}, {})
                    .ok());
  }
  absl::StatusOr<SessionPage> page = store_->List(10, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->sessions.back().id, "s09");
  // The last id of the page goes away and new ids appear on both sides.
  ASSERT_TRUE(store_->Delete("s09").ok());
  ASSERT_TRUE(store_->Delete("s10").ok());
  ASSERT_TRUE(RunTurn(*store_, "s00x", std::vector<int32_t>{1}, {}).ok());
  ASSERT_TRUE(RunTurn(*store_, "s15x", std::vector<int32_t>{1}, {}).ok());
  page = store_->List(10, page->next_page_token);
  ASSERT_TRUE(page.ok());
  std::vector<std::string> ids;
  for (const SessionInfo& info : page->sessions) ids.push_back(info.id);
  EXPECT_EQ(ids,
            (std::vector<std::string>{"s11", "s12", "s13", "s14", "s15", "s15x",
                                      "s16", "s17", "s18", "s19"}));
  // An exactly full last page has no next token.
  page = store_->List(11, page->next_page_token);
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(page->sessions, SizeIs(10));
  EXPECT_TRUE(page->next_page_token.empty());
}

TEST_F(SessionStoreTest, ListRejectsBadArguments) {
  EXPECT_EQ(store_->List(0, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List(-3, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List(1001, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List(10, "not a token!").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SessionPage> empty = store_->List(1000, "");
  ASSERT_TRUE(empty.ok());
  EXPECT_THAT(empty->sessions, IsEmpty());
  EXPECT_TRUE(empty->next_page_token.empty());
}

TEST_F(SessionStoreTest, CheckInvariantsDetectsLeakedReference) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(8, 0), {}).ok());
  ASSERT_TRUE(store_->CheckInvariants().ok());
  BlockPool& pool = SessionStorePeer::pool(*store_, Tier::kDevice);
  const int32_t block = store_->block_table("a")[1];
  pool.AddRef(block);
  absl::Status st = store_->CheckInvariants();
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("reference count is 2"));
  pool.Release(std::vector<int32_t>{block});
  EXPECT_TRUE(store_->CheckInvariants().ok());
  // A block that no session holds but the pool counts as used.
  absl::StatusOr<std::vector<int32_t>> orphan = pool.Allocate(1);
  ASSERT_TRUE(orphan.ok());
  EXPECT_FALSE(store_->CheckInvariants().ok());
  pool.Release(*orphan);
}

TEST_F(SessionStoreTest, CheckInvariantsDetectsIdleSessionOutsideLru) {
  ASSERT_TRUE(RunTurn(*store_, "a", Iota(8, 0), {}).ok());
  SessionStorePeer::UnlinkIdle(*store_, "a");
  absl::Status st = store_->CheckInvariants();
  EXPECT_THAT(st.message(), HasSubstr("not in the device LRU"));
  store_.reset();
}

}  // namespace
}  // namespace kvsession::session_store
