// The tiers of the session store with exact expectations: swap out and in,
// dropping, busy and pinned sessions under pressure, per-tier idle limits,
// shared prefix blocks with copy-on-write, copy fences, and the invariant
// checker on the state these add.
#include <algorithm>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_store/clock.h"
#include "session_store/session_store.h"
#include "tests/session_store/store_test_util.h"

namespace kvsession::session_store {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int32_t kBlockSize = 4;

std::vector<int32_t> One(int32_t token) { return {token}; }

class SessionStoreTiersTest : public ::testing::Test {
 protected:
  SessionStore::Options DefaultOptions(int32_t device, int32_t host) {
    SessionStore::Options options;
    options.block_size = kBlockSize;
    options.num_device_blocks = device;
    options.num_host_blocks = host;
    options.idle_ttl = absl::Hours(1);
    options.max_pinned_tokens = 1000;
    options.share_prefixes = true;
    options.clock = &clock_;
    return options;
  }
  void Init(const SessionStore::Options& options) {
    absl::StatusOr<std::unique_ptr<SessionStore>> store =
        SessionStore::Create(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void Init(int32_t device, int32_t host) {
    Init(DefaultOptions(device, host));
  }
  void TearDown() override {
    if (store_ != nullptr) {
      EXPECT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
    }
  }

  // A whole turn that must succeed; time moves on by a second first so
  // that the LRU order is the order of the calls.
  TurnPlan Run(std::string_view id, const std::vector<int32_t>& prompt,
               std::optional<bool> pin = std::nullopt) {
    clock_.Advance(absl::Seconds(1));
    absl::StatusOr<TurnPlan> plan =
        RunTurn(*store_, id, prompt, {}, /*create_if_missing=*/true, pin);
    EXPECT_TRUE(plan.ok()) << id << ": " << plan.status();
    EXPECT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
    return plan.ok() ? *plan : TurnPlan();
  }

  Tier TierOf(std::string_view id) const {
    absl::StatusOr<SessionInfo> info = store_->GetInfo(id);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->tier : Tier::kDropped;
  }
  std::vector<int32_t> Table(std::string_view id) const {
    return store_->block_table(id);
  }
  const TierStats& Tiers(const StoreStats& s, Tier t) const {
    return s.tier(t);
  }

  FakeClock clock_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTiersTest, ReserveSwapsOutLruAndBeginTurnSwapsItIn) {
  Init(/*device=*/8, /*host=*/16);
  Run("a", Iota(16, 0));
  Run("b", Iota(16, 100));
  EXPECT_THAT(store_->TakeCopies(), IsEmpty());
  const std::vector<int32_t> a_device = Table("a");

  // c needs 2 blocks of a full device tier: a, the least recently used,
  // moves to the host, one copy per block.
  ASSERT_TRUE(store_->BeginTurn("c", Iota(8, 200), true).ok());
  absl::StatusOr<uint64_t> ticket = store_->Reserve("c", 8);
  ASSERT_TRUE(ticket.ok()) << ticket.status();
  std::vector<CopyBatch> copies = store_->TakeCopies();
  ASSERT_THAT(copies, SizeIs(1));
  EXPECT_EQ(copies[0].ticket, 1u);
  EXPECT_EQ(copies[0].kind, CopyBatch::Kind::kSwapOut);
  EXPECT_EQ(copies[0].from, Tier::kDevice);
  EXPECT_EQ(copies[0].to, Tier::kHost);
  ASSERT_THAT(copies[0].copies, SizeIs(4));
  EXPECT_EQ(TierOf("a"), Tier::kHost);
  EXPECT_EQ(TierOf("b"), Tier::kDevice);
  const std::vector<int32_t> a_host = Table("a");
  ASSERT_THAT(a_host, SizeIs(4));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(copies[0].copies[i].src, a_device[i]) << i;
    EXPECT_EQ(copies[0].copies[i].dst, a_host[i]) << i;
  }
  // c's blocks were a's: it waits for the swap-out to read them.
  EXPECT_EQ(*ticket, 1u);
  ASSERT_TRUE(store_->Commit("c", Iota(8, 200)).ok());
  store_->EndTurn("c");
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(Iota(16, 0)));

  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kHost), 1);
  EXPECT_EQ(stats.swap_out_blocks, 4);
  EXPECT_EQ(Tiers(stats, Tier::kHost).used_blocks, 4);
  EXPECT_EQ(Tiers(stats, Tier::kHost).sessions, 1);
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 6);

  // a's next turn swaps its 4 blocks in; making room swaps b out first.
  clock_.Advance(absl::Seconds(1));
  const std::vector<int32_t> prompt = Concat(Iota(16, 0), Iota(4, 300));
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("a", prompt, false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 16);
  EXPECT_EQ(plan->reused_from, Tier::kHost);
  EXPECT_EQ(plan->swapped_in_blocks, 4);
  EXPECT_FALSE(plan->recomputed);
  copies = store_->TakeCopies();
  ASSERT_THAT(copies, SizeIs(2));
  EXPECT_EQ(copies[0].ticket, 2u);
  EXPECT_EQ(copies[0].kind, CopyBatch::Kind::kSwapOut);
  EXPECT_THAT(copies[0].copies, SizeIs(4));
  EXPECT_EQ(copies[1].ticket, 3u);
  EXPECT_EQ(copies[1].kind, CopyBatch::Kind::kSwapIn);
  EXPECT_EQ(copies[1].from, Tier::kHost);
  EXPECT_EQ(copies[1].to, Tier::kDevice);
  EXPECT_EQ(plan->ready_ticket, copies[1].ticket);
  const std::vector<int32_t> a_back = Table("a");
  ASSERT_THAT(copies[1].copies, SizeIs(4));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(copies[1].copies[i].src, a_host[i]) << i;
    EXPECT_EQ(copies[1].copies[i].dst, a_back[i]) << i;
  }
  EXPECT_EQ(TierOf("a"), Tier::kDevice);
  EXPECT_EQ(TierOf("b"), Tier::kHost);
  ASSERT_TRUE(store_->Reserve("a", 20).ok());
  ASSERT_TRUE(store_->Commit("a", Iota(4, 300)).ok());
  store_->EndTurn("a");

  stats = store_->Stats();
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kHost), 2);
  EXPECT_EQ(stats.swap_out_blocks, 8);
  EXPECT_EQ(stats.swap_in_blocks, 4);
  EXPECT_EQ(stats.reused_tokens[static_cast<int>(Tier::kHost)], 16);
  EXPECT_EQ(Tiers(stats, Tier::kHost).used_blocks, 4);  // b's
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 7);
}

