// Sessions and their paged KV blocks. The store maps a session id to the
// token history whose KV is computed and to the block table that holds that
// KV, reuses the longest common token prefix between turns and accounts for
// every block of every tier. It knows token ids, sizes and block ids, never
// model math.
//
// Not thread-safe: one engine thread owns the store (DESIGN.md).
//
// A turn, as the engine drives it:
//   BeginTurn(id, prompt)      -> plan.reused_tokens are cached already
//   Reserve(id, n)             -> block_table(id) covers n positions
//   ... compute KV into the table ...
//   Commit(id, new_tokens)     -> history grows by the computed tokens
//   EndTurn(id)                -> idle again, most recently used
#ifndef KVSESSION_SESSION_STORE_SESSION_STORE_H_
#define KVSESSION_SESSION_STORE_SESSION_STORE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
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

namespace kvsession::session_store {

// Where a session's KV lives. kDropped: only the token history is kept; the
// next turn recomputes it.
enum class Tier : int8_t { kDevice = 0, kHost = 1, kDropped = 2 };
inline constexpr int kNumTiers = 3;
// "device", "host", "dropped" (metric label values).
std::string_view TierName(Tier tier);

struct TurnPlan {
  int32_t reused_tokens = 0;  // leading prompt tokens whose KV is cached
  int32_t prompt_tokens = 0;
  // Tier the reused KV came from; kDropped when nothing was reused.
  Tier reused_from = Tier::kDropped;

  int32_t prefill_tokens() const { return prompt_tokens - reused_tokens; }
};

struct SessionInfo {
  std::string id;
  int32_t num_tokens = 0;
  int32_t num_blocks = 0;
  Tier tier = Tier::kDevice;
  bool busy = false;
  absl::Time created;
  absl::Time last_used;
  int64_t turns = 0;
  int64_t prompt_tokens = 0;  // summed over turns
  int64_t reused_tokens = 0;  // summed over turns
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

struct StoreStats {
  int32_t sessions = 0;
  int32_t busy_sessions = 0;  // running a generation (always device tier)
  std::array<TierStats, kNumTiers> tiers{};

  // Cumulative since start.
  int64_t turns = 0;
  int64_t prompt_tokens = 0;
  std::array<int64_t, kNumTiers> reused_tokens{};  // by the tier reused from
  int64_t expired_sessions = 0;
  int64_t deleted_sessions = 0;

  const TierStats& tier(Tier t) const { return tiers[static_cast<int>(t)]; }
};

class SessionStore {
 public:
  struct Options {
    int32_t block_size = 16;  // tokens per block
    int32_t num_device_blocks = 0;
    int32_t max_sessions = 10000;
    // A session idle for longer may be removed by ExpireIdle().
    absl::Duration idle_ttl = absl::Hours(1);
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

  // Starts a turn: marks the session busy, keeps the longest common prefix
  // of its history and `prompt` (at most prompt.size() - 1 tokens, so that
  // the model computes at least the last prompt token and yields logits),
  // and releases blocks past that prefix. A block partly inside the prefix
  // stays with the session; its stale tail is overwritten by the prefill.
  // The cut stands even if the turn later fails: the session keeps the
  // common prefix, which is still valid KV. Errors leave the store
  // unchanged:
  //   INVALID_ARGUMENT   empty id or empty prompt
  //   ABORTED            the session is running another request
  //   NOT_FOUND          no such session and !create_if_missing
  //   RESOURCE_EXHAUSTED max_sessions open even after expiring idle ones
  absl::StatusOr<TurnPlan> BeginTurn(std::string_view id,
                                     std::span<const int32_t> prompt,
                                     bool create_if_missing);

  // Grows the busy session's block table to cover `total_tokens` positions;
  // never shrinks it. RESOURCE_EXHAUSTED, with nothing allocated, when the
  // tier lacks free blocks. FAILED_PRECONDITION outside a turn.
  absl::Status Reserve(std::string_view id, int32_t total_tokens);

