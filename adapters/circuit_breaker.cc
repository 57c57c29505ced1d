#include "adapters/circuit_breaker.h"

namespace recharge {

std::string_view CircuitBreaker::StateName(State s) {
  switch (s) {
    case State::kClosed: return "closed";
    case State::kOpen: return "open";
    case State::kHalfOpen: return "half_open";
  }
  return "?";
}

bool CircuitBreaker::Allow(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  switch (state_) {
    case State::kClosed:
      return true;
    case State::kOpen:
      if (now < open_until_) return false;
      state_ = State::kHalfOpen;
      probe_in_flight_ = true;
      return true;
    case State::kHalfOpen:
      if (probe_in_flight_) return false;
      probe_in_flight_ = true;
      return true;
  }
  return false;
}

void CircuitBreaker::Record(bool success, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kHalfOpen) {
    probe_in_flight_ = false;
    if (success) {
      state_ = State::kClosed;
      outcomes_.clear();
      failures_ = 0;
    } else {
      Open(now);
    }
    return;
  }
  if (state_ == State::kOpen) return;  // a call allowed before the breaker opened
  outcomes_.push_back(!success);
  failures_ += success ? 0 : 1;
  if (static_cast<int>(outcomes_.size()) > options_.window) {
    failures_ -= outcomes_.front() ? 1 : 0;
    outcomes_.pop_front();
  }
  const int n = static_cast<int>(outcomes_.size());
  if (n >= options_.min_calls && failures_ >= options_.failure_rate * n) Open(now);
}

void CircuitBreaker::Open(Clock::time_point now) {
  state_ = State::kOpen;
  open_until_ = now + options_.open_for;
  outcomes_.clear();
  failures_ = 0;
  ++times_opened_;
}

CircuitBreaker::State CircuitBreaker::state(Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kOpen && now >= open_until_) return State::kHalfOpen;
  return state_;
}

uint64_t CircuitBreaker::times_opened() const {
  std::lock_guard<std::mutex> lock(mu_);
  return times_opened_;
}

}  // namespace recharge
