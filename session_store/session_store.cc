#include "session_store/session_store.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace kvsession::session_store {
namespace {

constexpr int32_t kMaxPageSize = 1000;

// This Abseil's string_view is its own type, not std::string_view.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

int32_t CommonPrefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  const auto mismatch = std::mismatch(a.begin(), a.begin() + n, b.begin());
  return static_cast<int32_t>(mismatch.first - a.begin());
}

}  // namespace

std::string_view TierName(Tier tier) {
  switch (tier) {
    case Tier::kDevice:
      return "device";
    case Tier::kHost:
      return "host";
    case Tier::kDropped:
      return "dropped";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Create(
    const Options& options) {
  if (options.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be positive, got ", options.block_size));
  }
  if (options.num_device_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_device_blocks must not be negative, got ",
                     options.num_device_blocks));
  }
  if (options.max_sessions <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_sessions must be positive, got ", options.max_sessions));
  }
  if (options.idle_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("idle_ttl must be positive, got ",
                     absl::FormatDuration(options.idle_ttl)));
  }
  if (options.block_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_bytes must not be negative, got ", options.block_bytes));
  }
  const Clock* clock =
      options.clock != nullptr ? options.clock : SystemClock::Get();
  return std::unique_ptr<SessionStore>(new SessionStore(options, clock));
}

SessionStore::SessionStore(const Options& options, const Clock* clock)
    : options_(options), clock_(*clock) {
  tier(Tier::kDevice).pool = std::make_unique<BlockPool>(
      BlockPool::Options{.num_blocks = options.num_device_blocks});
  // The host tier has no capacity yet; swap-out will give it one.
  tier(Tier::kHost).pool =
      std::make_unique<BlockPool>(BlockPool::Options{.num_blocks = 0});
}

SessionStore::~SessionStore() {
  // The lists must be empty before they are destroyed.
  for (TierState& t : tiers_) {
    while (t.idle.PopFront() != nullptr) {
    }
  }
}

SessionStore::Session* SessionStore::Find(std::string_view id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

const SessionStore::Session* SessionStore::Find(std::string_view id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

absl::StatusOr<SessionStore::Session*> SessionStore::FindBusy(
    std::string_view id, std::string_view op) {
  Session* s = Find(id);
  if (s == nullptr) {
    return absl::NotFoundError(absl::StrCat("session ", Sv(id), " not found"));
  }
  if (!s->busy) {
    return absl::FailedPreconditionError(
        absl::StrCat(Sv(op), " on session ", Sv(id), " outside a turn"));
  }
  return s;
}

int64_t SessionStore::BlocksFor(int64_t num_tokens) const {
  return (num_tokens + options_.block_size - 1) / options_.block_size;
}

void SessionStore::ShrinkTable(Session& s, int64_t keep) {
  if (static_cast<int64_t>(s.blocks.size()) <= keep) return;
  std::span<const int32_t> tail(s.blocks.begin() + keep, s.blocks.end());
  tier(s.tier).pool->Release(tail);
  s.blocks.resize(keep);
}

void SessionStore::Destroy(Session& s) {
  KVS_CHECK(!s.busy);
  ShrinkTable(s, 0);
  tier(s.tier).idle.Remove(&s);
  // Erasing by key destroys s; copy the key out of it first.
  const std::string id = std::move(s.id);
  sessions_.erase(id);
}

absl::StatusOr<TurnPlan> SessionStore::BeginTurn(
    std::string_view id, std::span<const int32_t> prompt,
    bool create_if_missing) {
  if (id.empty()) return absl::InvalidArgumentError("session id is empty");
  if (prompt.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt of session ", Sv(id), " has no tokens"));
  }
  if (prompt.size() >
      static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of session ", Sv(id),
                                                   " has ", prompt.size(),
                                                   " tokens, too many"));
  }
  const absl::Time now = clock_.Now();
  Session* s = Find(id);
  if (s != nullptr && s->busy) {
    return absl::AbortedError(
        absl::StrCat("session ", Sv(id), " is busy with another request"));
  }
  if (s == nullptr) {
    if (!create_if_missing) {
      return absl::NotFoundError(
          absl::StrCat("session ", Sv(id), " not found"));
    }
    // Expiring only removes sessions that are due anyway, so on the error
    // path below nothing was removed (or there would be room).
    if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
      ExpireIdle();
    }
    if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot open session ", Sv(id), ": ", sessions_.size(),
                       " sessions open, the limit is ", options_.max_sessions));
    }
    auto [it, inserted] = sessions_.try_emplace(std::string(id));
    KVS_CHECK(inserted);
    s = &it->second;
    s->id = it->first;
    s->tier = Tier::kDevice;
    s->created = now;
  } else {
    tier(s->tier).idle.Remove(s);
  }

  TurnPlan plan;
  plan.prompt_tokens = static_cast<int32_t>(prompt.size());
  const Tier from = s->tier;
  int32_t reuse = 0;
  switch (from) {
    case Tier::kDevice:
      reuse = CommonPrefix(s->tokens, prompt);
      break;
    case Tier::kHost:
      // Swap-in is not implemented yet, and nothing moves sessions here.
      KVS_CHECK(false) << "session " << id << " in the host tier";
      break;
    case Tier::kDropped:
      // Only the history is left: the whole prompt is recomputed.
      reuse = 0;
      s->tier = Tier::kDevice;
      break;
  }
  reuse = std::min(reuse, plan.prompt_tokens - 1);
  plan.reused_tokens = reuse;
  plan.reused_from = reuse > 0 ? from : Tier::kDropped;

  s->tokens.resize(reuse);
  ShrinkTable(*s, BlocksFor(reuse));
  s->busy = true;
  ++busy_sessions_;
  s->last_used = now;
  ++s->turns;
  s->prompt_tokens += plan.prompt_tokens;
  s->reused_tokens += reuse;
  ++counters_.turns;
  counters_.prompt_tokens += plan.prompt_tokens;
  counters_.reused_tokens[static_cast<int>(plan.reused_from)] += reuse;
  return plan;
}

