#include "tests/session_store/store_test_util.h"

#include <numeric>

namespace kvsession::session_store {

absl::StatusOr<TurnPlan> RunTurn(SessionStore& store, std::string_view id,
                                 std::span<const int32_t> prompt,
                                 std::span<const int32_t> generated,
                                 bool create_if_missing,
                                 std::optional<bool> pin) {
  absl::StatusOr<TurnPlan> plan =
      store.BeginTurn(id, prompt, create_if_missing, pin);
  if (!plan.ok()) return plan;
  const int32_t total = static_cast<int32_t>(prompt.size() + generated.size());
  if (absl::Status st = store.Reserve(id, total).status(); !st.ok()) {
    store.EndTurn(id);
    return st;
  }
  absl::Status st = store.Commit(id, prompt.subspan(plan->reused_tokens));
  if (st.ok() && !generated.empty()) {
    st = store.Commit(id, generated.first(generated.size() - 1));
  }
  store.EndTurn(id);
  if (!st.ok()) return st;
  return plan;
}

std::vector<int32_t> Concat(std::span<const int32_t> a,
                            std::span<const int32_t> b) {
  std::vector<int32_t> out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

std::vector<int32_t> Iota(int32_t n, int32_t start) {
  std::vector<int32_t> out(n);
  std::iota(out.begin(), out.end(), start);
  return out;
}

}  // namespace kvsession::session_store
