// The engine: one thread owns the model and the session store and runs the
// step loop (continuous batching with chunked prefill). Request handlers
// only Submit() turns and receive events through a TurnObserver, which the
// engine thread calls.
#ifndef KVSESSION_RUNTIME_ENGINE_H_
#define KVSESSION_RUNTIME_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/copy_worker.h"
#include "runtime/generate.h"
#include "runtime/model_bundle.h"
#include "runtime/sampler.h"
#include "runtime/stop_matcher.h"
#include "session_store/clock.h"
#include "session_store/session_store.h"

namespace kvsession::runtime {

enum class CacheTier { kNone, kDevice, kHost, kRecomputed };

// What a turn does to its session, decided when it ends (one place: the
// engine's Finish):
//   - it succeeds: the history becomes the prompt and the generated tokens
//     that were streamed (tokens of a stop string are not streamed, nor
//     kept); the transcript gets the messages and the reply;
//   - it is cancelled or its deadline passes after tokens were streamed:
//     the same, with exactly the tokens the client was sent
//     (TurnObserver::Seal);
//   - anything else (an error, or a cancel or deadline before anything was
//     streamed): the session is as before the turn, and a session the turn
//     created does not exist. KV computed for it may stay only where it
//     matches the old history.
struct TurnRequest {
  // Empty: a one-off turn whose KV is discarded at the end.
  std::string session_id;
  // Append mode: `tokens` are only the new turn's tokens and follow the
  // session's history (after `close_turn` if the history ends inside an
  // assistant turn, else after `turn_separator`). Full mode: `tokens` are
  // the whole conversation and the longest common prefix is reused.
  bool append = false;
  std::vector<int32_t> tokens;
  // Append mode on a session without history: the first turn's rendering
  // (it may differ, e.g. by the template's default system prompt).
  std::vector<int32_t> first_turn_tokens;
  std::vector<int32_t> close_turn;      // e.g. "<|im_end|>\n"
  std::vector<int32_t> turn_separator;  // e.g. "\n" after "<|im_end|>"
  bool create_session = true;
  // The request's messages, for the session's transcript: appended to it
  // (append mode) or replacing it (full mode). Unset: a raw completion,
  // whose history no transcript describes (the transcript is cleared).
  std::optional<std::vector<session_store::TranscriptMessage>> messages;
  // Set: pin (true) or unpin (false) the session from this turn on.
  std::optional<bool> pin;
  SamplingParams sampling;
  // 0: Engine::Options::default_max_tokens, or what the context window has
  // room for if that is less. Set: prompt + max_tokens must fit the window
  // (OUT_OF_RANGE otherwise).
  int32_t max_tokens = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // false: nothing reused, every step recomputes the whole sequence, the
  // session is not touched (the no-cache baseline).
  bool use_cache = true;
  absl::Time deadline = absl::InfiniteFuture();
};

struct TurnResult {
  std::string session_id;
  FinishReason finish = FinishReason::kLength;
  bool cancelled = false;
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;
  CacheTier cached_tier = CacheTier::kNone;
  int32_t prefilled_tokens = 0;
  int32_t generated_tokens = 0;
  double ttft_seconds = 0;
  double total_seconds = 0;
  double swap_in_seconds = 0;
  // History tokens of the session after the turn (as before it, when the
  // turn was undone).
  int32_t session_tokens = 0;
};

// Called on the engine thread; implementations must not block.
class TurnObserver {
 public:
  virtual ~TurnObserver() = default;
  // Newly decoded text (never a partial UTF-8 character) and its tokens.
  virtual void OnDelta(std::string_view text,
                       std::span<const int32_t> tokens) = 0;
  // Exactly once, last. A non-OK status means the turn failed (or was
  // cancelled: CANCELLED / DEADLINE_EXCEEDED, with `result` describing what
  // was streamed before).
  virtual void OnDone(const absl::Status& status, const TurnResult& result) = 0;
  // Called once when the turn ends early (cancel, deadline), before OnDone:
  // stop sending deltas and return how many tokens of them the client was
  // sent; the session keeps those. An observer that delivers every delta
  // as it comes keeps the default.
  virtual int32_t Seal() { return std::numeric_limits<int32_t>::max(); }
};

// Lets a handler cancel its turn from any thread.
class TurnHandle {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct EngineStats {
  // Counters since start, in tokens.
  int64_t prompt_tokens = 0;
  int64_t cached_tokens_device = 0;
  int64_t cached_tokens_host = 0;
  int64_t swap_in_turns = 0;
  int64_t recomputed_turns = 0;
  int64_t prefilled_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t turns = 0;
  // Gauges.
  int32_t running_sequences = 0;
  int32_t queue_depth = 0;
  session_store::StoreStats store;
  int64_t kv_block_bytes = 0;
  CopyWorker::Stats copies;
};

class Engine {
 public:
  struct Options {
    int32_t block_size = 16;
    int64_t kv_device_bytes = 256ll << 20;
    // Host tier for swapped-out sessions; 0: evicted sessions are dropped
    // and recomputed on their next turn.
    int64_t kv_host_bytes = 0;
    // Pinned sessions may hold at most this fraction of the device tier.
    double max_pinned_fraction = 0.5;
    // Idle limits per tier (see SessionStore::Options).
    absl::Duration device_idle_ttl = absl::InfiniteDuration();
    absl::Duration host_idle_ttl = absl::InfiniteDuration();
    bool share_prefixes = true;
    int32_t max_batch_tokens = 512;
    int32_t max_running = 64;
    // max_tokens of turns that leave it 0.
    int32_t default_max_tokens = 256;
    // A turn (or delete) for a session whose running turn was cancelled
    // waits for it to unwind (a step or two). One for a session with a
    // live turn waits this long for it to end or be cancelled (a client's
    // cancel may reach us just after its next request) before ABORTED.
    absl::Duration busy_grace = absl::Milliseconds(200);
    int32_t max_sessions = 10000;
    absl::Duration idle_ttl = absl::Hours(1);
    const session_store::Clock* clock = nullptr;  // null: system clock
    // Run CheckInvariants() on the store after every step (tests; on by
    // default in debug builds).
#ifdef NDEBUG
    bool check_invariants = false;
#else
    bool check_invariants = true;
#endif
  };

