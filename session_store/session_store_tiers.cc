// The tier half of the session store: making device room by moving idle
// sessions down (swap out, drop), swapping in, the idle limits per tier,
// and sharing full blocks of equal prefixes between sessions.
#include <algorithm>
#include <utility>

#include "kernels/check.h"
#include "session_store/session_store.h"

namespace kvsession::session_store {

bool SessionStore::MakeRoom(Tier t, int64_t n, bool take_pinned) {
  TierState& ts = tier(t);
  KVS_CHECK(t != Tier::kDropped);
  while (ts.pool->free_blocks() < n) {
    // Least recently used first, pinned sessions only when no other is
    // left. Busy sessions are in neither list, so they are never chosen.
    Session* victim = ts.idle.Front();
    if (victim == nullptr && take_pinned) victim = ts.pinned_idle.Front();
    if (victim == nullptr) return false;
    Evict(*victim);
  }
  return true;
}

void SessionStore::Evict(Session& s) {
  KVS_CHECK(!s.busy);
  UnlinkIdle(s);
  if (s.tier == Tier::kDevice) {
    SwapOut(s);
  } else {
    Drop(s);
  }
  LinkIdle(s);
}

void SessionStore::SwapOut(Session& s) {
  const int64_t n = static_cast<int64_t>(s.blocks.size());
  BlockPool& host = *tier(Tier::kHost).pool;
  // A session larger than the whole host tier, or one without KV, goes
  // straight to dropped.
  // An unpinned session never pushes a pinned one out of the host tier; it
  // is dropped itself instead.
  if (n == 0 || n > host.capacity() ||
      !MakeRoom(Tier::kHost, n, /*take_pinned=*/s.pinned)) {
    Drop(s);
    return;
  }
  absl::StatusOr<std::vector<int32_t>> dst =
      host.Allocate(static_cast<int32_t>(n));
  KVS_CHECK(dst.ok()) << dst.status();
  std::vector<BlockCopy> copies(n);
  for (int64_t i = 0; i < n; ++i) copies[i] = {s.blocks[i], (*dst)[i]};
  PlanCopy(CopyBatch::Kind::kSwapOut, Tier::kDevice, Tier::kHost,
           std::move(copies));
  // Released now; the fence keeps the blocks from being written until the
  // copy has read them.
  ReleaseBlocks(Tier::kDevice, s.blocks);
  s.blocks = *std::move(dst);
  s.tier = Tier::kHost;
  ++counters_.evictions[static_cast<int>(Tier::kDevice)]
                       [static_cast<int>(Tier::kHost)];
  counters_.swap_out_blocks += n;
}

void SessionStore::Drop(Session& s) {
  KVS_CHECK(s.tier != Tier::kDropped);
  ReleaseBlocks(s.tier, s.blocks);
  s.blocks.clear();
  // A dropped session's tokens are all its history, without KV.
  s.tokens.insert(s.tokens.end(), s.tail.begin(), s.tail.end());
  s.tail.clear();
  ++counters_.evictions[static_cast<int>(s.tier)]
                       [static_cast<int>(Tier::kDropped)];
  s.tier = Tier::kDropped;
}

bool SessionStore::SwapIn(Session& s, int64_t n, TurnPlan& plan) {
  KVS_CHECK(s.tier == Tier::kHost && s.busy);
  KVS_CHECK(static_cast<int64_t>(s.blocks.size()) == n);
  BlockPool& device = *tier(Tier::kDevice).pool;
  const int32_t bs = options_.block_size;
  // Full blocks that another session holds on the device need no copy. A
  // shared block's references keep it alive while room is made below.
  std::vector<int32_t> table;
  if (options_.share_prefixes) {
    const int64_t full = static_cast<int64_t>(s.tokens.size()) / bs;
    for (int64_t i = 0; i < std::min(n, full); ++i) {
      const int32_t parent = i == 0 ? PrefixIndex::kNoParent : table.back();
      const int32_t b = index_.Find(
          parent, std::span<const int32_t>(s.tokens).subspan(i * bs, bs));
      if (b == PrefixIndex::kNotFound) break;
      device.AddRef(b);
      table.push_back(b);
    }
  }
  const int64_t shared = static_cast<int64_t>(table.size());
  if (!MakeRoom(Tier::kDevice, n - shared)) {
    ReleaseBlocks(Tier::kDevice, table);
    return false;
  }
  absl::StatusOr<std::vector<int32_t>> dst =
      device.Allocate(static_cast<int32_t>(n - shared));
  KVS_CHECK(dst.ok()) << dst.status();
  std::vector<BlockCopy> copies;
  copies.reserve(n - shared);
  for (int64_t i = shared; i < n; ++i) {
    copies.push_back({s.blocks[i], (*dst)[i - shared]});
  }
  table.insert(table.end(), dst->begin(), dst->end());
  if (!copies.empty()) {
    PlanCopy(CopyBatch::Kind::kSwapIn, Tier::kHost, Tier::kDevice,
             std::move(copies));
  }
  ReleaseBlocks(Tier::kHost, s.blocks);
  s.blocks = std::move(table);
  s.tier = Tier::kDevice;
  plan.swapped_in_blocks = static_cast<int32_t>(n - shared);
  counters_.swap_in_blocks += n - shared;
  return true;
}

int32_t SessionStore::AttachShared(Session& s, std::span<const int32_t> prompt,
                                   int32_t limit) {
  const int32_t bs = options_.block_size;
  KVS_CHECK(static_cast<int64_t>(s.tokens.size()) ==
            static_cast<int64_t>(s.blocks.size()) * bs);
  int32_t gained = 0;
  int64_t i = static_cast<int64_t>(s.blocks.size());
  while ((i + 1) * bs <= limit) {
    const int32_t parent = i == 0 ? PrefixIndex::kNoParent : s.blocks[i - 1];
    const int32_t b = index_.Find(parent, prompt.subspan(i * bs, bs));
    if (b == PrefixIndex::kNotFound) break;
    tier(Tier::kDevice).pool->AddRef(b);
    s.blocks.push_back(b);
    gained += bs;
    ++i;
  }
  return gained;
}

void SessionStore::ShareBlock(Session& s, int64_t i) {
  const int32_t bs = options_.block_size;
  const int32_t own = s.blocks[i];
  if (index_.Contains(own)) return;
  const int32_t parent = i == 0 ? PrefixIndex::kNoParent : s.blocks[i - 1];
  const std::span<const int32_t> tokens =
      std::span<const int32_t>(s.tokens).subspan(i * bs, bs);
  const int32_t found = index_.Find(parent, tokens);
  if (found == PrefixIndex::kNotFound) {
    index_.Insert(own, parent, tokens);
    return;
  }
  // Another session computed the same block (bitwise the same KV): hold
  // theirs and free ours.
  tier(Tier::kDevice).pool->AddRef(found);
  s.blocks[i] = found;
  const int32_t freed[] = {own};
  ReleaseBlocks(Tier::kDevice, freed);
}

bool SessionStore::MakeWritable(Session& s, int64_t i) {
  BlockPool& device = *tier(Tier::kDevice).pool;
  const int32_t b = s.blocks[i];
  if (device.ref_count(b) == 1) {
    // Private: its content is about to change, so nobody may share it.
    index_.Erase(b);
    return true;
  }
  if (!MakeRoom(Tier::kDevice, 1)) return false;
  absl::StatusOr<std::vector<int32_t>> dst = device.Allocate(1);
  KVS_CHECK(dst.ok()) << dst.status();
  PlanCopy(CopyBatch::Kind::kCopyOnWrite, Tier::kDevice, Tier::kDevice,
           {BlockCopy{b, (*dst)[0]}});
  const int32_t shared[] = {b};
  ReleaseBlocks(Tier::kDevice, shared);
  s.blocks[i] = (*dst)[0];
  ++counters_.cow_blocks;
  return true;
}

int SessionStore::ExpireIdle() {
  const absl::Time now = clock_.Now();
  int expired = 0;
  for (TierState& t : tiers_) {
    for (IdleList* list : {&t.idle, &t.pinned_idle}) {
      // Walk the whole list: a lower tier's list is in eviction order, not
      // last-used order (the dropped tier takes sessions from the device
      // and from the host), so an expired session may follow a live one.
      for (Session* s = list->Front(); s != nullptr;) {
        Session* next = list->Next(*s);
        if (now - s->last_used > options_.idle_ttl) {
          Destroy(*s);
          ++expired;
        }
        s = next;
      }
    }
  }
  counters_.expired_sessions += expired;
  // Pinned sessions are exempt from the per-tier limits.
  for (Tier t : {Tier::kDevice, Tier::kHost}) {
    const absl::Duration ttl = t == Tier::kDevice ? options_.device_idle_ttl
                                                  : options_.host_idle_ttl;
    IdleList& list = tier(t).idle;
    while (Session* s = list.Front()) {
      if (now - s->last_used <= ttl) break;
      Evict(*s);
    }
  }
  return expired;
}

int SessionStore::EvictAll(Tier from) {
  KVS_CHECK(from != Tier::kDropped);
  int moved = 0;
  TierState& t = tier(from);
  while (Session* s = t.idle.Front() ? t.idle.Front() : t.pinned_idle.Front()) {
    Evict(*s);
    ++moved;
  }
  return moved;
}

}  // namespace kvsession::session_store