absl::Status SessionStore::Reserve(std::string_view id, int32_t total_tokens) {
  absl::StatusOr<Session*> found = FindBusy(id, "Reserve");
  if (!found.ok()) return found.status();
  Session& s = **found;
  if (total_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reserve of ", total_tokens, " tokens for session ", Sv(id)));
  }
  const int64_t need =
      BlocksFor(total_tokens) - static_cast<int64_t>(s.blocks.size());
  if (need <= 0) return absl::OkStatus();
  BlockPool& pool = *tier(s.tier).pool;
  if (need > pool.free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "session ", Sv(id), " needs ", need, " more KV blocks to hold ",
        total_tokens, " tokens; ", pool.free_blocks(), " of ", pool.capacity(),
        " ", Sv(TierName(s.tier)), " blocks are free"));
  }
  absl::StatusOr<std::vector<int32_t>> blocks =
      pool.Allocate(static_cast<int32_t>(need));
  KVS_CHECK(blocks.ok()) << blocks.status();
  s.blocks.insert(s.blocks.end(), blocks->begin(), blocks->end());
  return absl::OkStatus();
}

absl::Status SessionStore::Commit(std::string_view id,
                                  std::span<const int32_t> tokens) {
  absl::StatusOr<Session*> found = FindBusy(id, "Commit");
  if (!found.ok()) return found.status();
  Session& s = **found;
  const int64_t total = static_cast<int64_t>(s.tokens.size()) +
                        static_cast<int64_t>(tokens.size());
  const int64_t reserved =
      static_cast<int64_t>(s.blocks.size()) * options_.block_size;
  if (total > reserved) {
    return absl::FailedPreconditionError(
        absl::StrCat("Commit of ", tokens.size(), " tokens to session ", Sv(id),
                     " would hold ", total, " tokens, but only ", reserved,
                     " positions are reserved"));
  }
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  return absl::OkStatus();
}

void SessionStore::EndTurn(std::string_view id) {
  Session* s = Find(id);
  KVS_CHECK(s != nullptr) << "EndTurn of unknown session " << id;
  KVS_CHECK(s->busy) << "EndTurn of idle session " << id;
  ShrinkTable(*s, BlocksFor(static_cast<int64_t>(s->tokens.size())));
  s->busy = false;
  --busy_sessions_;
  s->last_used = clock_.Now();
  tier(s->tier).idle.PushBack(s);
}

