// Sessions and their paged KV blocks in two memory tiers. The store maps a
// session id to the token history whose KV is computed and to the block
// table that holds that KV, reuses the longest common token prefix between
// turns, shares full blocks of equal prefixes between sessions, and keeps
// device memory within its capacity by moving idle sessions down the tiers:
// device -> host (swap out) -> dropped (history only; the next turn
// recomputes). It knows token ids, sizes and block ids, never model math,
// and never touches KV bytes: it plans block copies (CopyBatch) that the
// engine carries out, in ticket order, on a copy worker.
//
// Not thread-safe: one engine thread owns the store (DESIGN.md).
//
// A turn, as the engine drives it:
//   BeginTurn(id, prompt)      -> plan.reused_tokens are cached (or being
//                                 swapped in: wait for plan.ready_ticket)
//   Reserve(id, n)             -> block_table(id) covers n positions; wait
//                                 for the returned ticket before computing
//   ... compute KV into the table ...
//   Commit(id, new_tokens)     -> the turn's KV grows by the computed tokens
//   EndTurn(id, history)       -> the turn is kept: the session's history
//                                 becomes `history`; idle, most recently used
//   AbortTurn(id)              -> or the turn is undone: history, transcript,
//                                 pin and counters as before BeginTurn (a
//                                 session the turn created is removed)
//   TakeCopies()               -> after any of these: copies to run
//
// A session's history is its token sequence; the KV of a leading part of it
// is held in blocks (all of it, usually). The rest, the tail, has no KV: the
// next turn computes it (a dropped session is all tail).
#ifndef KVSESSION_SESSION_STORE_SESSION_STORE_H_
#define KVSESSION_SESSION_STORE_SESSION_STORE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "session_store/block_pool.h"
#include "session_store/clock.h"
#include "session_store/lru_list.h"
#include "session_store/prefix_index.h"

namespace kvsession::session_store {

// Where a session's KV lives. kDropped: only the token history is kept; the
// next turn recomputes it.
enum class Tier : int8_t { kDevice = 0, kHost = 1, kDropped = 2 };
inline constexpr int kNumTiers = 3;
// "device", "host", "dropped" (metric label values).
std::string_view TierName(Tier tier);

// One block copy; the tiers are those of the batch.
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
};

// Copies planned together. Tickets count up from 1 without gaps; the
// engine runs batches in ticket order, so "ticket t has landed" means every
// batch up to t has.
struct CopyBatch {
  enum class Kind : int8_t { kSwapOut, kSwapIn, kCopyOnWrite };
  uint64_t ticket = 0;
  Kind kind = Kind::kSwapOut;
  Tier from = Tier::kDevice;
  Tier to = Tier::kHost;
  std::vector<BlockCopy> copies;
};

struct TurnPlan {
  int32_t reused_tokens = 0;  // leading prompt tokens whose KV is cached
  int32_t prompt_tokens = 0;
  // Tier the session's reused KV came from (kHost: swapped in for this
  // turn); kDropped when nothing was reused.
  Tier reused_from = Tier::kDropped;
  // The session's KV had been dropped: its history is recomputed (the part
  // not found among other sessions' shared blocks).
  bool recomputed = false;
  // Of reused_tokens, those found in blocks shared by other sessions.
  int32_t shared_tokens = 0;
  int32_t swapped_in_blocks = 0;
  // Copies to wait for before the session's blocks may be computed into or
  // read (0: none).
  uint64_t ready_ticket = 0;

  int32_t prefill_tokens() const { return prompt_tokens - reused_tokens; }
};

// One message of a session's transcript (the chat the history renders).
struct TranscriptMessage {
  std::string role;
  std::string content;
  bool operator==(const TranscriptMessage&) const = default;
};

