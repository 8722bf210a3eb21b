// Random interleaved turns against a fake KV backend. The backend keeps one
// arena per tier and runs the store's planned copies lazily, in ticket
// order, and only as far as a turn has to wait. The "KV" of position p is a
// hash of tokens 0..p, like real K/V, so a block holds the right values
// only if it holds this very prefix: a bad swap-in, share, copy-on-write or
// fence shows up as wrong content when a turn reads its cached prefix.
// A plain model of every session (history, pin, last use) is checked after
// each step, together with the store's own invariants. Turns end as the
// engine ends them: kept with all their tokens, with a tail without KV (the
// last sampled token), with fewer tokens (a cancel), or undone.
#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_store/clock.h"
#include "session_store/session_store.h"

namespace kvsession::session_store {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int32_t kBlockSize = 4;
constexpr int32_t kDeviceBlocks = 24;
constexpr int32_t kHostBlocks = 32;
constexpr int kIds = 30;
constexpr int kMaxInFlight = 4;
constexpr int kSteps = 10000;
// User tokens come from a small vocabulary so that unrelated sessions
// share prefixes; system prompts use a range of their own.
constexpr int32_t kVocab = 6;
constexpr int32_t kSystemTokenBase = 100;
constexpr size_t kMaxHistory = 64;  // a longer conversation starts anew
constexpr int64_t kMaxPinnedTokens = 40;
const absl::Duration kIdleTtl = absl::Hours(8);
const absl::Duration kDeviceTtl = absl::Minutes(30);
const absl::Duration kHostTtl = absl::Hours(2);

// The KV value of the token after a prefix whose value is `prev`.
uint64_t NextKv(uint64_t prev, int32_t token) {
  uint64_t x = prev ^ (static_cast<uint64_t>(token) + 0x9e3779b97f4a7c15ULL);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr uint64_t kKvSeed = 0x5e55;

// Arenas of both tiers and the copies planned but not yet run.
class FakeBackend {
 public:
  FakeBackend() {
    arenas_[0].assign(static_cast<size_t>(kDeviceBlocks) * kBlockSize, 0);
    arenas_[1].assign(static_cast<size_t>(kHostBlocks) * kBlockSize, 0);
  }

  uint64_t& at(Tier tier, int32_t block, int32_t slot) {
    EXPECT_NE(tier, Tier::kDropped);
    return arenas_[static_cast<int>(tier)].at(
        static_cast<size_t>(block) * kBlockSize + slot);
  }

  void Enqueue(std::vector<CopyBatch> batches) {
    for (CopyBatch& b : batches) {
      // Tickets count up from 1 without gaps.
      EXPECT_EQ(b.ticket, planned_ + 1);
      planned_ = b.ticket;
      EXPECT_FALSE(b.copies.empty()) << "empty batch " << b.ticket;
      pending_.push_back(std::move(b));
    }
  }

  // Runs the batches up to `ticket` and no further, so that a turn that
  // waits for too small a ticket reads what the copy has not written yet.
  void RunUpTo(uint64_t ticket) {
    EXPECT_LE(ticket, planned_) << "wait for an unplanned copy";
    while (!pending_.empty() && pending_.front().ticket <= ticket) RunOne();
  }
  void RunSome(int n) {
    for (int i = 0; i < n && !pending_.empty(); ++i) RunOne();
  }
  void RunAll() {
    while (!pending_.empty()) RunOne();
  }
  size_t pending() const { return pending_.size(); }
  int64_t ran(CopyBatch::Kind kind) const {
    return ran_[static_cast<int>(kind)];
  }

 private:
  void RunOne() {
    const CopyBatch& b = pending_.front();
    for (const BlockCopy& c : b.copies) {
      for (int32_t slot = 0; slot < kBlockSize; ++slot) {
        at(b.to, c.dst, slot) = at(b.from, c.src, slot);
      }
    }
    ++ran_[static_cast<int>(b.kind)];
    pending_.pop_front();
  }

  std::array<std::vector<uint64_t>, 2> arenas_;
  std::deque<CopyBatch> pending_;
  uint64_t planned_ = 0;
  std::array<int64_t, 3> ran_{};
};

struct ModelSession {
  std::vector<int32_t> history;  // the whole history while idle
  bool busy = false;
  bool pinned = false;
  absl::Time last_used;
};

// A turn in flight, driven one step at a time.
struct Turn {
  std::string id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> seq;  // tokens with computed KV (the store's history)
  std::vector<uint64_t> kv;  // their expected KV
  int decode_left = 0;
  // What an undone turn restores.
  bool created = false;
  std::vector<int32_t> history_before;
  bool pinned_before = false;
};

class StressHarness {
 public:
  explicit StressHarness(uint32_t seed) : rng_(seed) {
    for (int32_t len : {12, 26, 37}) {
      std::vector<int32_t> p(len);
      for (int32_t& t : p) t = kSystemTokenBase + Uniform(0, 50);
      system_prompts_.push_back(std::move(p));
    }
    SessionStore::Options options;
    options.block_size = kBlockSize;
    options.num_device_blocks = kDeviceBlocks;
    options.num_host_blocks = kHostBlocks;
    options.idle_ttl = kIdleTtl;
    options.device_idle_ttl = kDeviceTtl;
    options.host_idle_ttl = kHostTtl;
    options.max_pinned_tokens = kMaxPinnedTokens;
    options.share_prefixes = true;
    options.clock = &clock_;
    store_ = *SessionStore::Create(options);
  }

  // One random operation; returns what it did, for failure messages.
  std::string Step() {
    const int op = Uniform(0, 99);
    if (op < 22) return StartTurn();
    if (op < 70) return AdvanceTurn();
    if (op < 73) return CancelTurn();
    if (op < 77) return DeleteSession();
    if (op < 83) return JumpAndExpire();
    if (op < 85) return EvictAllFrom(Tier::kDevice);
    if (op < 87) return EvictAllFrom(Tier::kHost);
    const int n = Uniform(1, 3);
    backend_.RunSome(n);
    return absl::StrCat("run ", n, " copy batches");
  }

  // Compares store and model.
  void AfterStep(const std::string& what) {
    TakeCopies();
    const absl::Status st = store_->CheckInvariants();
    ASSERT_TRUE(st.ok()) << what << ": " << st;
    const StoreStats stats = store_->Stats();
    ASSERT_EQ(stats.sessions, static_cast<int32_t>(model_.size())) << what;
    ASSERT_EQ(stats.busy_sessions, static_cast<int32_t>(turns_.size())) << what;
    int64_t pinned_tokens = 0;
    int32_t pinned = 0;
    for (const auto& [id, m] : model_) {
      absl::StatusOr<SessionInfo> info = store_->GetInfo(id);
      ASSERT_TRUE(info.ok()) << what << ": " << id;
      ASSERT_EQ(info->busy, m.busy) << what << ": " << id;
      ASSERT_EQ(info->pinned, m.pinned) << what << ": " << id;
      const std::vector<int32_t>& want = m.busy ? FindTurn(id)->seq : m.history;
      ASSERT_THAT(store_->History(id), ElementsAreArray(want))
          << what << ": " << id;
      // A running turn shows in GetInfo only once it ends.
      ASSERT_EQ(info->num_tokens,
                static_cast<int32_t>(m.busy ? FindTurn(id)->history_before.size()
                                            : want.size()))
          << what;
      // The KV held is of a prefix of the history.
      const std::vector<int32_t>& kv = store_->tokens(id);
      ASSERT_LE(kv.size(), want.size()) << what << ": " << id;
      ASSERT_TRUE(std::equal(kv.begin(), kv.end(), want.begin()))
          << what << ": " << id;
      if (m.busy) {
        ASSERT_EQ(info->tier, Tier::kDevice) << what << ": " << id;
      }
      pinned += m.pinned;
      if (m.pinned) pinned_tokens += static_cast<int64_t>(want.size());
    }
    ASSERT_EQ(stats.pinned_sessions, pinned) << what;
    ASSERT_EQ(stats.pinned_tokens, pinned_tokens) << what;
  }

  // Ends every turn, deletes every session and runs the last copies: both
  // pools must be entirely free again.
  void DeleteEverything() {
    while (!turns_.empty()) EndTurn(0);
    for (const auto& [id, m] : model_) {
      ASSERT_TRUE(store_->Delete(id).ok()) << id;
    }
    model_.clear();
    TakeCopies();
    backend_.RunAll();
    ASSERT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
    const StoreStats stats = store_->Stats();
    EXPECT_EQ(stats.sessions, 0);
    EXPECT_EQ(stats.pinned_tokens, 0);
    EXPECT_EQ(stats.shared_blocks, 0);
    for (Tier t : {Tier::kDevice, Tier::kHost}) {
      EXPECT_EQ(stats.tier(t).used_blocks, 0) << TierName(t);
      EXPECT_EQ(stats.tier(t).free_blocks, stats.tier(t).capacity_blocks)
          << TierName(t);
    }
    EXPECT_EQ(backend_.pending(), 0u);
  }

  StoreStats stats() const { return store_->Stats(); }
  int64_t exhausted() const { return exhausted_; }
  int64_t turns_done() const { return turns_done_; }
  int64_t expired() const { return expired_; }
  const FakeBackend& backend() const { return backend_; }

 private:
  // Hands the copies planned by the last store call to the backend, as the
  // engine does after every call.
  void TakeCopies() { backend_.Enqueue(store_->TakeCopies()); }

  int Uniform(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }
  int32_t UserToken() { return Uniform(0, kVocab - 1); }

  ModelSession* FindModel(const std::string& id) {
    auto it = model_.find(id);
    return it == model_.end() ? nullptr : &it->second;
  }
  Turn* FindTurn(const std::string& id) {
    for (Turn& t : turns_) {
      if (t.id == id) return &t;
    }
    return nullptr;
  }

  // A prompt that starts a conversation with one of the system prompts,
  // continues the history, edits or cuts it, or repeats it (regenerate).
  std::vector<int32_t> MakePrompt(const std::vector<int32_t>& history) {
    const int mode = Uniform(0, 9);
    std::vector<int32_t> p;
    if (history.empty() || history.size() > kMaxHistory || mode == 0) {
      p = system_prompts_[Uniform(0, 2)];
    } else if (mode <= 5) {
      p = history;
    } else if (mode <= 7) {
      p = history;
      p.resize(Uniform(1, static_cast<int>(p.size())));
      if (Uniform(0, 1) == 0) {
        p[Uniform(0, static_cast<int>(p.size()) - 1)] = UserToken();
      }
    } else {
      return history;
    }
    const int extra = Uniform(1, 8);
    for (int i = 0; i < extra; ++i) p.push_back(UserToken());
    return p;
  }

  std::string StartTurn() {
    if (static_cast<int>(turns_.size()) >= kMaxInFlight) return AdvanceTurn();
    const std::string id = absl::StrCat("s", Uniform(0, kIds - 1));
    const bool create = Uniform(0, 5) != 0;
    std::optional<bool> pin;
    if (const int p = Uniform(0, 9); p < 2) {
      pin = p == 0;
    }
    ModelSession* m = FindModel(id);
    const std::vector<int32_t> prompt =
        MakePrompt(m != nullptr ? m->history : std::vector<int32_t>{});
    const std::string what =
        absl::StrCat("begin ", id, " prompt ", prompt.size(), " create ",
                     create, " pin ", pin.has_value() ? int{*pin} : -1);
    std::optional<SessionInfo> before;
    size_t kv_before = 0;
    if (absl::StatusOr<SessionInfo> info = store_->GetInfo(id); info.ok()) {
      before = *info;
      kv_before = store_->tokens(id).size();
    }
    absl::StatusOr<TurnPlan> plan = store_->BeginTurn(id, prompt, create, pin);
    TakeCopies();
    if (m != nullptr && m->busy) {
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kAborted) << what;
      return what;
    }
    if (m == nullptr && !create) {
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kNotFound) << what;
      return what;
    }
    EXPECT_TRUE(plan.ok()) << what << ": " << plan.status();
    if (!plan.ok()) return what;
    Turn turn;
    turn.created = m == nullptr;
    if (m == nullptr) m = &model_[id];
    turn.history_before = m->history;
    turn.pinned_before = m->pinned;
    m->busy = true;
    if (pin.has_value()) m->pinned = *pin;

    const int32_t r = plan->reused_tokens;
    const int32_t n = static_cast<int32_t>(prompt.size());
    EXPECT_EQ(plan->prompt_tokens, n) << what;
    EXPECT_GE(r, 0) << what;
    EXPECT_LE(r, n - 1) << what;
    EXPECT_LE(plan->shared_tokens, r) << what;
    EXPECT_EQ(plan->reused_from == Tier::kDropped, r == 0) << what;
    // Reuse is of the KV held: a prefix of the history.
    const std::vector<int32_t> held =
        before.has_value() && before->tier != Tier::kDropped
            ? std::vector<int32_t>(
                  m->history.begin(),
                  m->history.begin() + std::min<size_t>(kv_before,
                                                        m->history.size()))
            : std::vector<int32_t>();
    const int32_t common = static_cast<int32_t>(
        std::mismatch(held.begin(),
                      held.begin() + std::min(held.size(), prompt.size()),
                      prompt.begin())
            .first -
        held.begin());
    const Tier was = before.has_value() ? before->tier : Tier::kDevice;
    if (was == Tier::kDevice) {
      // Its own prefix stays, at worst cut to a block boundary when a
      // shared block cannot be copied.
      EXPECT_GE(r, std::min(common, n - 1) / kBlockSize * kBlockSize) << what;
      EXPECT_NE(plan->reused_from, Tier::kHost) << what;
      EXPECT_EQ(plan->swapped_in_blocks, 0) << what;
      EXPECT_FALSE(plan->recomputed) << what;
    } else if (was == Tier::kDropped) {
      // Nothing of its own survives; only other sessions' blocks.
      EXPECT_EQ(r, plan->shared_tokens) << what;
      EXPECT_NE(plan->reused_from, Tier::kHost) << what;
      EXPECT_EQ(plan->recomputed, !m->history.empty()) << what;
    } else if (plan->reused_from != Tier::kHost) {
      EXPECT_EQ(plan->swapped_in_blocks, 0) << what;
    }

    turn.id = id;
    turn.prompt = prompt;
    turn.seq.assign(prompt.begin(), prompt.begin() + r);
    uint64_t h = kKvSeed;
    for (int32_t t : turn.seq) turn.kv.push_back(h = NextKv(h, t));
    turn.decode_left = Uniform(0, 6);
    EXPECT_THAT(store_->tokens(id), ElementsAreArray(turn.seq)) << what;
    turns_.push_back(std::move(turn));
    // The engine waits for the swap-in and copy-on-write copies before it
    // reads the reused prefix.
    backend_.RunUpTo(plan->ready_ticket);
    VerifyKv(turns_.back(), what);
    return what;
  }