TEST_F(SessionStoreTiersTest, SwapInSkipsBlocksSharedOnTheDevice) {
  Init(/*device=*/8, /*host=*/16);
  const std::vector<int32_t> system = Iota(8, 500);
  Run("a", Concat(system, Iota(4, 0)));  // 2 shared + 1 private
  EXPECT_EQ(Run("b", Concat(system, Iota(4, 50))).shared_tokens, 8);
  Run("c", Iota(8, 900));
  // d needs 3 blocks of the 2 free: a, least recently used, goes to the
  // host; only its private block frees device room.
  ASSERT_TRUE(RunTurn(*store_, "d", Iota(12, 700), {}).ok());
  ASSERT_EQ(TierOf("a"), Tier::kHost);
  store_->TakeCopies();
  const std::vector<int32_t> b_table = Table("b");

  absl::StatusOr<TurnPlan> plan =
      store_->BeginTurn("a", Concat(Concat(system, Iota(4, 0)), One(7)), false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 12);
  EXPECT_EQ(plan->reused_from, Tier::kHost);
  // The system prompt blocks are b's; only the private block is copied.
  EXPECT_EQ(plan->swapped_in_blocks, 1);
  const std::vector<int32_t> a_table = Table("a");
  EXPECT_EQ(a_table[0], b_table[0]);
  EXPECT_EQ(a_table[1], b_table[1]);
  std::vector<CopyBatch> copies = store_->TakeCopies();
  ASSERT_FALSE(copies.empty());
  EXPECT_EQ(copies.back().kind, CopyBatch::Kind::kSwapIn);
  ASSERT_THAT(copies.back().copies, SizeIs(1));
  EXPECT_EQ(copies.back().copies[0].dst, a_table[2]);
  EXPECT_EQ(plan->ready_ticket, copies.back().ticket);
  store_->EndTurn("a");
  EXPECT_EQ(store_->Stats().swap_in_blocks, 1);
}