struct SessionInfo {
  std::string id;
  // History tokens (with or without KV), and turns: while a turn runs,
  // those before it.
  int32_t num_tokens = 0;
  int32_t num_blocks = 0;
  Tier tier = Tier::kDevice;
  bool busy = false;
  bool pinned = false;
  int32_t shared_blocks = 0;  // blocks also held by other sessions
  absl::Time created;
  absl::Time last_used;
  int64_t turns = 0;
  int64_t prompt_tokens = 0;  // summed over turns
  int64_t reused_tokens = 0;  // summed over turns
  std::vector<TranscriptMessage> transcript;
};

struct SessionPage {
  std::vector<SessionInfo> sessions;  // ascending id
  std::string next_page_token;        // empty on the last page
};

struct TierStats {
  int32_t sessions = 0;  // sessions whose KV is in this tier, busy included
  int32_t capacity_blocks = 0;
  int32_t used_blocks = 0;
  int32_t free_blocks = 0;
  int64_t capacity_bytes = 0;  // 0 unless Options::block_bytes is set
  int64_t used_bytes = 0;
};

// Sessions, busy sessions and tier counts leave out one-off turns (ephemeral
// sessions: BeginTurn's `ephemeral`); their blocks are counted.
struct StoreStats {
  int32_t sessions = 0;
  int32_t busy_sessions = 0;  // running a generation (always device tier)
  int32_t pinned_sessions = 0;
  int64_t pinned_tokens = 0;
  // Device blocks held by more than one session, and the blocks that sharing
  // saves (sum over blocks of holders - 1).
  int32_t shared_blocks = 0;
  int32_t saved_blocks = 0;
  std::array<TierStats, kNumTiers> tiers{};

  // Cumulative since start.
  int64_t turns = 0;
  int64_t prompt_tokens = 0;
  std::array<int64_t, kNumTiers> reused_tokens{};  // by the tier reused from
  int64_t shared_tokens = 0;  // reused from other sessions' blocks
  int64_t expired_sessions = 0;
  int64_t deleted_sessions = 0;
  // Sessions moved down a tier: [from][to] (device->host, device->dropped
  // when the host tier cannot take them, host->dropped).
  std::array<std::array<int64_t, kNumTiers>, kNumTiers> evictions{};
  int64_t swap_out_blocks = 0;
  int64_t swap_in_blocks = 0;
  int64_t cow_blocks = 0;  // shared blocks copied before a write
  int64_t unpinned_over_cap = 0;

  const TierStats& tier(Tier t) const { return tiers[static_cast<int>(t)]; }
  int64_t evicted(Tier from, Tier to) const {
    return evictions[static_cast<int>(from)][static_cast<int>(to)];
  }
};

class SessionStore {
 public:
  struct Options {
    int32_t block_size = 16;  // tokens per block
    int32_t num_device_blocks = 0;
    // 0: no host tier; evicted sessions are dropped at once.
    int32_t num_host_blocks = 0;
    int32_t max_sessions = 10000;
    // A session idle for longer may be removed by ExpireIdle().
    absl::Duration idle_ttl = absl::Hours(1);
    // Per-tier idle limits for ExpireIdle(): a device session idle for
    // longer is swapped out, a host session dropped. Pinned sessions are
    // exempt (not from idle_ttl).
    absl::Duration device_idle_ttl = absl::InfiniteDuration();
    absl::Duration host_idle_ttl = absl::InfiniteDuration();
    // Pinned sessions are evicted only when no unpinned session can be;
    // together their histories may hold at most this many tokens (a
    // session that grows past the cap is unpinned at the end of its turn).
    int64_t max_pinned_tokens = 0;
    // Share full blocks of equal prefixes between sessions.
    bool share_prefixes = true;
    // Bytes of one block (all layers, K and V); only used for Stats().
    int64_t block_bytes = 0;
    const Clock* clock = nullptr;  // not owned; null: the system clock
  };

  // INVALID_ARGUMENT on non-positive sizes, limits or TTL.
  static absl::StatusOr<std::unique_ptr<SessionStore>> Create(
      const Options& options);
  ~SessionStore();
  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  const Options& options() const { return options_; }

