// InFlightCommands: a RedisCommands that forwards every command to another
// and counts the commands in flight, and the most at once. Subclasses may
// hold a command back before it is sent (Before) and before its reply is
// handed back (After). The counter store's tests and bench/counter_bench use
// it to see that a decision's commands are all sent before any reply is
// awaited (one round-trip time).
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "io/asio.h"
#include "io/redis_client.h"

namespace recharge::testing {

class InFlightCommands : public RedisCommands {
 public:
  explicit InFlightCommands(RedisCommands& inner) : inner_(inner) {}

  using RedisCommands::Command;
  asio::awaitable<absl::StatusOr<RedisReply>> Command(std::vector<std::string> args,
                                                      std::chrono::steady_clock::time_point deadline,
                                                      std::string route_key) final {
    const int now = ++in_flight_;
    int seen = most_.load();
    while (now > seen && !most_.compare_exchange_weak(seen, now)) {
    }
    co_await Before(now);
    absl::StatusOr<RedisReply> r =
        co_await inner_.Command(std::move(args), deadline, std::move(route_key));
    co_await After(now);
    --in_flight_;
    co_return r;
  }
  uint64_t commands_sent() const final { return inner_.commands_sent(); }
  bool sharded() const final { return inner_.sharded(); }

  // The most commands that were in flight at once.
  int most_in_flight() const { return most_.load(); }

 protected:
  // `in_flight`: the commands in flight when this one came, itself included.
  virtual asio::awaitable<void> Before(int in_flight) {
    (void)in_flight;
    co_return;
  }
  virtual asio::awaitable<void> After(int in_flight) {
    (void)in_flight;
    co_return;
  }

 private:
  RedisCommands& inner_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> most_{0};
};

}  // namespace recharge::testing
