#include "runtime/copy_worker.h"

#include <utility>

#include "kernels/check.h"

namespace kvsession::runtime {

namespace {
// Landing times of swap-ins nobody asked for (the turn was cancelled first)
// are forgotten once this many newer tickets exist.
constexpr uint64_t kKeepLandedTimes = 4096;
}  // namespace

CopyWorker::CopyWorker(Mover mover, std::function<void()> on_progress)
    : mover_(std::move(mover)), on_progress_(std::move(on_progress)) {
  thread_ = std::thread([this] { Loop(); });
}

CopyWorker::~CopyWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CopyWorker::Submit(std::vector<session_store::CopyBatch> batches) {
  if (batches.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (session_store::CopyBatch& b : batches) {
      KVS_CHECK(b.ticket == last_submitted_ + 1)
          << "copy ticket " << b.ticket << " after " << last_submitted_;
      last_submitted_ = b.ticket;
      queue_.push_back(std::move(b));
    }
  }
  cv_.notify_one();
}

void CopyWorker::WaitFor(uint64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  KVS_CHECK(ticket <= last_submitted_) << "waiting for unsubmitted copies";
  landed_.wait(lock, [&] { return completed() >= ticket; });
}

std::optional<CopyWorker::Clock::time_point> CopyWorker::TakeLandedTime(
    uint64_t ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = swap_in_landed_.find(ticket);
  if (it == swap_in_landed_.end()) return std::nullopt;
  const Clock::time_point t = it->second;
  swap_in_landed_.erase(it);
  return t;
}

CopyWorker::Stats CopyWorker::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CopyWorker::Loop() {
  while (true) {
    session_store::CopyBatch batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      // Stopping still lands what is queued: the arenas outlive the worker
      // and the store already counts those blocks as moved.
      if (queue_.empty()) return;
      batch = std::move(queue_.front());
      queue_.pop_front();
    }
    const Clock::time_point start = Clock::now();
    mover_(batch);
    const Clock::time_point end = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.batches;
      stats_.blocks += static_cast<int64_t>(batch.copies.size());
      stats_.busy_seconds += std::chrono::duration<double>(end - start).count();
      if (batch.kind == session_store::CopyBatch::Kind::kSwapIn) {
        swap_in_landed_[batch.ticket] = end;
        while (!swap_in_landed_.empty() &&
               swap_in_landed_.begin()->first + kKeepLandedTimes <
                   batch.ticket) {
          swap_in_landed_.erase(swap_in_landed_.begin());
        }
      }
      completed_.store(batch.ticket, std::memory_order_release);
    }
    landed_.notify_all();
    if (on_progress_) on_progress_();
  }
}

}  // namespace kvsession::runtime
