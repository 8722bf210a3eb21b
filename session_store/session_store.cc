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
  if (options.num_host_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_host_blocks must not be negative, got ",
                     options.num_host_blocks));
  }
  if (options.device_idle_ttl <= absl::ZeroDuration() ||
      options.host_idle_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("tier idle TTLs must be positive");
  }
  if (options.max_pinned_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pinned_tokens must not be negative, got ",
                     options.max_pinned_tokens));
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
    : options_(options),
      clock_(*clock),
      index_(options.num_device_blocks, options.block_size) {
  tier(Tier::kDevice).pool = std::make_unique<BlockPool>(
      BlockPool::Options{.num_blocks = options.num_device_blocks});
  tier(Tier::kHost).pool = std::make_unique<BlockPool>(
      BlockPool::Options{.num_blocks = options.num_host_blocks});
}

SessionStore::~SessionStore() {
  // The lists must be empty before they are destroyed.
  for (TierState& t : tiers_) {
    while (t.idle.PopFront() != nullptr) {
    }
    while (t.pinned_idle.PopFront() != nullptr) {
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

void SessionStore::ReleaseBlocks(Tier t, std::span<const int32_t> blocks) {
  BlockPool& pool = *tier(t).pool;
  pool.Release(blocks);
  if (t != Tier::kDevice) return;
  for (int32_t b : blocks) {
    if (pool.ref_count(b) == 0) index_.Erase(b);
  }
}

void SessionStore::ShrinkTable(Session& s, int64_t keep) {
  if (static_cast<int64_t>(s.blocks.size()) <= keep) return;
  std::span<const int32_t> tail(s.blocks.begin() + keep, s.blocks.end());
  ReleaseBlocks(s.tier, tail);
  s.blocks.resize(keep);
}

void SessionStore::LinkIdle(Session& s) {
  tier(s.tier).list(s.pinned).PushBack(&s);
}

void SessionStore::UnlinkIdle(Session& s) {
  tier(s.tier).list(s.pinned).Remove(&s);
}

void SessionStore::SetPinned(Session& s, bool pinned) {
  KVS_CHECK(!s.lru.linked()) << "pin change of a linked session";
  if (s.pinned == pinned) return;
  s.pinned = pinned;
  const int sign = pinned ? 1 : -1;
  pinned_sessions_ += sign;
  pinned_tokens_ += sign * HistorySize(s);
}

std::string SessionStore::Name(const Session& s) {
  return s.ephemeral ? std::string("a one-off turn")
                     : absl::StrCat("session ", s.id);
}

uint64_t SessionStore::PlanCopy(CopyBatch::Kind kind, Tier from, Tier to,
                                std::vector<BlockCopy> copies) {
  CopyBatch batch;
  batch.ticket = next_ticket_++;
  batch.kind = kind;
  batch.from = from;
  batch.to = to;
  for (const BlockCopy& c : copies) {
    tier(from).pool->SetFence(c.src, batch.ticket);
    tier(to).pool->SetFence(c.dst, batch.ticket);
  }
  batch.copies = std::move(copies);
  copies_.push_back(std::move(batch));
  return copies_.back().ticket;
}

std::vector<CopyBatch> SessionStore::TakeCopies() {
  std::vector<CopyBatch> out;
  out.swap(copies_);
  return out;
}

void SessionStore::Destroy(Session& s) {
  KVS_CHECK(!s.busy);
  UnlinkIdle(s);
  SetPinned(s, false);
  ShrinkTable(s, 0);
  // Erasing by key destroys s; copy the key out of it first.
  const std::string id = std::move(s.id);
  sessions_.erase(id);
}

absl::StatusOr<TurnPlan> SessionStore::BeginTurn(
    std::string_view id, std::span<const int32_t> prompt,
    bool create_if_missing, std::optional<bool> pin, bool share,
    bool ephemeral) {
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
  if (ephemeral && s != nullptr) {
    return absl::InvalidArgumentError("an ephemeral session must be new");
  }
  const bool created = s == nullptr;
  if (s == nullptr) {
    if (!create_if_missing) {
      return absl::NotFoundError(
          absl::StrCat("session ", Sv(id), " not found"));
    }
    // Expiring only removes sessions that are due anyway, so on the error
    // path below nothing was removed (or there would be room).
    auto open = [&] {
      return static_cast<int64_t>(sessions_.size()) - ephemeral_sessions_;
    };
    if (!ephemeral && open() >= options_.max_sessions) ExpireIdle();
    if (!ephemeral && open() >= options_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot open session ", Sv(id), ": ", open(),
                       " sessions open, the limit is ", options_.max_sessions));
    }
    auto [it, inserted] = sessions_.try_emplace(std::string(id));
    KVS_CHECK(inserted);
    s = &it->second;
    s->id = it->first;
    s->tier = Tier::kDevice;
    s->created = now;
    s->ephemeral = ephemeral;
    ephemeral_sessions_ += ephemeral;
  } else {
    UnlinkIdle(*s);
  }
  // Busy from here on, so that making room below never evicts this session.
  s->busy = true;
  ++busy_sessions_;
  s->undo.created = created;
  s->undo.pinned = s->pinned;
  s->undo.history = History(id);
  // The turn works on the KV-holding part; AbortTurn restores the tail.
  if (s->pinned) pinned_tokens_ -= static_cast<int64_t>(s->tail.size());
  s->tail.clear();
  if (pin.has_value()) SetPinned(*s, *pin);
  s->share = share && options_.share_prefixes;

  TurnPlan plan;
  plan.prompt_tokens = static_cast<int32_t>(prompt.size());
  // At least the last prompt token is computed, to yield logits.
  const int32_t limit = plan.prompt_tokens - 1;
  const int64_t old_tokens = static_cast<int64_t>(s->tokens.size());
  const Tier from = s->tier;
  int32_t reuse = std::min(CommonPrefix(s->tokens, prompt), limit);
  switch (from) {
    case Tier::kDevice:
      KeepForUndo(*s, reuse);
      ShrinkTable(*s, BlocksFor(reuse));
      break;
    case Tier::kHost:
      ShrinkTable(*s, BlocksFor(reuse));
      if (reuse > 0 && SwapIn(*s, BlocksFor(reuse), plan)) break;
      // Nothing to reuse, or no device room to swap into: recompute.
      ShrinkTable(*s, 0);
      s->tier = Tier::kDevice;
      plan.recomputed = reuse > 0;
      reuse = 0;
      break;
    case Tier::kDropped:
      plan.recomputed = !s->tokens.empty();
      reuse = 0;
      s->tier = Tier::kDevice;
      break;
  }
  s->tokens.resize(reuse);
  const bool swapped_in = from == Tier::kHost && reuse > 0;
  // Another session may hold the next blocks of this prompt.
  if (s->share && reuse % options_.block_size == 0) {
    const int32_t gained = AttachShared(*s, prompt, limit);
    s->tokens.insert(s->tokens.end(), prompt.begin() + reuse,
                     prompt.begin() + reuse + gained);
    reuse += gained;
    plan.shared_tokens = gained;
  }
  // The block holding position `reuse`, if kept, is written by this turn.
  if (reuse % options_.block_size != 0) {
    const int64_t i = reuse / options_.block_size;
    if (!MakeWritable(*s, i)) {
      // No room for a private copy of a shared block: recompute its part.
      reuse = static_cast<int32_t>(i * options_.block_size);
      plan.shared_tokens = std::min(plan.shared_tokens, reuse);
      s->tokens.resize(reuse);
      ShrinkTable(*s, i);
    }
  }
  if (s->pinned) {
    pinned_tokens_ += static_cast<int64_t>(s->tokens.size()) - old_tokens;
  }
  plan.reused_tokens = reuse;
  plan.reused_from =
      reuse == 0 ? Tier::kDropped : (swapped_in ? Tier::kHost : Tier::kDevice);
  plan.ready_ticket = tier(Tier::kDevice).pool->MaxFence(s->blocks);

  s->last_used = now;
  ++s->turns;
  s->prompt_tokens += plan.prompt_tokens;
  s->reused_tokens += reuse;
  s->turn_prompt_tokens = plan.prompt_tokens;
  s->turn_reused_tokens = reuse;
  ++counters_.turns;
  counters_.prompt_tokens += plan.prompt_tokens;
  counters_.reused_tokens[static_cast<int>(plan.reused_from)] += reuse;
  counters_.shared_tokens += plan.shared_tokens;
  return plan;
}

void SessionStore::KeepForUndo(Session& s, int32_t reuse) {
  const int32_t bs = options_.block_size;
  if (static_cast<int64_t>(s.tokens.size()) <= reuse) return;
  // The turn diverges from the KV held: the blocks past the common prefix
  // stay with the session until the turn ends, so that an undone turn
  // leaves its cache as it was. The block the prefix ends in is written by
  // the turn, so it gets a private copy and the original waits too.
  Undo& u = s.undo;
  u.first_block = reuse / bs;
  u.kv_tokens = static_cast<int64_t>(s.tokens.size());
  u.blocks.assign(s.blocks.begin() + u.first_block, s.blocks.end());
  s.blocks.resize(u.first_block);
  if (reuse % bs == 0) return;
  BlockPool& device = *tier(Tier::kDevice).pool;
  if (!MakeRoom(Tier::kDevice, 1)) {
    // No room for the copy: the old blocks go after all.
    s.blocks.push_back(u.blocks.front());
    u.blocks.erase(u.blocks.begin());
    ReleaseUndo(s);
    return;
  }
  absl::StatusOr<std::vector<int32_t>> dst = device.Allocate(1);
  KVS_CHECK(dst.ok()) << dst.status();
  PlanCopy(CopyBatch::Kind::kCopyOnWrite, Tier::kDevice, Tier::kDevice,
           {BlockCopy{u.blocks.front(), (*dst)[0]}});
  s.blocks.push_back((*dst)[0]);
  ++counters_.cow_blocks;
}

void SessionStore::ReleaseUndo(Session& s) {
  ReleaseBlocks(Tier::kDevice, s.undo.blocks);
  s.undo.blocks.clear();
}

absl::StatusOr<uint64_t> SessionStore::Reserve(std::string_view id,
                                                int32_t total_tokens) {
  absl::StatusOr<Session*> found = FindBusy(id, "Reserve");
  if (!found.ok()) return found.status();
  Session& s = **found;
  if (total_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reserve of ", total_tokens, " tokens for session ", Sv(id)));
  }
  const int64_t need =
      BlocksFor(total_tokens) - static_cast<int64_t>(s.blocks.size());
  if (need <= 0) return uint64_t{0};
  BlockPool& pool = *tier(Tier::kDevice).pool;
  if (!MakeRoom(Tier::kDevice, need)) {
    // Running turns' old blocks (kept for undo) are the last resort, given
    // up only if that makes room: a turn that fails anyway leaves them.
    int64_t freed = 0;
    for (const auto& [key, other] : sessions_) {
      for (int32_t b : other.undo.blocks) freed += pool.ref_count(b) == 1;
    }
    if (pool.free_blocks() + freed >= need) {
      for (auto& [key, other] : sessions_) {
        if (other.busy) ReleaseUndo(other);
      }
    }
  }
  if (!MakeRoom(Tier::kDevice, need)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        Name(s), " needs ", need, " more KV blocks to hold ",
        total_tokens, " tokens; ", pool.free_blocks(), " of ", pool.capacity(),
        " device blocks are free and the rest belong to ", busy_sessions_,
        " running sessions"));
  }
  absl::StatusOr<std::vector<int32_t>> blocks =
      pool.Allocate(static_cast<int32_t>(need));
  KVS_CHECK(blocks.ok()) << blocks.status();
  s.blocks.insert(s.blocks.end(), blocks->begin(), blocks->end());
  return pool.MaxFence(*blocks);
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
        absl::StrCat("Commit of ", tokens.size(), " tokens to ", Name(s),
                     " would hold ", total, " tokens, but only ", reserved,
                     " positions are reserved"));
  }
  const int64_t full_before =
      static_cast<int64_t>(s.tokens.size()) / options_.block_size;
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  if (s.pinned) pinned_tokens_ += static_cast<int64_t>(tokens.size());
  if (s.share) {
    const int64_t full_after =
        static_cast<int64_t>(s.tokens.size()) / options_.block_size;
    for (int64_t i = full_before; i < full_after; ++i) ShareBlock(s, i);
  }
  return absl::OkStatus();
}

