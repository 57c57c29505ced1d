#include "io/async_semaphore.h"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

namespace recharge {
namespace {

using Wait = AsyncSemaphore::Wait;
using Clock = std::chrono::steady_clock;

constexpr auto kLater = std::chrono::hours(1);

// Runs what is ready. poll() leaves the context stopped once it runs out of
// work (every waiter served, no timer left): restart it first.
void Poll(asio::io_context& io) {
  io.restart();
  io.poll();
}

// Parameters by value: a coroutine outlives its caller's frame.
asio::awaitable<void> AcquireInto(std::shared_ptr<AsyncSemaphore> sem, Clock::time_point deadline,
                                  std::optional<Wait>* out) {
  *out = co_await sem->Acquire(deadline);
}

// Acquires into `*out` (on `io`); a slot granted stays held until the test
// releases it.
void SpawnAcquire(asio::io_context& io, const std::shared_ptr<AsyncSemaphore>& sem,
                  Clock::time_point deadline, std::optional<Wait>* out) {
  asio::co_spawn(io, AcquireInto(sem, deadline, out), asio::detached);
}

TEST(AsyncSemaphore, GrantsUpToCapacityThenServesWaitersInArrivalOrder) {
  asio::io_context io;
  auto sem = std::make_shared<AsyncSemaphore>(2);
  std::vector<std::optional<Wait>> got(5);
  for (auto& g : got) SpawnAcquire(io, sem, Clock::now() + kLater, &g);
  Poll(io);
  EXPECT_EQ(got[0], Wait::kGranted);
  EXPECT_EQ(got[1], Wait::kGranted);
  EXPECT_FALSE(got[2] || got[3] || got[4]);
  EXPECT_EQ(sem->in_use(), 2u);
  EXPECT_EQ(sem->waiting(), 3u);

  sem->Release();
  Poll(io);
  EXPECT_EQ(got[2], Wait::kGranted);
  EXPECT_FALSE(got[3] || got[4]);
  // A newcomer queues behind the waiters even when a slot is handed back.
  std::optional<Wait> late;
  SpawnAcquire(io, sem, Clock::now() + kLater, &late);
  Poll(io);
  sem->Release();
  Poll(io);
  EXPECT_EQ(got[3], Wait::kGranted);
  EXPECT_FALSE(got[4] || late);
  sem->Release();
  sem->Release();
  Poll(io);
  EXPECT_EQ(got[4], Wait::kGranted);
  EXPECT_EQ(late, Wait::kGranted);
  EXPECT_EQ(sem->in_use(), 2u);
  EXPECT_EQ(sem->waiting(), 0u);
}

TEST(AsyncSemaphore, AWaiterPastItsDeadlineTimesOutAndHoldsNoSlot) {
  asio::io_context io;
  auto sem = std::make_shared<AsyncSemaphore>(1);
  std::optional<Wait> first, hasty, patient;
  SpawnAcquire(io, sem, Clock::now() + kLater, &first);
  SpawnAcquire(io, sem, Clock::now() + std::chrono::milliseconds(20), &hasty);
  SpawnAcquire(io, sem, Clock::now() + kLater, &patient);
  while (!hasty) io.run_one();
  EXPECT_EQ(first, Wait::kGranted);
  EXPECT_EQ(hasty, Wait::kTimedOut);
  EXPECT_FALSE(patient);
  EXPECT_EQ(sem->waiting(), 1u);
  sem->Release();  // goes past the one that gave up
  Poll(io);
  EXPECT_EQ(patient, Wait::kGranted);
  EXPECT_EQ(sem->in_use(), 1u);
}

TEST(AsyncSemaphore, MoreThanMaxWaitingAreRefusedAtOnce) {
  asio::io_context io;
  auto sem = std::make_shared<AsyncSemaphore>(1, /*max_waiting=*/2);
  std::vector<std::optional<Wait>> got(4);
  for (auto& g : got) SpawnAcquire(io, sem, Clock::now() + kLater, &g);
  Poll(io);
  EXPECT_EQ(got[0], Wait::kGranted);
  EXPECT_FALSE(got[1] || got[2]);
  EXPECT_EQ(got[3], Wait::kQueueFull);
  EXPECT_EQ(sem->waiting(), 2u);
  EXPECT_EQ(sem->in_use(), 1u);
  // No coroutine may be left waiting when the io_context goes: Asio frees a
  // suspended coroutine only through its executor, so it would leak.
  sem->Close();
  Poll(io);
  EXPECT_EQ(got[1], Wait::kClosed);
  EXPECT_EQ(got[2], Wait::kClosed);
}

TEST(AsyncSemaphore, CloseFailsTheWaitersAndLaterCalls) {
  asio::io_context io;
  auto sem = std::make_shared<AsyncSemaphore>(1);
  std::optional<Wait> held, waiting, after;
  SpawnAcquire(io, sem, Clock::now() + kLater, &held);
  SpawnAcquire(io, sem, Clock::now() + kLater, &waiting);
  Poll(io);
  sem->Close();
  Poll(io);
  EXPECT_EQ(held, Wait::kGranted);
  EXPECT_EQ(waiting, Wait::kClosed);
  SpawnAcquire(io, sem, Clock::now() + kLater, &after);
  Poll(io);
  EXPECT_EQ(after, Wait::kClosed);
  sem->Release();
  EXPECT_EQ(sem->in_use(), 0u);
}

TEST(AsyncSemaphore, ManyThreadsNeverHoldMoreThanCapacityAndAllAreServed) {
  asio::io_context io;
  auto sem = std::make_shared<AsyncSemaphore>(3);
  std::atomic<int> holding{0}, most{0}, granted{0};
  constexpr int kCalls = 2000;
  // The lambda outlives every coroutine made from it (they refer to its
  // captures): it is destroyed at the end of the test.
  auto body = [&]() -> asio::awaitable<void> {
    if (co_await sem->Acquire(Clock::now() + kLater) != Wait::kGranted) co_return;
    const int now = ++holding;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    // Hold the slot across a suspension, so that others must wait.
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    --holding;
    ++granted;
    sem->Release();
  };
  for (int i = 0; i < kCalls; ++i) asio::co_spawn(io, body(), asio::detached);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&io] { io.run(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(granted.load(), kCalls);
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(sem->in_use(), 0u);
  EXPECT_EQ(sem->waiting(), 0u);
}

}  // namespace
}  // namespace recharge