  // Starts a turn: marks the session busy, keeps the KV of the longest
  // common prefix of its history and `prompt` (at most prompt.size() - 1
  // tokens, so that the model computes at least the last prompt token and
  // yields logits), and releases blocks past that prefix. A block partly
  // inside the prefix stays with the session; its stale tail is overwritten
  // by the prefill. The history before the turn is kept for AbortTurn.
  // Errors leave the store unchanged:
  //   INVALID_ARGUMENT   empty id or empty prompt
  //   ABORTED            the session is running another request
  //   NOT_FOUND          no such session and !create_if_missing
  //   RESOURCE_EXHAUSTED max_sessions open even after expiring idle ones
  //
  // A session in the host tier is swapped in (the blocks of the reused
  // prefix only); a dropped one reuses nothing of its own. Blocks of the
  // prompt that other sessions hold are shared. Device room is made by
  // evicting idle sessions; if there is still none for a swap-in, the
  // session's KV is dropped (the turn recomputes it). `pin` set: pins or
  // unpins the session. `share` false: this turn neither takes nor offers
  // shared blocks (a no-cache baseline must compute everything).
  // `ephemeral`: a one-off turn's session (new only), which is no session
  // to the API: not listed, not counted in Stats().sessions nor against
  // max_sessions, never named in messages; end it with AbortTurn.
  absl::StatusOr<TurnPlan> BeginTurn(std::string_view id,
                                     std::span<const int32_t> prompt,
                                     bool create_if_missing,
                                     std::optional<bool> pin = std::nullopt,
                                     bool share = true, bool ephemeral = false);

  // Grows the busy session's block table to cover `total_tokens` positions;
  // never shrinks it. Evicts idle sessions (least recently used, unpinned
  // first) when the device tier is short. Returns the ticket of copies to
  // wait for before computing into the new blocks (0: none).
  // RESOURCE_EXHAUSTED, with nothing allocated, when even that leaves too
  // few free blocks. FAILED_PRECONDITION outside a turn.
  absl::StatusOr<uint64_t> Reserve(std::string_view id, int32_t total_tokens);

  // Appends tokens whose KV is now computed. Blocks this fills are offered
  // for sharing; a block equal to one already shared is replaced by it.
  // FAILED_PRECONDITION, with nothing appended, outside a turn or past the
  // reserved positions.
  absl::Status Commit(std::string_view id, std::span<const int32_t> tokens);

  // Ends the turn and keeps it: the history becomes `history` (the turn's
  // prompt and the generated tokens it keeps), of which the computed KV
  // covers the common prefix with the committed tokens (the rest is tail);
  // `transcript`, if set, replaces the transcript. Releases blocks past the
  // kept KV, clears busy and makes the session most recently used. The
  // session must be busy.
  void EndTurn(std::string_view id, std::span<const int32_t> history,
               std::optional<std::vector<TranscriptMessage>> transcript =
                   std::nullopt);
  // EndTurn with the committed tokens as the history.
  void EndTurn(std::string_view id);
  // Ends the turn and undoes it: history, transcript, pin and per-session
  // counters are as before BeginTurn; of the KV computed, what matches the
  // old history stays. A session the turn created is removed. The session
  // must be busy.
  void AbortTurn(std::string_view id);

  // Removes a session and frees its blocks at once. FAILED_PRECONDITION
  // while a request runs on it (cancel that first: freeing blocks under a
  // running generation would corrupt it); NOT_FOUND if missing.
  absl::Status Delete(std::string_view id);

  // Applies the idle limits (busy sessions never): removes sessions unused
  // for longer than idle_ttl and returns how many; swaps out and drops
  // per device_idle_ttl and host_idle_ttl. A session past a limit stays
  // until this runs.
  int ExpireIdle();