TEST_F(SessionStoreTiersTest, FullHostDropsItsLruSession) {
  Init(/*device=*/4, /*host=*/2);
  Run("a", Iota(8, 0));
  Run("b", Iota(8, 100));
  Run("c", Iota(8, 200));  // a -> host
  EXPECT_EQ(TierOf("a"), Tier::kHost);
  Run("d", Iota(8, 300));  // b -> host, which drops a to make room
  EXPECT_EQ(TierOf("a"), Tier::kDropped);
  EXPECT_EQ(TierOf("b"), Tier::kHost);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kHost), 2);
  EXPECT_EQ(stats.evicted(Tier::kHost, Tier::kDropped), 1);
  EXPECT_EQ(Tiers(stats, Tier::kDropped).sessions, 1);

  // Dropped: the history stays, the blocks are gone.
  absl::StatusOr<SessionInfo> info = store_->GetInfo("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->num_tokens, 8);
  EXPECT_EQ(info->num_blocks, 0);
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(Iota(8, 0)));
  EXPECT_THAT(Table("a"), IsEmpty());

  ASSERT_TRUE(store_->Delete("d").ok());
  const std::vector<int32_t> prompt = Concat(Iota(8, 0), Iota(4, 400));
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn("a", prompt, false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 0);
  EXPECT_TRUE(plan->recomputed);
  EXPECT_EQ(plan->reused_from, Tier::kDropped);
  EXPECT_EQ(plan->prefill_tokens(), 12);
  EXPECT_EQ(plan->ready_ticket, 0u);
  EXPECT_THAT(store_->tokens("a"), IsEmpty());
  // 3 blocks, 2 free: c goes to the host, which drops b for it.
  ASSERT_TRUE(store_->Reserve("a", 12).ok());
  ASSERT_TRUE(store_->Commit("a", prompt).ok());
  store_->EndTurn("a");
  EXPECT_THAT(store_->tokens("a"), ElementsAreArray(prompt));
  EXPECT_EQ(TierOf("b"), Tier::kDropped);
  EXPECT_EQ(TierOf("c"), Tier::kHost);
  stats = store_->Stats();
  EXPECT_EQ(stats.evicted(Tier::kHost, Tier::kDropped), 2);
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kDropped), 0);
}

TEST_F(SessionStoreTiersTest, NoHostTierDropsAtOnce) {
  Init(/*device=*/4, /*host=*/0);
  Run("a", Iota(8, 0));
  Run("b", Iota(8, 100));
  Run("c", Iota(8, 200));
  EXPECT_EQ(TierOf("a"), Tier::kDropped);
  EXPECT_THAT(store_->TakeCopies(), IsEmpty());
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kDropped), 1);
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kHost), 0);
  EXPECT_EQ(stats.swap_out_blocks, 0);
  EXPECT_EQ(Tiers(stats, Tier::kHost).capacity_blocks, 0);
}

TEST_F(SessionStoreTiersTest, SessionLargerThanTheHostIsDropped) {
  Init(/*device=*/8, /*host=*/4);
  Run("big", Iota(20, 0));  // 5 blocks
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 1);
  EXPECT_EQ(TierOf("big"), Tier::kDropped);
  EXPECT_THAT(store_->TakeCopies(), IsEmpty());
  EXPECT_EQ(store_->Stats().evicted(Tier::kDevice, Tier::kDropped), 1);
}

TEST_F(SessionStoreTiersTest, BusySessionsAreNeverEvicted) {
  Init(/*device=*/4, /*host=*/16);
  for (const char* id : {"a", "b"}) {
    ASSERT_TRUE(store_->BeginTurn(id, Iota(8, 0), true).ok());
    ASSERT_TRUE(store_->Reserve(id, 8).ok());
  }
  const std::vector<int32_t> a_table = Table("a");
  const std::vector<int32_t> b_table = Table("b");
  ASSERT_TRUE(store_->BeginTurn("c", Iota(4, 50), true).ok());
  absl::StatusOr<uint64_t> ticket = store_->Reserve("c", 4);
  EXPECT_EQ(ticket.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ticket.status().message(),
            "session c needs 1 more KV blocks to hold 4 tokens; 0 of 4 device "
            "blocks are free and the rest belong to 3 running sessions");
  EXPECT_THAT(Table("c"), IsEmpty());
  EXPECT_EQ(Table("a"), a_table);
  EXPECT_EQ(Table("b"), b_table);
  EXPECT_EQ(TierOf("a"), Tier::kDevice);
  EXPECT_EQ(TierOf("b"), Tier::kDevice);
  EXPECT_THAT(store_->TakeCopies(), IsEmpty());
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 0);
  for (const char* id : {"a", "b", "c"}) store_->EndTurn(id);
}