  // The cached KV of the turn's computed positions is this very prefix.
  void VerifyKv(const Turn& t, const std::string& what) {
    const std::vector<int32_t>& table = store_->block_table(t.id);
    ASSERT_GE(static_cast<int64_t>(table.size()) * kBlockSize,
              static_cast<int64_t>(t.seq.size()))
        << what;
    for (size_t p = 0; p < t.seq.size(); ++p) {
      ASSERT_EQ(backend_.at(Tier::kDevice, table[p / kBlockSize],
                            static_cast<int32_t>(p % kBlockSize)),
                t.kv[p])
          << what << ": session " << t.id << " position " << p << " of "
          << t.seq.size() << " in block " << table[p / kBlockSize];
    }
  }

  std::string AdvanceTurn() {
    if (turns_.empty()) return StartTurn();
    const int i = Uniform(0, static_cast<int>(turns_.size()) - 1);
    Turn& t = turns_[i];
    std::vector<int32_t> tokens;
    if (t.seq.size() < t.prompt.size()) {
      const int left = static_cast<int>(t.prompt.size() - t.seq.size());
      const int n = std::min(left, Uniform(1, 12));
      tokens.assign(t.prompt.begin() + t.seq.size(),
                    t.prompt.begin() + t.seq.size() + n);
    } else if (t.decode_left > 0) {
      --t.decode_left;
      tokens.push_back(UserToken());
    } else {
      return EndTurn(i);
    }
    return Compute(i, tokens);
  }

