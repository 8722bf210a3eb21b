// Runs the block copies the session store plans (swap out, swap in, copy on
// write) on a thread of its own, in ticket order, so that a swap overlaps
// with the compute of the other sessions. The engine does not schedule a
// sequence until the copies it waits for have landed (completed() reaches
// its ticket). On a GPU backend the same contract maps onto a copy stream
// ordered by events.
#ifndef KVSESSION_RUNTIME_COPY_WORKER_H_
#define KVSESSION_RUNTIME_COPY_WORKER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "session_store/session_store.h"

namespace kvsession::runtime {

class CopyWorker {
 public:
  using Clock = std::chrono::steady_clock;
  // Carries out one batch (blocking until its bytes are in place).
  using Mover = std::function<void(const session_store::CopyBatch&)>;

  // `on_progress` runs on the worker thread after each batch has landed.
  CopyWorker(Mover mover, std::function<void()> on_progress);
  // Lands everything submitted, then stops.
  ~CopyWorker();
  CopyWorker(const CopyWorker&) = delete;
  CopyWorker& operator=(const CopyWorker&) = delete;

  // Queues batches; tickets must continue the ones submitted before.
  void Submit(std::vector<session_store::CopyBatch> batches);
  // Every batch with a ticket up to this one has landed.
  uint64_t completed() const {
    return completed_.load(std::memory_order_acquire);
  }
  bool Landed(uint64_t ticket) const { return ticket <= completed(); }
  void WaitFor(uint64_t ticket);
  // When the batch `ticket` landed; empty if it has not, or if it was not
  // a swap-in (only those are timed, for the per-turn summary). Forgets it.
  std::optional<Clock::time_point> TakeLandedTime(uint64_t ticket);

  // Totals since start.
  struct Stats {
    int64_t batches = 0;
    int64_t blocks = 0;
    double busy_seconds = 0;  // time spent copying
  };
  Stats stats() const;

 private:
  void Loop();

  Mover mover_;
  std::function<void()> on_progress_;
  std::atomic<uint64_t> completed_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;       // work queued, or stop
  std::condition_variable landed_;   // completed_ moved
  std::deque<session_store::CopyBatch> queue_;
  uint64_t last_submitted_ = 0;
  bool stopping_ = false;
  std::map<uint64_t, Clock::time_point> swap_in_landed_;
  Stats stats_;
  std::thread thread_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_COPY_WORKER_H_