TEST_F(SessionStoreTiersTest, PinnedSessionsAreEvictedLast) {
  Init(/*device=*/6, /*host=*/16);
  Run("a", Iota(8, 0), /*pin=*/true);
  Run("b", Iota(8, 100));
  Run("c", Iota(8, 200));
  // d and e stay busy; each needs 2 blocks: b, then c go, not a.
  for (const char* id : {"d", "e"}) {
    ASSERT_TRUE(store_->BeginTurn(id, Iota(8, 300), true).ok());
    ASSERT_TRUE(store_->Reserve(id, 8).ok());
  }
  EXPECT_EQ(TierOf("a"), Tier::kDevice);
  EXPECT_EQ(TierOf("b"), Tier::kHost);
  EXPECT_EQ(TierOf("c"), Tier::kHost);
  // No unpinned idle session is left on the device: the pinned one goes.
  ASSERT_TRUE(store_->BeginTurn("f", Iota(8, 400), true).ok());
  ASSERT_TRUE(store_->Reserve("f", 8).ok());
  EXPECT_EQ(TierOf("a"), Tier::kHost);
  EXPECT_TRUE(store_->GetInfo("a")->pinned);
  for (const char* id : {"d", "e", "f"}) store_->EndTurn(id);
  // On the host too, the pinned session is the last to be dropped.
  EXPECT_EQ(store_->EvictAll(Tier::kHost), 3);
  EXPECT_EQ(store_->Stats().evicted(Tier::kDevice, Tier::kHost), 3);
  EXPECT_EQ(store_->Stats().pinned_sessions, 1);
  EXPECT_EQ(store_->Stats().pinned_tokens, 8);
}

TEST_F(SessionStoreTiersTest, PinOverTheCapIsUndoneAtEndTurn) {
  SessionStore::Options options = DefaultOptions(32, 0);
  options.max_pinned_tokens = 10;
  Init(options);
  Run("p", Iota(8, 0), /*pin=*/true);
  EXPECT_TRUE(store_->GetInfo("p")->pinned);
  EXPECT_EQ(store_->Stats().pinned_tokens, 8);

  // Together past the cap: the session whose turn ends is unpinned.
  Run("q", Iota(8, 100), /*pin=*/true);
  EXPECT_FALSE(store_->GetInfo("q")->pinned);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.unpinned_over_cap, 1);
  EXPECT_EQ(stats.pinned_sessions, 1);
  EXPECT_EQ(stats.pinned_tokens, 8);

  // A pinned session that grows past the cap on its own.
  Run("p", Iota(12, 0));
  EXPECT_FALSE(store_->GetInfo("p")->pinned);
  stats = store_->Stats();
  EXPECT_EQ(stats.unpinned_over_cap, 2);
  EXPECT_EQ(stats.pinned_sessions, 0);
  EXPECT_EQ(stats.pinned_tokens, 0);

  // Pin within the cap, then unpin by request (no cap involved).
  Run("p", Concat(Iota(8, 0), One(99)), /*pin=*/true);
  EXPECT_TRUE(store_->GetInfo("p")->pinned);
  EXPECT_EQ(store_->Stats().pinned_tokens, 9);
  Run("p", Concat(Iota(8, 0), One(98)), /*pin=*/false);
  EXPECT_FALSE(store_->GetInfo("p")->pinned);
  EXPECT_EQ(store_->Stats().unpinned_over_cap, 2);
  EXPECT_EQ(store_->Stats().pinned_tokens, 0);
}

TEST_F(SessionStoreTiersTest, UnpinnedVictimNeverPushesPinnedOffTheHost) {
  Init(DefaultOptions(/*device=*/4, /*host=*/2));
  Run("q", Iota(8, 0), /*pin=*/true);  // 2 blocks
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 1);
  EXPECT_EQ(TierOf("q"), Tier::kHost);  // fills the host tier
  Run("a", Iota(8, 100));
  Run("b", Iota(8, 200));
  // c needs a's room; a cannot take q's host blocks, so a is dropped.
  Run("c", Iota(8, 300));
  EXPECT_EQ(TierOf("q"), Tier::kHost);
  EXPECT_EQ(TierOf("a"), Tier::kDropped);
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kDropped), 1);
  EXPECT_EQ(stats.evicted(Tier::kHost, Tier::kDropped), 0);
}