  // One engine step of turn i: reserve, wait, check the cached prefix,
  // write the new positions, commit.
  std::string Compute(int i, const std::vector<int32_t>& tokens) {
    Turn& t = turns_[i];
    const std::string what =
        absl::StrCat("compute ", t.id, " ", t.seq.size(), "+", tokens.size());
    const int32_t total = static_cast<int32_t>(t.seq.size() + tokens.size()) +
                          (Uniform(0, 3) == 0 ? Uniform(1, 5) : 0);
    absl::StatusOr<uint64_t> ticket = store_->Reserve(t.id, total);
    TakeCopies();
    if (!ticket.ok()) {
      EXPECT_EQ(ticket.status().code(), absl::StatusCode::kResourceExhausted)
          << what << ": " << ticket.status();
      EXPECT_THAT(ticket.status().message(), HasSubstr("running sessions"));
      ++exhausted_;
      return absl::StrCat(what, " exhausted; ", EndTurn(i));
    }
    backend_.RunUpTo(*ticket);
    VerifyKv(t, what);
    const std::vector<int32_t>& table = store_->block_table(t.id);
    EXPECT_GE(static_cast<int64_t>(table.size()) * kBlockSize, total) << what;
    for (int32_t token : tokens) {
      const size_t p = t.seq.size();
      const uint64_t v = NextKv(t.kv.empty() ? kKvSeed : t.kv.back(), token);
      backend_.at(Tier::kDevice, table[p / kBlockSize],
                  static_cast<int32_t>(p % kBlockSize)) = v;
      t.seq.push_back(token);
      t.kv.push_back(v);
    }
    const absl::Status st = store_->Commit(t.id, tokens);
    EXPECT_TRUE(st.ok()) << what << ": " << st;
    // Commit may swap a block for an equal shared one: same content.
    VerifyKv(t, absl::StrCat(what, " after commit"));
    return what;
  }