  // Moves every idle session of `from` one tier down (tests, benchmarks,
  // and an operator's "free the device" action). Returns how many moved.
  int EvictAll(Tier from);

  // The copies planned since the last call, in ticket order.
  std::vector<CopyBatch> TakeCopies();
  // Ticket of the last planned copy (0 before the first).
  uint64_t last_ticket() const { return next_ticket_ - 1; }

  absl::StatusOr<SessionInfo> GetInfo(std::string_view id) const;
  // Sessions in ascending id order. page_token is empty or a previous
  // page's next_page_token; paging stays consistent while sessions come and
  // go (each page starts after the last id of the previous one).
  // INVALID_ARGUMENT on page_size outside [1, 1000] or a malformed token.
  absl::StatusOr<SessionPage> List(int32_t page_size,
                                   std::string_view page_token) const;

  // For the engine during a turn. The session must exist; references stay
  // valid until the next mutating call. tokens(): those whose KV is held
  // (during a turn: computed so far); History(): the whole history.
  const std::vector<int32_t>& tokens(std::string_view id) const;
  std::vector<int32_t> History(std::string_view id) const;
  // Block ids (in the session's tier) of positions [i*block_size, ...).
  const std::vector<int32_t>& block_table(std::string_view id) const;
  bool Contains(std::string_view id) const;

  StoreStats Stats() const;

  // Block accounting in every tier: pool invariants; each block's reference
  // count equals the number of session tables holding it; no table holds a
  // block of another tier; every table covers its history (exactly, for idle
  // sessions); the LRU list of each tier holds exactly that tier's idle
  // sessions, so busy sessions are never eviction candidates; every shared
  // block sits behind its index parent; pinned accounting adds up.
  absl::Status CheckInvariants() const;

 private:
  friend class SessionStorePeer;  // tests corrupt state to prove the checks

  // What AbortTurn restores.
  struct Undo {
    std::vector<int32_t> history;
    bool created = false;
    bool pinned = false;
    // Device blocks of the old KV past the turn's common prefix, from table
    // index first_block on, holding history[0, kv_tokens) with the rest.
    std::vector<int32_t> blocks;
    int64_t first_block = 0;
    int64_t kv_tokens = 0;
  };

  struct Session {
    std::string id;
    std::vector<int32_t> tokens;  // KV computed for these, in order
    std::vector<int32_t> tail;    // the history past `tokens`: no KV
    std::vector<int32_t> blocks;  // ids in tiers_[tier].pool
    std::vector<TranscriptMessage> transcript;
    Undo undo;  // during a turn
    bool ephemeral = false;
    Tier tier = Tier::kDevice;
    bool busy = false;
    bool pinned = false;
    bool share = true;  // this turn takes and offers shared blocks
    absl::Time created;
    absl::Time last_used;
    // Linked in tiers_[tier].idle (or .pinned_idle) while not busy.
    LruNode<Session> lru;
    int64_t turns = 0;
    int64_t prompt_tokens = 0;
    int64_t reused_tokens = 0;
    // This turn's share of the two above (AbortTurn takes it back).
    int64_t turn_prompt_tokens = 0;
    int64_t turn_reused_tokens = 0;
  };
  using IdleList = LruList<Session, &Session::lru>;

  // Everything kept per tier, so that adding swap and eviction touches one
  // place. kDropped has no pool.
  struct TierState {
    std::unique_ptr<BlockPool> pool;
    // Idle sessions of this tier, least recently used first; pinned ones
    // apart so that eviction takes them last.
    IdleList idle;
    IdleList pinned_idle;
    IdleList& list(bool pinned) { return pinned ? pinned_idle : idle; }
    const IdleList& list(bool pinned) const {
      return pinned ? pinned_idle : idle;
    }
  };

  SessionStore(const Options& options, const Clock* clock);