  // Appends tokens whose KV is now computed. FAILED_PRECONDITION, with
  // nothing appended, outside a turn or past the reserved positions.
  absl::Status Commit(std::string_view id, std::span<const int32_t> tokens);

  // Ends the turn (succeeded or not): releases reserved blocks the history
  // does not reach, clears busy and makes the session most recently used.
  // The session must be busy.
  void EndTurn(std::string_view id);

  // Removes a session and frees its blocks at once. FAILED_PRECONDITION
  // while a request runs on it (cancel that first: freeing blocks under a
  // running generation would corrupt it); NOT_FOUND if missing.
  absl::Status Delete(std::string_view id);

  // Removes idle sessions unused for longer than idle_ttl (busy ones never)
  // and returns how many. A session past its TTL lives until this runs.
  int ExpireIdle();

  absl::StatusOr<SessionInfo> GetInfo(std::string_view id) const;
  // Sessions in ascending id order. page_token is empty or a previous
  // page's next_page_token; paging stays consistent while sessions come and
  // go (each page starts after the last id of the previous one).
  // INVALID_ARGUMENT on page_size outside [1, 1000] or a malformed token.
  absl::StatusOr<SessionPage> List(int32_t page_size,
                                   std::string_view page_token) const;

  // For the engine during a turn. The session must exist; references stay
  // valid until the next mutating call.
  const std::vector<int32_t>& tokens(std::string_view id) const;
  // Block ids (in the session's tier) of positions [i*block_size, ...).
  const std::vector<int32_t>& block_table(std::string_view id) const;
  bool Contains(std::string_view id) const;

  StoreStats Stats() const;

  // Block accounting in every tier: pool invariants; each block's reference
  // count equals the number of session tables holding it; no table holds a
  // block of another tier; every table covers its history (exactly, for idle
  // sessions); the LRU list of each tier holds exactly that tier's idle
  // sessions, so busy sessions are never eviction candidates.
  absl::Status CheckInvariants() const;

 private:
  friend class SessionStorePeer;  // tests corrupt state to prove the checks

  struct Session {
    std::string id;
    std::vector<int32_t> tokens;  // KV computed for these, in order
    std::vector<int32_t> blocks;  // ids in tiers_[tier].pool
    Tier tier = Tier::kDevice;
    bool busy = false;
    absl::Time created;
    absl::Time last_used;
    LruNode<Session> lru;  // linked in tiers_[tier].idle while not busy
    int64_t turns = 0;
    int64_t prompt_tokens = 0;
    int64_t reused_tokens = 0;
  };
  using IdleList = LruList<Session, &Session::lru>;

  // Everything kept per tier, so that adding swap and eviction touches one
  // place. kDropped has no pool.
  struct TierState {
    std::unique_ptr<BlockPool> pool;
    IdleList idle;  // idle sessions of this tier, least recently used first
  };

  SessionStore(const Options& options, const Clock* clock);

  Session* Find(std::string_view id);
  const Session* Find(std::string_view id) const;
  absl::StatusOr<Session*> FindBusy(std::string_view id, std::string_view op);
  TierState& tier(Tier t) { return tiers_[static_cast<int>(t)]; }
  const TierState& tier(Tier t) const { return tiers_[static_cast<int>(t)]; }
  int64_t BlocksFor(int64_t num_tokens) const;
  // Releases the session's blocks past the first `keep`.
  void ShrinkTable(Session& s, int64_t keep);
  void Destroy(Session& s);
  SessionInfo Info(const Session& s) const;
  absl::Status CheckSession(
      const Session& s,
      std::array<std::vector<int32_t>, kNumTiers>& refs) const;

  Options options_;
  const Clock& clock_;
  std::map<std::string, Session, std::less<>> sessions_;
  std::array<TierState, kNumTiers> tiers_;
  int32_t busy_sessions_ = 0;
  StoreStats counters_;  // only the cumulative fields are kept here
};

}  // namespace kvsession::session_store

#endif  // KVSESSION_SESSION_STORE_SESSION_STORE_H_