  std::string EndTurn(int i) {
    Turn t = std::move(turns_[i]);
    turns_.erase(turns_.begin() + i);
    ModelSession& m = model_.at(t.id);
    // Pinned tokens without this session's turn.
    const int64_t others =
        store_->Stats().pinned_tokens -
        (m.pinned ? static_cast<int64_t>(t.seq.size()) : 0);
    const int64_t over_cap = store_->Stats().unpinned_over_cap;
    const int how = Uniform(0, 9);
    std::string what;
    if (how == 0) {
      what = absl::StrCat("abort ", t.id);
      store_->AbortTurn(t.id);
      if (t.created) {
        model_.erase(t.id);
        EXPECT_EQ(store_->GetInfo(t.id).status().code(),
                  absl::StatusCode::kNotFound) << what;
        ++turns_done_;
        return what;
      }
      m.history = t.history_before;
      m.pinned = t.pinned_before;
    } else {
      std::vector<int32_t> history = t.seq;
      if (how == 1 && !history.empty()) {
        // A cancel: fewer tokens than were computed.
        history.resize(Uniform(0, static_cast<int>(history.size())));
      } else if (how <= 3) {
        // The last sampled token, without KV.
        history.push_back(UserToken());
      }
      what = absl::StrCat("end ", t.id, " keeping ", history.size(), " of ",
                          t.seq.size());
      store_->EndTurn(t.id, history);
      m.history = std::move(history);
    }
    m.busy = false;
    m.last_used = clock_.Now();
    if (m.pinned &&
        others + static_cast<int64_t>(m.history.size()) > kMaxPinnedTokens) {
      m.pinned = false;
      EXPECT_EQ(store_->Stats().unpinned_over_cap, over_cap + 1) << what;
    } else {
      EXPECT_EQ(store_->Stats().unpinned_over_cap, over_cap) << what;
    }
    ++turns_done_;
    return what;
  }

