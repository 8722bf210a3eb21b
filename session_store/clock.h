// Time source of the session store. Idle TTLs and LRU order read the time
// through this interface so that tests can move time by hand.
#ifndef KVSESSION_SESSION_STORE_CLOCK_H_
#define KVSESSION_SESSION_STORE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvsession::session_store {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  // Process-wide instance; never destroyed, so it is safe to use from
  // static destructors and other threads at exit.
  static const SystemClock* Get() {
    static const SystemClock* const clock = new SystemClock;
    return clock;
  }
  absl::Time Now() const override { return absl::Now(); }
};

// Time that only moves when told to. Not thread-safe: it belongs to the
// thread that drives the store, like the store itself.
class FakeClock final : public Clock {
 public:
  // A fixed, arbitrary start keeps test output reproducible.
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000))
      : now_(start) {}
  absl::Time Now() const override { return now_; }
  void Set(absl::Time t) { now_ = t; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_;
};

}  // namespace kvsession::session_store

#endif  // KVSESSION_SESSION_STORE_CLOCK_H_
