// The engine's per-turn state, shared by engine.cc (admission, queries,
// commit) and engine_step.cc (the step). Not part of the runtime's API.
#ifndef KVSESSION_RUNTIME_ENGINE_INTERNAL_H_
#define KVSESSION_RUNTIME_ENGINE_INTERNAL_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace kvsession::runtime {

struct Engine::Sequence {
  enum class Phase { kPrefill, kDecode, kFlush };

  TurnRequest req;
  std::shared_ptr<TurnObserver> observer;
  std::shared_ptr<TurnHandle> handle;
  std::string store_id;
  // A one-off or no-cache turn: an ephemeral store session, always undone.
  bool anonymous = false;
  bool opened = false;  // BeginTurn succeeded: Finish must end the turn
  absl::Time arrival;
  std::chrono::steady_clock::time_point start;

  // Prompt, then generated tokens. tokens[0, computed) have KV in the store;
  // at most the last sampled token is still without.
  std::vector<int32_t> tokens;
  int32_t computed = 0;
  int32_t prompt_len = 0;
  int32_t max_tokens = 0;  // resolved at admission
  // Copies to land before the sequence may run (swap-in, copy on write,
  // blocks still being swapped out of); 0 once they have.
  uint64_t ready_ticket = 0;
  uint64_t swap_in_ticket = 0;  // timed for the summary
  std::chrono::steady_clock::time_point admitted;  // swap-in planned
  Phase phase = Phase::kPrefill;
  std::optional<Sampler> sampler;
  std::optional<StreamingDetokenizer> detok;
  std::optional<StopMatcher> stop;

  // Streaming. Generated tokens are handed to the observer (delivered)
  // once all their text has been: text held back for a UTF-8 character or
  // a possible stop string holds its tokens back too.
  int32_t delivered = 0;
  // Of each sampled, undelivered token: reply bytes through its text.
  std::vector<int64_t> pending_ends;
  std::string reply;  // the text handed out
  // reply.size() when the i-th delivered token was handed out.
  std::vector<size_t> reply_at;
  // Generated tokens the turn keeps (set when generation ends; until then
  // all that are delivered).
  std::optional<int32_t> keep;

  absl::Status final_status;
  TurnResult result;
  bool first_token = true;
  bool done = false;  // finish at the end of this step

  bool Interrupted(absl::Time now) const {
    return handle->cancelled() || now > req.deadline;
  }
};

struct Engine::Part {
  Sequence* seq;
  int32_t n;
  LogitsMode logits;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_ENGINE_INTERNAL_H_