  std::string CancelTurn() {
    if (turns_.empty()) return "no turn to cancel";
    return absl::StrCat(
        "cancel; ", EndTurn(Uniform(0, static_cast<int>(turns_.size()) - 1)));
  }

  std::string DeleteSession() {
    const std::string id = absl::StrCat("s", Uniform(0, kIds - 1));
    const absl::Status st = store_->Delete(id);
    ModelSession* m = FindModel(id);
    if (m == nullptr) {
      EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << id;
    } else if (m->busy) {
      EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << id;
    } else {
      EXPECT_TRUE(st.ok()) << id << ": " << st;
      model_.erase(id);
    }
    return absl::StrCat("delete ", id);
  }

  // Moves time (mostly a little, at times by hours) and applies the idle
  // limits: afterwards no idle session is past any of them.
  std::string JumpAndExpire() {
    const int pick = Uniform(0, 19);
    const absl::Duration d = pick == 0   ? absl::Hours(Uniform(2, 9))
                             : pick <= 4 ? absl::Minutes(Uniform(10, 60))
                                         : absl::Seconds(Uniform(0, 300));
    clock_.Advance(d);
    const absl::Time now = clock_.Now();
    int want = 0;
    for (auto it = model_.begin(); it != model_.end();) {
      if (!it->second.busy && now - it->second.last_used > kIdleTtl) {
        it = model_.erase(it);
        ++want;
      } else {
        ++it;
      }
    }
    const std::string what =
        absl::StrCat("advance ", absl::FormatDuration(d), ", expire");
    EXPECT_EQ(store_->ExpireIdle(), want) << what;
    expired_ += want;
    for (const auto& [id, m] : model_) {
      if (m.busy || m.pinned) continue;
      const Tier tier = store_->GetInfo(id)->tier;
      const absl::Duration idle = now - m.last_used;
      if (tier == Tier::kDevice) {
        EXPECT_LE(idle, kDeviceTtl) << what << ": " << id;
      } else if (tier == Tier::kHost) {
        EXPECT_LE(idle, kHostTtl) << what << ": " << id;
      }
    }
    return what;
  }