TEST_F(SessionStoreTiersTest, TierIdleLimits) {
  SessionStore::Options options = DefaultOptions(32, 32);
  options.device_idle_ttl = absl::Minutes(10);
  options.host_idle_ttl = absl::Minutes(30);
  options.idle_ttl = absl::Hours(2);
  Init(options);
  const absl::Time t0 = clock_.Now();
  // q: pinned, on the host; p: pinned, on the device; a: neither.
  Run("q", Iota(8, 0), /*pin=*/true);
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 1);
  Run("a", Iota(8, 100));
  Run("p", Iota(8, 200), /*pin=*/true);

  clock_.Set(t0 + absl::Minutes(11));
  EXPECT_EQ(store_->ExpireIdle(), 0);
  EXPECT_EQ(TierOf("a"), Tier::kHost);
  EXPECT_EQ(TierOf("p"), Tier::kDevice);
  Run("h", Iota(8, 300));  // idle from t0 + 11m

  clock_.Set(t0 + absl::Minutes(22));
  EXPECT_EQ(store_->ExpireIdle(), 0);
  EXPECT_EQ(TierOf("h"), Tier::kHost);
  EXPECT_EQ(TierOf("a"), Tier::kHost);

  clock_.Set(t0 + absl::Minutes(31) + absl::Seconds(5));
  EXPECT_EQ(store_->ExpireIdle(), 0);
  EXPECT_EQ(TierOf("a"), Tier::kDropped);
  EXPECT_EQ(TierOf("h"), Tier::kHost);
  EXPECT_EQ(TierOf("q"), Tier::kHost);  // pinned: exempt
  EXPECT_EQ(TierOf("p"), Tier::kDevice);

  // idle_ttl removes sessions in every tier, pinned ones too.
  clock_.Set(t0 + absl::Hours(2) + absl::Seconds(5));
  EXPECT_EQ(store_->ExpireIdle(), 3);
  EXPECT_FALSE(store_->Contains("q"));
  EXPECT_FALSE(store_->Contains("a"));
  EXPECT_FALSE(store_->Contains("p"));
  EXPECT_EQ(TierOf("h"), Tier::kDropped);
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.expired_sessions, 3);
  EXPECT_EQ(stats.evicted(Tier::kDevice, Tier::kHost), 3);
  EXPECT_EQ(stats.evicted(Tier::kHost, Tier::kDropped), 2);
  EXPECT_EQ(stats.pinned_sessions, 0);
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 0);
  EXPECT_EQ(Tiers(stats, Tier::kHost).used_blocks, 0);
}

TEST_F(SessionStoreTiersTest, ExpireIdleFindsExpiredBehindYoungerDropped) {
  // The dropped tier takes sessions from the device and from the host, so
  // its list is not in last-used order.
  Init(/*device=*/8, /*host=*/4);
  const absl::Time t0 = clock_.Now();
  Run("old", Iota(8, 0));
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 1);  // old -> host
  clock_.Set(t0 + absl::Minutes(30));
  Run("young", Iota(20, 100));                    // larger than the host tier
  EXPECT_EQ(store_->EvictAll(Tier::kDevice), 1);  // young -> dropped
  EXPECT_EQ(store_->EvictAll(Tier::kHost), 1);    // old -> dropped
  EXPECT_EQ(TierOf("young"), Tier::kDropped);
  EXPECT_EQ(TierOf("old"), Tier::kDropped);

  clock_.Set(t0 + absl::Minutes(61));
  EXPECT_EQ(store_->ExpireIdle(), 1);
  EXPECT_FALSE(store_->Contains("old"));
  EXPECT_TRUE(store_->Contains("young"));
}

