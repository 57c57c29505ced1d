#include "adapters/circuit_breaker.h"

#include <gtest/gtest.h>

namespace recharge {
namespace {

using State = CircuitBreaker::State;
using namespace std::chrono_literals;

class CircuitBreakerTest : public ::testing::Test {
 protected:
  CircuitBreaker::Clock::time_point now_{};  // a fake clock
  CircuitBreaker breaker_{{.window = 10, .min_calls = 4, .failure_rate = 0.5, .open_for = 30s}};

  void Call(bool success) {
    ASSERT_TRUE(breaker_.Allow(now_));
    breaker_.Record(success, now_);
  }
};

TEST_F(CircuitBreakerTest, StaysClosedBelowMinimumCalls) {
  for (int i = 0; i < 3; ++i) Call(false);
  EXPECT_EQ(breaker_.state(now_), State::kClosed);
}

TEST_F(CircuitBreakerTest, OpensAtTheFailureRateAndRefusesCalls) {
  Call(true);
  Call(false);
  Call(true);
  EXPECT_EQ(breaker_.state(now_), State::kClosed);
  Call(false);  // 2 of 4 failed: 50%
  EXPECT_EQ(breaker_.state(now_), State::kOpen);
  EXPECT_FALSE(breaker_.Allow(now_));
  now_ += 29s;
  EXPECT_FALSE(breaker_.Allow(now_));
  EXPECT_EQ(breaker_.times_opened(), 1u);
}

TEST_F(CircuitBreakerTest, HealthyCallsKeepItClosed) {
  for (int i = 0; i < 100; ++i) Call(i % 4 != 0);  // 25% failures
  EXPECT_EQ(breaker_.state(now_), State::kClosed);
}

TEST_F(CircuitBreakerTest, HalfOpenAllowsOneProbeAndItsSuccessCloses) {
  for (int i = 0; i < 4; ++i) Call(false);
  ASSERT_EQ(breaker_.state(now_), State::kOpen);
  now_ += 30s;
  EXPECT_EQ(breaker_.state(now_), State::kHalfOpen);
  EXPECT_TRUE(breaker_.Allow(now_));   // the probe
  EXPECT_FALSE(breaker_.Allow(now_));  // only one at a time
  breaker_.Record(true, now_);
  EXPECT_EQ(breaker_.state(now_), State::kClosed);
  EXPECT_TRUE(breaker_.Allow(now_));
  breaker_.Record(true, now_);
}

TEST_F(CircuitBreakerTest, FailedProbeOpensAgainForAnotherPeriod) {
  for (int i = 0; i < 4; ++i) Call(false);
  now_ += 30s;
  ASSERT_TRUE(breaker_.Allow(now_));
  breaker_.Record(false, now_);
  EXPECT_EQ(breaker_.state(now_), State::kOpen);
  now_ += 10s;
  EXPECT_FALSE(breaker_.Allow(now_));
  EXPECT_EQ(breaker_.times_opened(), 2u);
}

TEST(CircuitBreaker, DecidesOnTheLastWindowOfCallsOnly) {
  CircuitBreaker b({.window = 4, .min_calls = 4, .failure_rate = 0.75, .open_for = 30s});
  const CircuitBreaker::Clock::time_point now{};
  auto call = [&](bool ok) {
    ASSERT_TRUE(b.Allow(now));
    b.Record(ok, now);
  };
  call(false), call(false), call(true), call(true);  // 2 of 4
  call(true), call(true);                            // the failures leave the window
  call(false), call(false);                          // 2 of 4 again
  EXPECT_EQ(b.state(now), State::kClosed);
  call(false);  // 3 of the last 4 (but only 5 of all 9): opens
  EXPECT_EQ(b.state(now), State::kOpen);
}

}  // namespace
}  // namespace recharge