void SessionStore::SetHistory(Session& s, std::span<const int32_t> history) {
  const int32_t bs = options_.block_size;
  const int64_t before = HistorySize(s);
  int64_t keep = CommonPrefix(s.tokens, history);
  int64_t blocks = BlocksFor(keep);
  if (keep % bs != 0) {
    // The block cut inside will be written by the next turn: it must be
    // private then. One other sessions share goes back (its tokens become
    // tail); a private one leaves the prefix index.
    const int32_t b = s.blocks[keep / bs];
    if (index_.Contains(b)) {
      if (tier(Tier::kDevice).pool->ref_count(b) == 1) {
        index_.Erase(b);
      } else {
        blocks = keep / bs;
        keep = blocks * bs;
      }
    }
  }
  s.tokens.resize(keep);
  ShrinkTable(s, blocks);
  s.tail.assign(history.begin() + keep, history.end());
  if (s.pinned) pinned_tokens_ += HistorySize(s) - before;
}

void SessionStore::Release(Session& s) {
  s.busy = false;
  --busy_sessions_;
  ReleaseUndo(s);
  s.undo = Undo();
  s.last_used = clock_.Now();
  if (s.pinned && pinned_tokens_ > options_.max_pinned_tokens) {
    SetPinned(s, false);
    ++counters_.unpinned_over_cap;
  }
  LinkIdle(s);
}

