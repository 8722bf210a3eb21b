// Random operations against a plain model of the store: every result, every
// reused prefix and the block accounting must match after each step. No
// host tier and no sharing here, so the model stays simple: a Reserve that
// does not fit drops idle sessions, least recently used first
// (session_store_stress_test.cc covers swap, sharing and pinning).
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
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

constexpr int32_t kBlockSize = 4;
constexpr int32_t kCapacity = 24;
constexpr int32_t kMaxSessions = 24;
constexpr int kIds = 40;
constexpr int32_t kVocab = 6;  // small, so unrelated prompts share prefixes
const absl::Duration kTtl = absl::Hours(1);

struct ModelSession {
  std::vector<int32_t> tokens;
  int64_t blocks = 0;
  // During a turn that diverged from its KV: the old blocks past the
  // common prefix, kept until the turn ends (for an undo).
  int64_t undo_blocks = 0;
  bool busy = false;
  bool dropped = false;  // history only
  uint64_t lru_seq = 0;  // order of the last EndTurn
  absl::Time last_used;
  std::vector<int32_t> pending;  // prompt tokens not yet committed
};

int64_t BlocksFor(int64_t tokens) {
  return (tokens + kBlockSize - 1) / kBlockSize;
}

class Harness {
 public:
  explicit Harness(uint32_t seed) : rng_(seed) {
    SessionStore::Options options;
    options.block_size = kBlockSize;
    options.num_device_blocks = kCapacity;
    options.max_sessions = kMaxSessions;
    options.idle_ttl = kTtl;
    options.clock = &clock_;
    options.share_prefixes = false;
    store_ = *SessionStore::Create(options);
  }

  // Runs one random operation; returns a description of it for failures.
  std::string Step() {
    const int op = Uniform(0, 99);
    if (op < 20) return Begin(RandomId());
    if (op < 35) return FullTurn();
    if (op < 50) return OnRandomBusy(&Harness::DoReserve);
    if (op < 65) return OnRandomBusy(&Harness::DoCommit);
    if (op < 85) return OnRandomBusy(&Harness::End);
    if (op < 90) return DoDelete();
    if (op < 93) return Expire();
    if (op < 98) {
      const absl::Duration d =
          Uniform(0, 59) == 0 ? absl::Hours(2) : absl::Seconds(Uniform(0, 600));
      clock_.Advance(d);
      return absl::StrCat("advance ", absl::FormatDuration(d));
    }
    return OffTurn();
  }

  void CheckAgainstModel(const std::string& what) {
    ASSERT_TRUE(store_->CheckInvariants().ok())
        << what << ": " << store_->CheckInvariants();
    const StoreStats stats = store_->Stats();
    ASSERT_EQ(stats.sessions, static_cast<int32_t>(model_.size())) << what;
    int64_t used = 0;
    int32_t busy = 0;
    for (const auto& [id, m] : model_) {
      used += m.blocks + m.undo_blocks;
      busy += m.busy;
    }
    ASSERT_EQ(stats.busy_sessions, busy) << what;
    ASSERT_EQ(stats.tier(Tier::kDevice).used_blocks, used) << what;
    ASSERT_EQ(stats.tier(Tier::kDevice).free_blocks, kCapacity - used) << what;
    if (model_.empty()) return;
    auto it = model_.begin();
    std::advance(it, Uniform(0, static_cast<int>(model_.size()) - 1));
    ASSERT_THAT(store_->tokens(it->first), ElementsAreArray(it->second.tokens))
        << what << " session " << it->first;
    ASSERT_EQ(static_cast<int64_t>(store_->block_table(it->first).size()),
              it->second.blocks)
        << what << " session " << it->first;
  }

