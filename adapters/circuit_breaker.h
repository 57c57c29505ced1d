// CircuitBreaker: stops sending calls to a payment adapter instance that keeps
// failing, and probes it again later (closed -> open -> half-open -> closed).
//
// Closed: calls flow; the outcomes of the last `window` calls are kept, and
// once at least `min_calls` are recorded and the share of failures reaches
// `failure_rate`, the breaker opens. Open: Allow() refuses every call for
// `open_for`. Half-open: one probe call at a time is allowed; its success
// closes the breaker (with a fresh window), its failure opens it again.
//
// A "failure" is the instance not answering properly (connection refused, 5xx,
// timeout); a decline is a healthy answer. Time is passed in, so tests use a
// fake clock.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string_view>

namespace recharge {

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    int window = 20;             // outcomes remembered while closed
    int min_calls = 5;           // no decision on fewer
    double failure_rate = 0.5;   // open at or above this share of failures
    std::chrono::milliseconds open_for{30'000};
  };
  enum class State { kClosed, kOpen, kHalfOpen };

  explicit CircuitBreaker(Options options) : options_(options) {}

  // May a call be made now? In half-open, true for one probe at a time.
  // REQUIRES: a call that was allowed is followed by exactly one Record().
  bool Allow(Clock::time_point now);
  void Record(bool success, Clock::time_point now);

  State state(Clock::time_point now) const;
  uint64_t times_opened() const;
  static std::string_view StateName(State s);

 private:
  void Open(Clock::time_point now);  // REQUIRES: mu_ held

  const Options options_;
  mutable std::mutex mu_;
  State state_ = State::kClosed;        // guarded by mu_
  std::deque<bool> outcomes_;           // guarded by mu_; true = failure
  int failures_ = 0;                    // guarded by mu_
  Clock::time_point open_until_{};      // guarded by mu_
  bool probe_in_flight_ = false;        // guarded by mu_
  uint64_t times_opened_ = 0;           // guarded by mu_
};

}  // namespace recharge