  static absl::StatusOr<std::unique_ptr<Engine>> Create(ModelBundle* bundle,
                                                        const Options& options);
  ~Engine();

  // Queues a turn. The observer gets OnDone exactly once (also when the
  // engine stops first).
  std::shared_ptr<TurnHandle> Submit(TurnRequest request,
                                     std::shared_ptr<TurnObserver> observer);

  // Queries run on the engine thread between steps. The *Async forms call
  // `done` there (it must not block) and never block the caller, so gRPC
  // handlers only enqueue; the plain forms wait (tests, tools). After Stop()
  // they answer UNAVAILABLE without touching the store.
  using SessionInfoOr = absl::StatusOr<session_store::SessionInfo>;
  using SessionPageOr = absl::StatusOr<session_store::SessionPage>;
  using BlocksOr = absl::StatusOr<int32_t>;  // blocks freed by a delete
  void GetSessionAsync(std::string id, std::function<void(SessionInfoOr)> done);
  void ListSessionsAsync(int32_t page_size, std::string page_token,
                         std::function<void(SessionPageOr)> done);
  void DeleteSessionAsync(std::string id, std::function<void(BlocksOr)> done);
  void StatsAsync(std::function<void(EngineStats)> done);

  SessionInfoOr GetSession(const std::string& id);
  SessionPageOr ListSessions(int32_t page_size, const std::string& page_token);
  BlocksOr DeleteSession(const std::string& id);
  EngineStats Stats();
  // Moves every idle session of `from` one tier down and waits for the
  // copies (benchmarks, tests). Returns how many moved.
  int EvictAll(session_store::Tier from);
  // The session's token history.
  absl::StatusOr<std::vector<int32_t>> SessionTokens(const std::string& id);

  // Cancels every queued and running turn (OnDone with CANCELLED) and stops
  // the thread. Idempotent.
  void Stop();

  const Options& options() const { return options_; }
  int64_t kv_block_bytes() const;
  ModelBundle* bundle() const { return bundle_; }