  Session* Find(std::string_view id);
  const Session* Find(std::string_view id) const;
  absl::StatusOr<Session*> FindBusy(std::string_view id, std::string_view op);
  TierState& tier(Tier t) { return tiers_[static_cast<int>(t)]; }
  const TierState& tier(Tier t) const { return tiers_[static_cast<int>(t)]; }
  int64_t BlocksFor(int64_t num_tokens) const;
  static int64_t HistorySize(const Session& s) {
    return static_cast<int64_t>(s.tokens.size() + s.tail.size());
  }
  // "session ID", or a neutral name for an ephemeral session (messages).
  static std::string Name(const Session& s);
  // Makes `history` the busy session's history (EndTurn, AbortTurn).
  void SetHistory(Session& s, std::span<const int32_t> history);
  // At BeginTurn on the device: keeps the KV past the reused prefix for
  // AbortTurn (a private copy of the block the prefix ends in is the
  // turn's). ReleaseUndo gives those blocks back.
  void KeepForUndo(Session& s, int32_t reuse);
  void ReleaseUndo(Session& s);
  // Clears busy, links the session idle, most recently used.
  void Release(Session& s);
  // Releases the session's blocks past the first `keep`.
  void ShrinkTable(Session& s, int64_t keep);
  // Drops one reference of each block of tier t; a device block that
  // becomes free leaves the prefix index.
  void ReleaseBlocks(Tier t, std::span<const int32_t> blocks);
  void Destroy(Session& s);
  void LinkIdle(Session& s);
  void UnlinkIdle(Session& s);
  uint64_t PlanCopy(CopyBatch::Kind kind, Tier from, Tier to,
                    std::vector<BlockCopy> copies);

  // Eviction (session_store_tiers.cc).
  // Frees blocks of tier t by evicting its idle sessions until `n` are
  // free; returns whether they are. Pinned sessions are taken only after
  // all unpinned ones, and only if `take_pinned`.
  bool MakeRoom(Tier t, int64_t n, bool take_pinned = true);
  // Moves an idle session one tier down: device -> host (or dropped when
  // the host tier cannot hold it), host -> dropped.
  void Evict(Session& s);
  void SwapOut(Session& s);
  void Drop(Session& s);
  // Swaps in the first `blocks` blocks of a host session that starts a
  // turn; false (nothing changed) when the device tier has no room.
  bool SwapIn(Session& s, int64_t blocks, TurnPlan& plan);
  // Extends the table of a device session (at a block boundary) with
  // blocks of other sessions that hold the next tokens of `prompt`, up to
  // `limit` tokens; returns the tokens gained.
  int32_t AttachShared(Session& s, std::span<const int32_t> prompt,
                       int32_t limit);
  // Registers (or swaps for an equal shared one) full block i of s.
  void ShareBlock(Session& s, int64_t i);
  // Makes block `i` of s private before the turn writes into it (a copy
  // of a shared block); false when there is no room for the copy.
  bool MakeWritable(Session& s, int64_t i);
  void SetPinned(Session& s, bool pinned);

  SessionInfo Info(const Session& s) const;
  absl::Status CheckSession(
      const Session& s,
      std::array<std::vector<int32_t>, kNumTiers>& refs) const;

  Options options_;
  const Clock& clock_;
  std::map<std::string, Session, std::less<>> sessions_;
  std::array<TierState, kNumTiers> tiers_;
  PrefixIndex index_;  // device blocks
  int32_t busy_sessions_ = 0;
  int32_t ephemeral_sessions_ = 0;  // always busy
  int32_t pinned_sessions_ = 0;
  int64_t pinned_tokens_ = 0;  // history tokens of pinned sessions
  uint64_t next_ticket_ = 1;
  std::vector<CopyBatch> copies_;  // planned, not yet taken
  StoreStats counters_;  // only the cumulative fields are kept here
};

}  // namespace kvsession::session_store

#endif  // KVSESSION_SESSION_STORE_SESSION_STORE_H_