absl::Status SessionStore::Delete(std::string_view id) {
  Session* s = Find(id);
  if (s == nullptr) {
    return absl::NotFoundError(absl::StrCat("session ", Sv(id), " not found"));
  }
  if (s->busy) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", Sv(id),
        " is busy with a request; cancel it before deleting the session"));
  }
  Destroy(*s);
  ++counters_.deleted_sessions;
  return absl::OkStatus();
}

int SessionStore::ExpireIdle() {
  const absl::Time now = clock_.Now();
  int expired = 0;
  for (TierState& t : tiers_) {
    // Each list is in last-used order, so the expired ones lead it.
    while (Session* s = t.idle.Front()) {
      if (now - s->last_used <= options_.idle_ttl) break;
      Destroy(*s);
      ++expired;
    }
  }
  counters_.expired_sessions += expired;
  return expired;
}

SessionInfo SessionStore::Info(const Session& s) const {
  SessionInfo info;
  info.id = s.id;
  info.num_tokens = static_cast<int32_t>(s.tokens.size());
  info.num_blocks = static_cast<int32_t>(s.blocks.size());
  info.tier = s.tier;
  info.busy = s.busy;
  info.created = s.created;
  info.last_used = s.last_used;
  info.turns = s.turns;
  info.prompt_tokens = s.prompt_tokens;
  info.reused_tokens = s.reused_tokens;
  return info;
}

absl::StatusOr<SessionInfo> SessionStore::GetInfo(std::string_view id) const {
  const Session* s = Find(id);
  if (s == nullptr) {
    return absl::NotFoundError(absl::StrCat("session ", Sv(id), " not found"));
  }
  return Info(*s);
}

absl::StatusOr<SessionPage> SessionStore::List(
    int32_t page_size, std::string_view page_token) const {
  if (page_size <= 0 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size must be in [1, ", kMaxPageSize, "], got ", page_size));
  }
  // The token is the last id of the previous page, encoded so that clients
  // treat it as opaque and ids with any bytes survive transport.
  auto it = sessions_.begin();
  if (!page_token.empty()) {
    std::string after;
    if (!absl::WebSafeBase64Unescape(Sv(page_token), &after) || after.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed page_token \"", Sv(page_token), "\""));
    }
    it = sessions_.upper_bound(after);
  }
  SessionPage page;
  for (; it != sessions_.end() &&
         static_cast<int32_t>(page.sessions.size()) < page_size;
       ++it) {
    page.sessions.push_back(Info(it->second));
  }
  if (it != sessions_.end()) {
    page.next_page_token = absl::WebSafeBase64Escape(page.sessions.back().id);
  }
  return page;
}

const std::vector<int32_t>& SessionStore::tokens(std::string_view id) const {
  const Session* s = Find(id);
  KVS_CHECK(s != nullptr) << "unknown session " << id;
  return s->tokens;
}

const std::vector<int32_t>& SessionStore::block_table(
    std::string_view id) const {
  const Session* s = Find(id);
  KVS_CHECK(s != nullptr) << "unknown session " << id;
  return s->blocks;
}

bool SessionStore::Contains(std::string_view id) const {
  return Find(id) != nullptr;
}

StoreStats SessionStore::Stats() const {
  StoreStats stats = counters_;
  stats.sessions = static_cast<int32_t>(sessions_.size());
  stats.busy_sessions = busy_sessions_;
  for (int i = 0; i < kNumTiers; ++i) {
    const TierState& t = tiers_[i];
    TierStats& out = stats.tiers[i];
    out.sessions = static_cast<int32_t>(t.idle.size());
    if (t.pool != nullptr) {
      out.capacity_blocks = t.pool->capacity();
      out.used_blocks = t.pool->used_blocks();
      out.free_blocks = t.pool->free_blocks();
      out.capacity_bytes = int64_t{out.capacity_blocks} * options_.block_bytes;
      out.used_bytes = int64_t{out.used_blocks} * options_.block_bytes;
    }
  }
  // Running sequences are always resident.
  stats.tiers[static_cast<int>(Tier::kDevice)].sessions += busy_sessions_;
  return stats;
}

