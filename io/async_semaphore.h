// AsyncSemaphore: `capacity` slots handed out to coroutines in arrival order.
// A coroutine that finds none free waits without a thread until a slot is
// given back (it goes straight to the first waiter: a new arrival never
// overtakes one that waits) or until its deadline passes. At most
// `max_waiting` wait; one more is refused at once.
//
// Used by the HTTPS client (connections per provider) and by the gateway
// (recharges in progress).
//
// Thread-safety: every member may be called from any thread. A waiter is
// resumed on its own coroutine's executor. Create with std::make_shared: a
// pending deadline timer holds the semaphore.
#pragma once

#include <chrono>
#include <cstddef>
#include <limits>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "io/asio.h"

namespace recharge {

class AsyncSemaphore : public std::enable_shared_from_this<AsyncSemaphore> {
 public:
  enum class Wait {
    kGranted,    // the caller holds a slot; give it back with Release()
    kTimedOut,   // the deadline passed first; no slot held
    kQueueFull,  // max_waiting callers were waiting already; no slot held
    kClosed,     // Close() was called; no slot held
  };

  explicit AsyncSemaphore(size_t capacity,
                          size_t max_waiting = std::numeric_limits<size_t>::max());
  AsyncSemaphore(const AsyncSemaphore&) = delete;
  AsyncSemaphore& operator=(const AsyncSemaphore&) = delete;

  // A slot now, or a wait for one until `deadline`.
  asio::awaitable<Wait> Acquire(std::chrono::steady_clock::time_point deadline);
  // Gives a slot back (to the first waiter, if any).
  void Release();
  // Fails every waiter and every later Acquire with kClosed. Slots held stay
  // held until released.
  void Close();

  size_t capacity() const { return capacity_; }
  size_t in_use() const;
  size_t waiting() const;

 private:
  struct Waiter;
  // Takes a slot, queues `waiter`, or says why neither (kQueueFull, kClosed).
  // Returns true when the waiter was queued.
  bool Enqueue(const std::shared_ptr<Waiter>& waiter,
               std::chrono::steady_clock::time_point deadline);
  void Expire(Waiter& waiter);
  void Link(Waiter& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unlink(Waiter& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t capacity_;
  const size_t max_waiting_;
  mutable std::mutex mu_;
  size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
  Waiter* first_ ABSL_GUARDED_BY(mu_) = nullptr;
  Waiter* last_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace recharge