// 50 sessions with one 40-token system prompt (10 full blocks) and suffixes
// of their own.
class SharedPrefixTest : public SessionStoreTiersTest {
 protected:
  static constexpr int kSessions = 50;
  void SetUp() override { Init(/*device=*/64, /*host=*/0); }
  static std::vector<int32_t> System() { return Iota(40, 1000); }
  static std::string Id(int i) { return absl::StrCat("s", i); }
  static std::vector<int32_t> Prompt(int i) {
    return Concat(System(), Iota(3, 3 * i));
  }
  void RunAll() {
    for (int i = 0; i < kSessions; ++i) {
      const TurnPlan plan = Run(Id(i), Prompt(i));
      // The first computes the system prompt; the others find it.
      EXPECT_EQ(plan.shared_tokens, i == 0 ? 0 : 40) << i;
      EXPECT_EQ(plan.reused_tokens, i == 0 ? 0 : 40) << i;
      EXPECT_EQ(plan.reused_from, i == 0 ? Tier::kDropped : Tier::kDevice);
      EXPECT_EQ(plan.ready_ticket, 0u);
    }
  }
};

TEST_F(SharedPrefixTest, SessionsHoldOneCopyOfTheSystemPrompt) {
  RunAll();
  const StoreStats stats = store_->Stats();
  // 10 shared blocks plus one private block (the 3-token suffix) each.
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 10 + kSessions);
  EXPECT_EQ(stats.shared_blocks, 10);
  EXPECT_EQ(stats.saved_blocks, 10 * (kSessions - 1));
  EXPECT_EQ(stats.shared_tokens, 40 * (kSessions - 1));
  const std::vector<int32_t> first = Table(Id(0));
  for (int i = 0; i < kSessions; ++i) {
    const std::vector<int32_t> table = Table(Id(i));
    ASSERT_THAT(table, SizeIs(11));
    EXPECT_TRUE(std::equal(first.begin(), first.begin() + 10, table.begin()))
        << i;
    EXPECT_EQ(store_->GetInfo(Id(i))->shared_blocks, 10);
    EXPECT_THAT(store_->tokens(Id(i)), ElementsAreArray(Prompt(i)));
  }
  EXPECT_THAT(store_->TakeCopies(), IsEmpty());
}

TEST_F(SharedPrefixTest, DivergingInsideASharedBlockCopiesIt) {
  RunAll();
  std::vector<std::vector<int32_t>> before;
  for (int i = 0; i < kSessions; ++i) before.push_back(Table(Id(i)));
  store_->TakeCopies();

  // s0 now edits token 38: block 9 (tokens 36..39) keeps 2 of its tokens
  // and is written by this turn, so s0 gets a private copy of it.
  std::vector<int32_t> prompt = System();
  prompt.resize(38);
  prompt.push_back(7777);
  prompt.push_back(7778);
  absl::StatusOr<TurnPlan> plan = store_->BeginTurn(Id(0), prompt, false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_tokens, 38);
  std::vector<CopyBatch> copies = store_->TakeCopies();
  ASSERT_THAT(copies, SizeIs(1));
  EXPECT_EQ(copies[0].kind, CopyBatch::Kind::kCopyOnWrite);
  EXPECT_EQ(copies[0].from, Tier::kDevice);
  EXPECT_EQ(copies[0].to, Tier::kDevice);
  ASSERT_THAT(copies[0].copies, SizeIs(1));
  const std::vector<int32_t> table = Table(Id(0));
  ASSERT_THAT(table, SizeIs(10));
  EXPECT_EQ(copies[0].copies[0].src, before[0][9]);
  EXPECT_EQ(copies[0].copies[0].dst, table[9]);
  EXPECT_NE(table[9], before[0][9]);
  EXPECT_TRUE(std::equal(table.begin(), table.begin() + 9, before[0].begin()));
  EXPECT_EQ(plan->ready_ticket, copies[0].ticket);
  ASSERT_TRUE(store_->Reserve(Id(0), 40).ok());
  ASSERT_TRUE(store_->Commit(Id(0), One(7777)).ok());
  store_->EndTurn(Id(0));
  EXPECT_EQ(store_->Stats().cow_blocks, 1);
  for (int i = 1; i < kSessions; ++i) {
    EXPECT_EQ(Table(Id(i)), before[i]) << i;
    EXPECT_THAT(store_->tokens(Id(i)), ElementsAreArray(Prompt(i)));
  }
  // s0 gave up its suffix block and took the copy.
  StoreStats stats = store_->Stats();
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 10 + kSessions);
  EXPECT_EQ(stats.shared_blocks, 10);
  EXPECT_EQ(stats.saved_blocks, 9 * (kSessions - 1) + (kSessions - 2));

  // Deleting sessions frees shared blocks only with their last holder.
  for (int i = 2; i < kSessions; ++i) ASSERT_TRUE(store_->Delete(Id(i)).ok());
  BlockPool& pool = SessionStorePeer::pool(*store_, Tier::kDevice);
  for (int b = 0; b < 9; ++b) EXPECT_EQ(pool.ref_count(before[1][b]), 2) << b;
  EXPECT_EQ(pool.ref_count(before[1][9]), 1);
  stats = store_->Stats();
  EXPECT_EQ(stats.shared_blocks, 9);
  // s1: 11 blocks; s0: 9 of them plus its copy.
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 12);
  ASSERT_TRUE(store_->Delete(Id(1)).ok());
  stats = store_->Stats();
  EXPECT_EQ(stats.shared_blocks, 0);
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 10);
  ASSERT_TRUE(store_->Delete(Id(0)).ok());
  EXPECT_EQ(Tiers(store_->Stats(), Tier::kDevice).used_blocks, 0);
  EXPECT_EQ(SessionStorePeer::index(*store_).size(), 0u);
}

