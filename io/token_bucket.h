// TokenBucket: `burst` takes at once, refilled at `per_second` (the gRPC
// callers' rate limits, the webhook port's).
//
// Thread-safety: TryTake may be called concurrently.
#pragma once

#include <chrono>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace recharge {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double per_second, double burst);
  // Takes one token if there is one.
  bool TryTake(Clock::time_point now);
  double per_second() const { return per_second_; }
  double burst() const { return burst_; }

 private:
  const double per_second_;
  const double burst_;
  std::mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  Clock::time_point last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace recharge