 private:
  struct Sequence;
  struct Task {
    // Exactly one of these is set.
    std::unique_ptr<Sequence> turn;
    std::function<void(bool)> call;
  };
  // A turn or a delete that waits for its session's running turn to end.
  struct Deferred {
    std::string session_id;
    std::chrono::steady_clock::time_point give_up;  // if that turn is live
    std::unique_ptr<Sequence> turn;                 // or:
    std::function<void(BlocksOr)> erase;
  };
  // Of the session's running turn: none, cancelled (or past its deadline)
  // and unwinding, or live.
  enum class Blocker { kNone, kUnwinding, kLive };
  struct Part;

  Engine(ModelBundle* bundle, const Options& options);
  void Loop();
  // Runs fn(true) on the engine thread between steps, or fn(false) at once
  // on the caller's thread once the engine has stopped.
  void Post(std::function<void(bool running)> fn);
  template <typename T>
  void CallAsync(std::function<T()> fn, std::function<void(T)> done,
                 T if_stopped) {
    Post([fn = std::move(fn), done = std::move(done),
          if_stopped = std::move(if_stopped)](bool running) mutable {
      done(running ? fn() : std::move(if_stopped));
    });
  }
  template <typename T>
  T CallSync(std::function<T()> fn, T if_stopped) {
    std::promise<T> result;
    std::future<T> f = result.get_future();
    CallAsync<T>(
        std::move(fn), [&result](T v) { result.set_value(std::move(v)); },
        std::move(if_stopped));
    return f.get();
  }
  SessionInfoOr DoGetSession(const std::string& id) const;
  BlocksOr DoDeleteSession(const std::string& id);
  EngineStats DoStats() const;
  Blocker BlockerOf(std::string_view session_id) const;
  // Runs a turn or delete now, or defers it while its session is busy.
  void Admit(std::unique_ptr<Sequence> seq);
  void Delete(std::string id, std::chrono::steady_clock::time_point give_up,
              std::function<void(BlocksOr)> done);
  // Retries the deferred work whose session has become free.
  void RunDeferred();
  // Builds the turn's token sequence, checks it against the context window
  // and opens its turn in the store; a non-OK status fails the turn.
  absl::Status Open(Sequence& seq);
  void RecordPlan(Sequence& seq, const session_store::TurnPlan& plan);
  // The transcript a kept turn leaves.
  std::vector<session_store::TranscriptMessage> Transcript(
      const Sequence& seq) const;
  // Hands the copies the store planned to the copy worker.
  void FlushCopies();
  // Whether the copies the sequence waits for have landed (and, the first
  // time they have, records its swap-in time).
  bool Ready(Sequence& seq);
  bool AnyReady();
  void MoveBlocks(const session_store::CopyBatch& batch);
  // One step (engine_step.cc): cancellations, a batch chosen from the
  // running sequences, the forward pass, sampling and streaming.
  void Step();
  void CheckCancellations();
  // Ends a cancelled or expired turn (status `why`) with what it streamed.
  void Interrupt(Sequence& seq, absl::Status why);
  std::vector<Part> Schedule();
  void Run(const std::vector<Part>& parts);
  void Output(const std::vector<Part>& parts);
  void EmitToken(Sequence& seq, int32_t token);
  // Ends the sequence's generation keeping its first `generated` tokens:
  // flushes the last one's KV if it has none, else finishes at the end of
  // the step.
  void EndGeneration(Sequence& seq, int32_t generated);
  // Commits or undoes the turn in the store (see TurnRequest), then OnDone.
  void Finish(Sequence& seq, const absl::Status& status);

  ModelBundle* bundle_;
  Options options_;
  const session_store::Clock* clock_;
  std::unique_ptr<kernels::Buffer> arena_;
  std::unique_ptr<kernels::Buffer> host_arena_;
  std::vector<kernels::BlockMove> moves_;  // copy thread only
  kernels::KvCacheView kv_;
  std::unique_ptr<session_store::SessionStore> store_;
  // After the arenas: it lands its queue before they are freed.
  std::unique_ptr<CopyWorker> copier_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::thread thread_;

  // Engine thread only.
  std::vector<std::unique_ptr<Sequence>> active_;
  std::deque<Deferred> deferred_;
  std::vector<float> logits_;
  std::vector<RowSampling> row_sampling_;
  std::vector<int32_t> sampled_;
  int64_t anonymous_counter_ = 0;
  EngineStats stats_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_ENGINE_H_