absl::Status SessionStore::CheckSession(
    const Session& s, std::array<std::vector<int32_t>, kNumTiers>& refs) const {
  const int ti = static_cast<int>(s.tier);
  if (ti < 0 || ti >= kNumTiers) {
    return absl::InternalError(absl::StrCat("session ", s.id, " bad tier"));
  }
  const TierState& t = tiers_[ti];
  if (t.pool == nullptr && !s.blocks.empty()) {
    return absl::InternalError(absl::StrCat(
        "session ", s.id, " holds ", s.blocks.size(), " blocks in tier ",
        Sv(TierName(s.tier)), ", which has none"));
  }
  for (int32_t b : s.blocks) {
    if (b < 0 || b >= t.pool->capacity()) {
      return absl::InternalError(absl::StrCat("session ", s.id, " holds block ",
                                              b, " outside tier ",
                                              Sv(TierName(s.tier))));
    }
    ++refs[ti][b];
  }
  const int64_t need = BlocksFor(static_cast<int64_t>(s.tokens.size()));
  const int64_t have = static_cast<int64_t>(s.blocks.size());
  if (s.tier != Tier::kDropped && (have < need || (!s.busy && have != need))) {
    return absl::InternalError(
        absl::StrCat("session ", s.id, " has ", s.tokens.size(), " tokens in ",
                     have, " blocks", s.busy ? "" : " while idle"));
  }
  if (s.busy) {
    if (s.tier != Tier::kDevice) {
      return absl::InternalError(absl::StrCat(
          "busy session ", s.id, " in tier ", Sv(TierName(s.tier))));
    }
    if (s.lru.linked()) {
      return absl::InternalError(
          absl::StrCat("busy session ", s.id, " is in an LRU list"));
    }
  } else if (!t.idle.Contains(s)) {
    return absl::InternalError(absl::StrCat("idle session ", s.id,
                                            " is not in the ",
                                            Sv(TierName(s.tier)), " LRU"));
  }
  return absl::OkStatus();
}

absl::Status SessionStore::CheckInvariants() const {
  std::array<std::vector<int32_t>, kNumTiers> refs;
  for (int i = 0; i < kNumTiers; ++i) {
    const BlockPool* pool = tiers_[i].pool.get();
    if (pool == nullptr) continue;
    if (absl::Status st = pool->CheckInvariants(); !st.ok()) {
      return absl::InternalError(absl::StrCat(
          Sv(TierName(static_cast<Tier>(i))), " pool: ", st.message()));
    }
    if (pool->free_blocks() + pool->used_blocks() != pool->capacity()) {
      return absl::InternalError("free + used != capacity");
    }
    refs[i].assign(pool->capacity(), 0);
  }
  if (static_cast<int64_t>(sessions_.size()) > options_.max_sessions) {
    return absl::InternalError(
        absl::StrCat(sessions_.size(), " sessions exceed the limit"));
  }
  int32_t busy = 0;
  for (const auto& [key, s] : sessions_) {
    if (key != s.id) {
      return absl::InternalError(
          absl::StrCat("session keyed ", key, " has id ", s.id));
    }
    if (absl::Status st = CheckSession(s, refs); !st.ok()) return st;
    busy += s.busy;
  }
  if (busy != busy_sessions_) {
    return absl::InternalError(
        absl::StrCat(busy, " busy sessions, counted ", busy_sessions_));
  }
  size_t idle = 0;
  for (int i = 0; i < kNumTiers; ++i) {
    const TierState& t = tiers_[i];
    size_t walked = 0;
    for (const Session* s = t.idle.Front(); s != nullptr; s = t.idle.Next(*s)) {
      if (++walked > t.idle.size() || static_cast<int>(s->tier) != i ||
          s->busy || Find(s->id) != s) {
        return absl::InternalError(absl::StrCat(
            Sv(TierName(static_cast<Tier>(i))), " LRU holds a foreign entry"));
      }
    }
    if (walked != t.idle.size()) {
      return absl::InternalError("LRU size does not match its links");
    }
    idle += walked;
    if (t.pool == nullptr) continue;
    for (int32_t b = 0; b < t.pool->capacity(); ++b) {
      if (refs[i][b] != t.pool->ref_count(b)) {
        return absl::InternalError(absl::StrCat(
            Sv(TierName(static_cast<Tier>(i))), " block ", b, " is held by ",
            refs[i][b], " sessions but its reference count is ",
            t.pool->ref_count(b)));
      }
    }
  }
  if (idle + busy_sessions_ != sessions_.size()) {
    return absl::InternalError(
        absl::StrCat(idle, " idle + ", busy_sessions_,
                     " busy sessions != ", sessions_.size()));
  }
  return absl::OkStatus();
}

}  // namespace kvsession::session_store
