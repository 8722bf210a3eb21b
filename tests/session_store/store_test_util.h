// Helpers shared by the session store tests.
#ifndef KVSESSION_TESTS_SESSION_STORE_STORE_TEST_UTIL_H_
#define KVSESSION_TESTS_SESSION_STORE_STORE_TEST_UTIL_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "session_store/session_store.h"

namespace kvsession::session_store {

// Reaches into the store so tests can corrupt it on purpose.
class SessionStorePeer {
 public:
  static BlockPool& pool(SessionStore& store, Tier t) {
    return *store.tier(t).pool;
  }
  static void UnlinkIdle(SessionStore& store, std::string_view id) {
    SessionStore::Session* s = store.Find(id);
    store.tier(s->tier).idle.Remove(s);
  }
  // Moves an idle session into the other LRU list of its tier (pinned or
  // not) without changing its pin.
  static void SwapIdleList(SessionStore& store, std::string_view id) {
    SessionStore::Session* s = store.Find(id);
    SessionStore::TierState& t = store.tier(s->tier);
    const bool in_pinned = t.pinned_idle.Contains(*s);
    t.list(in_pinned).Remove(s);
    t.list(!in_pinned).PushBack(s);
  }
  static PrefixIndex& index(SessionStore& store) { return store.index_; }
  static int64_t& pinned_tokens(SessionStore& store) {
    return store.pinned_tokens_;
  }
};

// One whole turn as the engine runs it: prefill the prompt past the reused
// prefix, then decode `generated`. The last generated token is sampled but
// never fed back, so its KV is not computed and it stays out of the history.
absl::StatusOr<TurnPlan> RunTurn(SessionStore& store, std::string_view id,
                                 std::span<const int32_t> prompt,
                                 std::span<const int32_t> generated,
                                 bool create_if_missing = true,
                                 std::optional<bool> pin = std::nullopt);

// Concatenation of token lists.
std::vector<int32_t> Concat(std::span<const int32_t> a,
                            std::span<const int32_t> b);
// n tokens start, start + 1, ...
std::vector<int32_t> Iota(int32_t n, int32_t start);

}  // namespace kvsession::session_store

#endif  // KVSESSION_TESTS_SESSION_STORE_STORE_TEST_UTIL_H_