void SessionStore::EndTurn(
    std::string_view id, std::span<const int32_t> history,
    std::optional<std::vector<TranscriptMessage>> transcript) {
  Session* s = Find(id);
  KVS_CHECK(s != nullptr) << "EndTurn of unknown session " << id;
  KVS_CHECK(s->busy) << "EndTurn of idle session " << id;
  // A copy: `history` may be this session's own tokens.
  const std::vector<int32_t> h(history.begin(), history.end());
  SetHistory(*s, h);
  if (transcript.has_value()) s->transcript = *std::move(transcript);
  Release(*s);
}

void SessionStore::EndTurn(std::string_view id) {
  EndTurn(id, tokens(id));
}

void SessionStore::AbortTurn(std::string_view id) {
  Session* s = Find(id);
  KVS_CHECK(s != nullptr) << "AbortTurn of unknown session " << id;
  KVS_CHECK(s->busy) << "AbortTurn of idle session " << id;
  Undo undo = std::move(s->undo);
  s->undo = Undo();
  if (!undo.blocks.empty()) {
    // The blocks the turn diverged from come back in place of its own.
    const int64_t before = HistorySize(*s);
    ShrinkTable(*s, undo.first_block);
    s->blocks.insert(s->blocks.end(), undo.blocks.begin(), undo.blocks.end());
    s->tokens.assign(undo.history.begin(),
                     undo.history.begin() + undo.kv_tokens);
    if (s->pinned) pinned_tokens_ += HistorySize(*s) - before;
  }
  SetHistory(*s, undo.history);
  SetPinned(*s, undo.pinned);
  --s->turns;
  s->prompt_tokens -= s->turn_prompt_tokens;
  s->reused_tokens -= s->turn_reused_tokens;
  if (!undo.created) {
    Release(*s);
    return;
  }
  s->busy = false;
  --busy_sessions_;
  ephemeral_sessions_ -= s->ephemeral;
  SetPinned(*s, false);
  ShrinkTable(*s, 0);
  const std::string key = std::move(s->id);
  sessions_.erase(key);
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

SessionInfo SessionStore::Info(const Session& s) const {
  SessionInfo info;
  info.id = s.id;
  // A running turn's effects appear when it ends: until then the history
  // and the turn count are those before it.
  info.num_tokens = static_cast<int32_t>(
      s.busy ? static_cast<int64_t>(s.undo.history.size()) : HistorySize(s));
  info.num_blocks = static_cast<int32_t>(s.blocks.size());
  info.tier = s.tier;
  info.busy = s.busy;
  info.pinned = s.pinned;
  if (s.tier == Tier::kDevice) {
    for (int32_t b : s.blocks) {
      info.shared_blocks += tier(Tier::kDevice).pool->ref_count(b) > 1;
    }
  }
  info.created = s.created;
  info.last_used = s.last_used;
  info.turns = s.turns - (s.busy ? 1 : 0);
  info.prompt_tokens = s.prompt_tokens;
  info.reused_tokens = s.reused_tokens;
  info.transcript = s.transcript;
  return info;
}

absl::StatusOr<SessionInfo> SessionStore::GetInfo(std::string_view id) const {
  const Session* s = Find(id);
  if (s == nullptr || s->ephemeral) {
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
    if (!it->second.ephemeral) page.sessions.push_back(Info(it->second));
  }
  while (it != sessions_.end() && it->second.ephemeral) ++it;
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

std::vector<int32_t> SessionStore::History(std::string_view id) const {
  const Session* s = Find(id);
  KVS_CHECK(s != nullptr) << "unknown session " << id;
  std::vector<int32_t> h = s->tokens;
  h.insert(h.end(), s->tail.begin(), s->tail.end());
  return h;
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
  stats.sessions = static_cast<int32_t>(sessions_.size()) - ephemeral_sessions_;
  stats.busy_sessions = busy_sessions_ - ephemeral_sessions_;
  stats.pinned_sessions = pinned_sessions_;
  stats.pinned_tokens = pinned_tokens_;
  const BlockPool& device = *tier(Tier::kDevice).pool;
  for (int32_t b = 0; b < device.capacity(); ++b) {
    const int32_t refs = device.ref_count(b);
    stats.shared_blocks += refs > 1;
    stats.saved_blocks += std::max(refs - 1, 0);
  }
  for (int i = 0; i < kNumTiers; ++i) {
    const TierState& t = tiers_[i];
    TierStats& out = stats.tiers[i];
    out.sessions = static_cast<int32_t>(t.idle.size() + t.pinned_idle.size());
    if (t.pool != nullptr) {
      out.capacity_blocks = t.pool->capacity();
      out.used_blocks = t.pool->used_blocks();
      out.free_blocks = t.pool->free_blocks();
      out.capacity_bytes = int64_t{out.capacity_blocks} * options_.block_bytes;
      out.used_bytes = int64_t{out.used_blocks} * options_.block_bytes;
    }
  }
  // Running sequences are always resident.
  stats.tiers[static_cast<int>(Tier::kDevice)].sessions += stats.busy_sessions;
  return stats;
}


}  // namespace kvsession::session_store