TEST_F(SessionStoreTiersTest, SameBlocksComputedConcurrentlyAreMerged) {
  Init(/*device=*/16, /*host=*/0);
  const std::vector<int32_t> prompt = Iota(13, 5000);
  const std::span<const int32_t> p(prompt);
  for (const char* id : {"x", "y"}) {
    absl::StatusOr<TurnPlan> plan = store_->BeginTurn(id, prompt, true);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->reused_tokens, 0);  // nothing committed yet
    ASSERT_TRUE(store_->Reserve(id, 13).ok());
  }
  EXPECT_EQ(Tiers(store_->Stats(), Tier::kDevice).used_blocks, 8);
  // Interleaved chunks, so that each holds a block the other registered.
  ASSERT_TRUE(store_->Commit("x", p.subspan(0, 4)).ok());
  ASSERT_TRUE(store_->Commit("y", p.subspan(0, 8)).ok());
  ASSERT_TRUE(store_->Commit("x", p.subspan(4)).ok());
  ASSERT_TRUE(store_->Commit("y", p.subspan(8)).ok());
  ASSERT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
  store_->EndTurn("x");
  store_->EndTurn("y");
  const std::vector<int32_t> x = Table("x");
  const std::vector<int32_t> y = Table("y");
  ASSERT_THAT(x, SizeIs(4));
  ASSERT_THAT(y, SizeIs(4));
  EXPECT_EQ(x[0], y[0]);
  EXPECT_EQ(x[1], y[1]);
  EXPECT_EQ(x[2], y[2]);
  EXPECT_NE(x[3], y[3]);  // the partial block stays private
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(Tiers(stats, Tier::kDevice).used_blocks, 5);
  EXPECT_EQ(stats.shared_blocks, 3);
  EXPECT_EQ(stats.saved_blocks, 3);
}

TEST_F(SessionStoreTiersTest, ReallocatedBlockWaitsForTheSwapOut) {
  Init(/*device=*/4, /*host=*/8);
  Run("a", Iota(16, 0));
  const std::vector<int32_t> a_device = Table("a");
  ASSERT_TRUE(store_->BeginTurn("b", Iota(4, 100), true).ok());
  // Nothing copied yet, nothing to wait for.
  EXPECT_EQ(store_->last_ticket(), 0u);
  absl::StatusOr<uint64_t> ticket = store_->Reserve("b", 4);
  ASSERT_TRUE(ticket.ok()) << ticket.status();
  std::vector<CopyBatch> copies = store_->TakeCopies();
  ASSERT_THAT(copies, SizeIs(1));
  ASSERT_EQ(copies[0].kind, CopyBatch::Kind::kSwapOut);
  // b got one of a's blocks, which the swap-out still has to read.
  ASSERT_THAT(Table("b"), SizeIs(1));
  EXPECT_THAT(a_device, ::testing::Contains(Table("b")[0]));
  EXPECT_GE(*ticket, copies[0].ticket);
  EXPECT_EQ(SessionStorePeer::pool(*store_, Tier::kDevice).fence(Table("b")[0]),
            copies[0].ticket);
  // Growing within the reserved block needs no wait.
  absl::StatusOr<uint64_t> again = store_->Reserve("b", 3);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
  store_->EndTurn("b");

  // a swaps back in: its ready ticket covers the swap-in, which comes
  // after the swap-out of the host copy's source.
  absl::StatusOr<TurnPlan> plan =
      store_->BeginTurn("a", Concat(Iota(12, 0), One(1)), false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->reused_from, Tier::kHost);
  EXPECT_EQ(plan->reused_tokens, 12);
  EXPECT_EQ(plan->swapped_in_blocks, 3);
  EXPECT_EQ(plan->ready_ticket, store_->last_ticket());
  EXPECT_GT(plan->ready_ticket, copies[0].ticket);
  store_->EndTurn("a");
}