  std::string EvictAllFrom(Tier from) {
    int idle = 0;
    for (const auto& [id, m] : model_) {
      idle += !m.busy && store_->GetInfo(id)->tier == from;
    }
    const std::string what =
        absl::StrCat("evict all ", std::string(TierName(from)));
    EXPECT_EQ(store_->EvictAll(from), idle) << what;
    for (const auto& [id, m] : model_) {
      if (!m.busy) {
        EXPECT_NE(store_->GetInfo(id)->tier, from) << what << ": " << id;
      }
    }
    return what;
  }

  std::mt19937 rng_;
  FakeClock clock_;
  FakeBackend backend_;
  std::unique_ptr<SessionStore> store_;
  std::vector<std::vector<int32_t>> system_prompts_;
  std::map<std::string, ModelSession> model_;
  std::vector<Turn> turns_;
  int64_t exhausted_ = 0;
  int64_t turns_done_ = 0;
  int64_t expired_ = 0;
};

class SessionStoreStressTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SessionStoreStressTest, InterleavedTurnsKeepKvAndAccounting) {
  StressHarness h(GetParam());
  for (int step = 0; step < kSteps; ++step) {
    const std::string what = h.Step();
    ASSERT_NO_FATAL_FAILURE(h.AfterStep(absl::StrCat(step, ": ", what)));
    ASSERT_FALSE(::testing::Test::HasFailure())
        << "step " << step << ": " << what;
  }
  const StoreStats s = h.stats();
  // The run must have gone down every path it is meant to test.
  EXPECT_GT(h.turns_done(), 500);
  EXPECT_GT(h.exhausted(), 0);
  EXPECT_GT(h.expired(), 0);
  EXPECT_GT(s.evicted(Tier::kDevice, Tier::kHost), 0);
  EXPECT_GT(s.evicted(Tier::kHost, Tier::kDropped), 0);
  EXPECT_GT(s.evicted(Tier::kDevice, Tier::kDropped), 0);
  EXPECT_GT(s.swap_in_blocks, 0);
  EXPECT_GT(s.cow_blocks, 0);
  EXPECT_GT(s.shared_tokens, 0);
  EXPECT_GT(s.unpinned_over_cap, 0);
  EXPECT_GT(s.reused_tokens[static_cast<int>(Tier::kHost)], 0);
  EXPECT_GT(h.backend().ran(CopyBatch::Kind::kSwapIn), 0);
  EXPECT_GT(h.backend().ran(CopyBatch::Kind::kCopyOnWrite), 0);
  h.DeleteEverything();
  RecordProperty("turns", static_cast<int>(h.turns_done()));
}

INSTANTIATE_TEST_SUITE_P(Seeds, SessionStoreStressTest,
                         ::testing::Values(1u, 2u, 3u));

}  // namespace
}  // namespace kvsession::session_store