  void DeleteEverything() {
    for (auto& [id, m] : model_) {
      if (m.busy) store_->EndTurn(id);
      ASSERT_TRUE(store_->Delete(id).ok()) << id;
    }
    model_.clear();
    ASSERT_TRUE(store_->CheckInvariants().ok()) << store_->CheckInvariants();
    const StoreStats stats = store_->Stats();
    EXPECT_EQ(stats.sessions, 0);
    EXPECT_EQ(stats.tier(Tier::kDevice).free_blocks, kCapacity);
    EXPECT_EQ(stats.tier(Tier::kDevice).used_blocks, 0);
  }

  int64_t begins_ok() const { return begins_ok_; }
  int64_t reused_total() const { return reused_total_; }
  int64_t exhausted() const { return exhausted_; }
  int64_t dropped() const { return dropped_; }

 private:
  int Uniform(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }
  std::string RandomId() { return absl::StrCat("s", Uniform(0, kIds - 1)); }
  ModelSession* Find(const std::string& id) {
    auto it = model_.find(id);
    return it == model_.end() ? nullptr : &it->second;
  }
  ModelSession* RandomBusy(std::string* id) {
    std::vector<std::string> busy;
    for (const auto& [sid, m] : model_) {
      if (m.busy) busy.push_back(sid);
    }
    if (busy.empty()) return nullptr;
    *id = busy[Uniform(0, static_cast<int>(busy.size()) - 1)];
    return Find(*id);
  }
  int64_t FreeBlocks() const {
    int64_t used = 0;
    for (const auto& [id, m] : model_) used += m.blocks + m.undo_blocks;
    return kCapacity - used;
  }
  void ModelExpire() {
    const absl::Time now = clock_.Now();
    for (auto it = model_.begin(); it != model_.end();) {
      if (!it->second.busy && now - it->second.last_used > kTtl) {
        it = model_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // A prompt that extends, edits or cuts a history (its own or another's).
  std::vector<int32_t> RandomPrompt(const std::string& id) {
    std::vector<int32_t> base;
    const int pick = Uniform(0, 3);
    if (pick <= 1) {
      if (ModelSession* m = Find(id)) base = m->tokens;
    } else if (pick == 2 && !model_.empty()) {
      auto it = model_.begin();
      std::advance(it, Uniform(0, static_cast<int>(model_.size()) - 1));
      base = it->second.tokens;
    }
    if (!base.empty() && Uniform(0, 3) == 0) {
      base.resize(Uniform(0, static_cast<int>(base.size())));
    }
    if (!base.empty() && Uniform(0, 4) == 0) {
      base[Uniform(0, static_cast<int>(base.size()) - 1)] =
          Uniform(0, kVocab - 1);
    }
    const int extra = Uniform(0, 16);
    for (int i = 0; i < extra; ++i) base.push_back(Uniform(0, kVocab - 1));
    return base;
  }

  using BusyOp = std::string (Harness::*)(const std::string&, ModelSession&);
  std::string OnRandomBusy(BusyOp op) {
    std::string id;
    ModelSession* m = RandomBusy(&id);
    if (m == nullptr) return "no busy session";
    return (this->*op)(id, *m);
  }

  // A whole turn, each step checked like the single operations.
  std::string FullTurn() {
    const std::string id = RandomId();
    std::string what = Begin(id);
    ModelSession* m = Find(id);
    if (m == nullptr || !m->busy || m->tokens.size() + m->pending.size() == 0) {
      return what;
    }
    what += "; " + DoReserve(id, *m);
    while (!m->pending.empty() &&
           static_cast<int64_t>(m->tokens.size() + m->pending.size()) <=
               m->blocks * kBlockSize) {
      what += "; " + DoCommit(id, *m);
    }
    return what + "; " + End(id, *m);
  }

  std::string Begin(const std::string& id) {
    const bool create = Uniform(0, 4) != 0;
    const std::vector<int32_t> prompt = RandomPrompt(id);
    const std::string what = absl::StrCat("begin ", id, " prompt ",
                                          prompt.size(), " create ", create);
    absl::StatusOr<TurnPlan> plan = store_->BeginTurn(id, prompt, create);
    ModelSession* m = Find(id);
    absl::StatusCode want = absl::StatusCode::kOk;
    if (prompt.empty()) {
      want = absl::StatusCode::kInvalidArgument;
    } else if (m != nullptr && m->busy) {
      want = absl::StatusCode::kAborted;
    } else if (m == nullptr && !create) {
      want = absl::StatusCode::kNotFound;
    } else if (m == nullptr) {
      if (static_cast<int32_t>(model_.size()) >= kMaxSessions) ModelExpire();
      if (static_cast<int32_t>(model_.size()) >= kMaxSessions) {
        want = absl::StatusCode::kResourceExhausted;
      }
    }
    EXPECT_EQ(plan.status().code(), want) << what << ": " << plan.status();
    if (!plan.ok()) return what;
    if (m == nullptr) m = &model_[id];
    const size_t common =
        std::mismatch(
            m->tokens.begin(),
            m->tokens.begin() + std::min(m->tokens.size(), prompt.size()),
            prompt.begin())
            .first -
        m->tokens.begin();
    const int32_t reuse =
        m->dropped ? 0
                   : static_cast<int32_t>(std::min(common, prompt.size() - 1));
    EXPECT_EQ(plan->reused_tokens, reuse) << what;
    EXPECT_EQ(plan->prompt_tokens, static_cast<int32_t>(prompt.size()));
    EXPECT_EQ(plan->reused_from, reuse > 0 ? Tier::kDevice : Tier::kDropped);
    EXPECT_EQ(plan->recomputed, m->dropped && !m->tokens.empty()) << what;
    const int64_t held = m->dropped ? 0 : static_cast<int64_t>(m->tokens.size());
    m->dropped = false;
    m->busy = true;  // never its own victim
    if (held > reuse) {
      // The old blocks past the prefix wait for the turn's end; the block
      // the prefix ends in is copied when there is room for the copy.
      const int64_t first = reuse / kBlockSize;
      m->undo_blocks = BlocksFor(held) - first;
      m->blocks = first;
      if (reuse % kBlockSize != 0) {
        if (MakeRoom(1)) {
          m->blocks = first + 1;
        } else {
          m->blocks = first + 1;
          m->undo_blocks = 0;
        }
      }
    }
    m->tokens.resize(reuse);
    m->blocks = std::min(m->blocks, BlocksFor(reuse));
    m->busy = true;
    m->last_used = clock_.Now();
    m->pending.assign(prompt.begin() + reuse, prompt.end());
    ++begins_ok_;
    reused_total_ += reuse;
    return what;
  }

  std::string DoReserve(const std::string& id, ModelSession& m) {
    const int32_t total =
        static_cast<int32_t>(m.tokens.size() + m.pending.size() +
                             Uniform(0, 10)) -
        Uniform(0, 3);
    const std::string what = absl::StrCat("reserve ", id, " ", total);
    const absl::Status st =
        store_->Reserve(id, std::max(total, 0)).status();
    const int64_t need = BlocksFor(std::max(total, 0)) - m.blocks;
    if (!MakeRoom(need)) {
      // Running turns' undo blocks are the last resort, if they suffice.
      int64_t undo = 0;
      for (const auto& [vid, v] : model_) undo += v.undo_blocks;
      if (FreeBlocks() + undo >= need) {
        for (auto& [vid, v] : model_) v.undo_blocks = 0;
      }
    }
    if (need > FreeBlocks()) {
      EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << what;
      ++exhausted_;
    } else {
      EXPECT_TRUE(st.ok()) << what << ": " << st;
      m.blocks = std::max(m.blocks, BlocksFor(std::max(total, 0)));
    }
    return what;
  }

  // Drops idle sessions, least recently used first, until `need` blocks
  // are free (no host tier here); whether they are.
  bool MakeRoom(int64_t need) {
    while (need > FreeBlocks()) {
      ModelSession* victim = nullptr;
      for (auto& [vid, v] : model_) {
        if (!v.busy && !v.dropped &&
            (victim == nullptr || v.lru_seq < victim->lru_seq)) {
          victim = &v;
        }
      }
      if (victim == nullptr) return false;
      victim->blocks = 0;
      victim->dropped = true;
      ++dropped_;
    }
    return true;
  }

  std::string DoCommit(const std::string& id, ModelSession& m) {
    std::vector<int32_t> tokens;
    if (!m.pending.empty()) {
      tokens.assign(
          m.pending.begin(),
          m.pending.begin() + Uniform(1, static_cast<int>(m.pending.size())));
    } else {
      const int n = Uniform(0, 5);  // decoded tokens
      for (int i = 0; i < n; ++i) tokens.push_back(Uniform(0, kVocab - 1));
    }
    const std::string what = absl::StrCat("commit ", id, " ", tokens.size());
    const absl::Status st = store_->Commit(id, tokens);
    if (static_cast<int64_t>(m.tokens.size() + tokens.size()) >
        m.blocks * kBlockSize) {
      EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << what;
    } else {
      EXPECT_TRUE(st.ok()) << what << ": " << st;
      m.tokens.insert(m.tokens.end(), tokens.begin(), tokens.end());
      m.pending.erase(
          m.pending.begin(),
          m.pending.begin() + std::min(m.pending.size(), tokens.size()));
    }
    return what;
  }

  std::string End(const std::string& id, ModelSession& m) {
    store_->EndTurn(id);
    m.busy = false;
    m.undo_blocks = 0;
    m.lru_seq = ++lru_counter_;
    m.blocks = BlocksFor(static_cast<int64_t>(m.tokens.size()));
    m.last_used = clock_.Now();
    m.pending.clear();
    return absl::StrCat("end ", id);
  }

  std::string DoDelete() {
    const std::string id = RandomId();
    const absl::Status st = store_->Delete(id);
    ModelSession* m = Find(id);
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

  std::string Expire() {
    const size_t before = model_.size();
    ModelExpire();
    EXPECT_EQ(store_->ExpireIdle(), static_cast<int>(before - model_.size()));
    return "expire";
  }

  // Reserve or Commit on an idle or missing session must be refused.
  std::string OffTurn() {
    const std::string id = RandomId();
    ModelSession* m = Find(id);
    if (m != nullptr && m->busy) return "off-turn: busy";
    const absl::StatusCode want = m == nullptr
                                      ? absl::StatusCode::kNotFound
                                      : absl::StatusCode::kFailedPrecondition;
    EXPECT_EQ(store_->Reserve(id, 100).status().code(), want) << id;
    EXPECT_EQ(store_->Commit(id, std::vector<int32_t>{1}).code(), want) << id;
    return absl::StrCat("off-turn ", id);
  }

  std::mt19937 rng_;
  FakeClock clock_;
  std::unique_ptr<SessionStore> store_;
  std::map<std::string, ModelSession> model_;
  int64_t begins_ok_ = 0;
  int64_t reused_total_ = 0;
  int64_t exhausted_ = 0;
  int64_t dropped_ = 0;
  uint64_t lru_counter_ = 0;
};

class SessionStorePropertyTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SessionStorePropertyTest, RandomOperationsMatchModel) {
  Harness h(GetParam());
  for (int step = 0; step < 5000; ++step) {
    const std::string what = h.Step();
    ASSERT_NO_FATAL_FAILURE(
        h.CheckAgainstModel(absl::StrCat(step, ": ", what)));
    ASSERT_FALSE(::testing::Test::HasFailure())
        << "step " << step << ": " << what;
  }
  // The run must have exercised the interesting paths.
  EXPECT_GT(h.begins_ok(), 500);
  EXPECT_GT(h.reused_total(), 500);
  EXPECT_GT(h.exhausted(), 0);
  EXPECT_GT(h.dropped(), 0);
  h.DeleteEverything();
}

INSTANTIATE_TEST_SUITE_P(Seeds, SessionStorePropertyTest,
                         ::testing::Values(1u, 2u, 3u));

}  // namespace
}  // namespace kvsession::session_store