TEST_F(SessionStoreTiersTest, CheckInvariantsDetectsSessionInWrongPinList) {
  Init(/*device=*/16, /*host=*/16);
  Run("a", Iota(8, 0), /*pin=*/true);
  Run("b", Iota(8, 100));
  SessionStorePeer::SwapIdleList(*store_, "b");
  absl::Status st = store_->CheckInvariants();
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("idle session b is not in the device"));
  SessionStorePeer::SwapIdleList(*store_, "b");
  ASSERT_TRUE(store_->CheckInvariants().ok());

  SessionStorePeer::SwapIdleList(*store_, "a");
  st = store_->CheckInvariants();
  EXPECT_THAT(st.message(),
              HasSubstr("idle session a is not in the pinned device LRU"));
  SessionStorePeer::SwapIdleList(*store_, "a");
  ASSERT_TRUE(store_->CheckInvariants().ok());

  SessionStorePeer::pinned_tokens(*store_) += 1;
  st = store_->CheckInvariants();
  EXPECT_THAT(st.message(), HasSubstr("1 pinned sessions with 8 tokens"));
  SessionStorePeer::pinned_tokens(*store_) -= 1;
  EXPECT_TRUE(store_->CheckInvariants().ok());
}

TEST_F(SessionStoreTiersTest, CheckInvariantsDetectsStalePrefixIndex) {
  Init(/*device=*/16, /*host=*/0);
  Run("a", Iota(8, 0));
  PrefixIndex& index = SessionStorePeer::index(*store_);
  ASSERT_EQ(index.size(), 2u);
  const std::vector<int32_t> a = Table("a");
  // A free block still indexed.
  const int32_t free_block = 15;
  ASSERT_EQ(
      SessionStorePeer::pool(*store_, Tier::kDevice).ref_count(free_block), 0);
  ASSERT_TRUE(index.Insert(free_block, PrefixIndex::kNoParent, Iota(4, 50)));
  absl::Status st = store_->CheckInvariants();
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("free device block 15 is still shared"));
  index.Erase(free_block);
  ASSERT_TRUE(store_->CheckInvariants().ok());

  // A held block indexed under tokens that are not the session's.
  index.Erase(a[1]);
  ASSERT_TRUE(index.Insert(a[1], a[0], Iota(4, 60)));
  st = store_->CheckInvariants();
  EXPECT_THAT(st.message(), HasSubstr("prefix differs"));
  index.Erase(a[1]);
  // ... or behind another parent.
  ASSERT_TRUE(index.Insert(a[1], PrefixIndex::kNoParent, Iota(4, 4)));
  st = store_->CheckInvariants();
  EXPECT_THAT(st.message(), HasSubstr("prefix differs"));
  index.Erase(a[1]);
  ASSERT_TRUE(index.Insert(a[1], a[0], Iota(4, 4)));
  EXPECT_TRUE(store_->CheckInvariants().ok());
}

TEST_F(SessionStoreTiersTest, CheckInvariantsDetectsUnplannedFence) {
  Init(/*device=*/16, /*host=*/0);
  Run("a", Iota(8, 0));
  BlockPool& pool = SessionStorePeer::pool(*store_, Tier::kDevice);
  pool.SetFence(Table("a")[0], store_->last_ticket() + 1);
  absl::Status st = store_->CheckInvariants();
  EXPECT_THAT(st.message(), HasSubstr("fenced by an unplanned copy"));
  // Fences only grow; the store cannot be repaired, so drop it unchecked.
  store_.reset();
}

}  // namespace
}  // namespace kvsession::session_store
