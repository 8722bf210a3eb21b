// The store's invariant checker: block accounting in every tier, LRU
// membership, pinning and the prefix index. Tests run it after every step.
#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "session_store/session_store.h"

namespace kvsession::session_store {
namespace {
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }
}  // namespace

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
    if (t.pool->fence(b) > last_ticket()) {
      return absl::InternalError(
          absl::StrCat("block ", b, " fenced by an unplanned copy"));
    }
    ++refs[ti][b];
  }
  if (!s.undo.blocks.empty() && !(s.busy && s.tier == Tier::kDevice)) {
    return absl::InternalError(
        absl::StrCat("session ", s.id, " keeps undo blocks outside a turn"));
  }
  for (int32_t b : s.undo.blocks) ++refs[ti][b];
  const int64_t need = BlocksFor(static_cast<int64_t>(s.tokens.size()));
  const int64_t have = static_cast<int64_t>(s.blocks.size());
  if (s.tier != Tier::kDropped && (have < need || (!s.busy && have != need))) {
    return absl::InternalError(
        absl::StrCat("session ", s.id, " has ", s.tokens.size(), " tokens in ",
                     have, " blocks", s.busy ? "" : " while idle"));
  }
  if (s.tier == Tier::kDevice) {
    // Indexed blocks sit behind their index parent and hold the tokens
    // they are indexed under, so a shared block is the KV of this prefix.
    const int32_t bs = options_.block_size;
    for (int64_t i = 0; i < have; ++i) {
      const int32_t b = s.blocks[i];
      if (!index_.Contains(b)) continue;
      const int32_t parent = i == 0 ? PrefixIndex::kNoParent : s.blocks[i - 1];
      if (index_.parent(b) != parent ||
          static_cast<int64_t>(s.tokens.size()) < (i + 1) * bs ||
          !std::equal(s.tokens.begin() + i * bs,
                      s.tokens.begin() + (i + 1) * bs,
                      index_.tokens(b).begin())) {
        return absl::InternalError(absl::StrCat(
            "session ", s.id, " holds shared block ", b, " at ", i,
            " but its prefix differs from the block's"));
      }
    }
  }
  if (!s.tail.empty() && (s.busy || s.tier == Tier::kDropped)) {
    return absl::InternalError(absl::StrCat(
        "session ", s.id, " has a tail while ",
        s.busy ? "busy" : "dropped"));
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
  } else if (!t.list(s.pinned).Contains(s)) {
    return absl::InternalError(
        absl::StrCat("idle session ", s.id, " is not in the ",
                     s.pinned ? "pinned " : "", Sv(TierName(s.tier)), " LRU"));
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
  if (absl::Status st = index_.CheckInvariants(); !st.ok()) return st;
  const int64_t open =
      static_cast<int64_t>(sessions_.size()) - ephemeral_sessions_;
  if (open > options_.max_sessions) {
    return absl::InternalError(
        absl::StrCat(open, " sessions exceed the limit"));
  }
  int32_t busy = 0;
  int32_t ephemeral = 0;
  int32_t pinned = 0;
  int64_t pinned_tokens = 0;
  for (const auto& [key, s] : sessions_) {
    if (key != s.id) {
      return absl::InternalError(
          absl::StrCat("session keyed ", key, " has id ", s.id));
    }
    if (absl::Status st = CheckSession(s, refs); !st.ok()) return st;
    busy += s.busy;
    pinned += s.pinned;
    ephemeral += s.ephemeral;
    if (s.ephemeral && !s.busy) {
      return absl::InternalError("an ephemeral session outlived its turn");
    }
    if (s.pinned) pinned_tokens += HistorySize(s);
  }
  if (busy != busy_sessions_ || ephemeral != ephemeral_sessions_) {
    return absl::InternalError(absl::StrCat(
        busy, " busy sessions, counted ", busy_sessions_, "; ", ephemeral,
        " ephemeral, counted ", ephemeral_sessions_));
  }
  if (pinned != pinned_sessions_ || pinned_tokens != pinned_tokens_) {
    return absl::InternalError(absl::StrCat(
        pinned, " pinned sessions with ", pinned_tokens, " tokens, counted ",
        pinned_sessions_, " with ", pinned_tokens_));
  }
  size_t idle = 0;
  for (int i = 0; i < kNumTiers; ++i) {
    const TierState& t = tiers_[i];
    for (bool pinned_list : {false, true}) {
      const IdleList& list = t.list(pinned_list);
      size_t walked = 0;
      for (const Session* s = list.Front(); s != nullptr; s = list.Next(*s)) {
        if (++walked > list.size() || static_cast<int>(s->tier) != i ||
            s->busy || s->pinned != pinned_list || Find(s->id) != s) {
          return absl::InternalError(absl::StrCat(
              Sv(TierName(static_cast<Tier>(i))), " LRU holds a foreign entry"));
        }
      }
      if (walked != list.size()) {
        return absl::InternalError("LRU size does not match its links");
      }
      idle += walked;
    }
    if (t.pool == nullptr) continue;
    for (int32_t b = 0; b < t.pool->capacity(); ++b) {
      if (refs[i][b] != t.pool->ref_count(b)) {
        return absl::InternalError(absl::StrCat(
            Sv(TierName(static_cast<Tier>(i))), " block ", b, " is held by ",
            refs[i][b], " sessions but its reference count is ",
            t.pool->ref_count(b)));
      }
      if (i == static_cast<int>(Tier::kDevice) && index_.Contains(b) &&
          t.pool->ref_count(b) == 0) {
        return absl::InternalError(
            absl::StrCat("free device block ", b, " is still shared"));
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
