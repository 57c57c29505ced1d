#include "io/async_semaphore.h"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>

#include <vector>

namespace recharge {

// One waiting coroutine: its completion handler, posted to the coroutine's
// own executor by whoever unlinks it from the queue (a released slot, its
// deadline timer, or Close) — under mu_, so exactly once.
struct AsyncSemaphore::Waiter {
  struct Resume {
    virtual ~Resume() = default;
    virtual void Post() = 0;
  };
  template <typename Handler>
  struct ResumeWith final : Resume {
    explicit ResumeWith(Handler h) : handler(std::move(h)) {}
    void Post() override {
      auto ex = asio::get_associated_executor(handler);
      asio::post(ex, std::move(handler));
    }
    Handler handler;
  };

  explicit Waiter(asio::any_io_executor ex) : timer(std::move(ex)) {}

  // Guarded by the semaphore's mutex while linked; read by the coroutine
  // once resumed.
  Wait outcome = Wait::kTimedOut;
  std::unique_ptr<Resume> resume;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  bool linked = false;
  // The deadline; armed under the mutex before the waiter is linked and
  // cancelled by the coroutine once resumed, so never used concurrently.
  asio::steady_timer timer;
};

AsyncSemaphore::AsyncSemaphore(size_t capacity, size_t max_waiting)
    : capacity_(capacity), max_waiting_(max_waiting) {}

size_t AsyncSemaphore::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_;
}

size_t AsyncSemaphore::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_;
}

void AsyncSemaphore::Link(Waiter& w) {
  w.prev = last_;
  w.next = nullptr;
  (last_ ? last_->next : first_) = &w;
  last_ = &w;
  w.linked = true;
  ++waiting_;
}

void AsyncSemaphore::Unlink(Waiter& w) {
  (w.prev ? w.prev->next : first_) = w.next;
  (w.next ? w.next->prev : last_) = w.prev;
  w.prev = w.next = nullptr;
  w.linked = false;
  --waiting_;
}

asio::awaitable<AsyncSemaphore::Wait> AsyncSemaphore::Acquire(
    std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) co_return Wait::kClosed;
    if (first_ == nullptr && in_use_ < capacity_) {  // none waits before us
      ++in_use_;
      co_return Wait::kGranted;
    }
    if (waiting_ >= max_waiting_) co_return Wait::kQueueFull;
  }
  // The slow path. The initiation runs once this coroutine is suspended;
  // whoever unlinks the waiter posts its handler back to our executor.
  auto waiter = std::make_shared<Waiter>(co_await asio::this_coro::executor);
  auto initiation = [this, &waiter, deadline](auto handler) {
    waiter->resume = std::make_unique<Waiter::ResumeWith<decltype(handler)>>(std::move(handler));
    if (!Enqueue(waiter, deadline)) waiter->resume->Post();
  };
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(initiation,
                                                                        asio::use_awaitable);
  waiter->timer.cancel();
  co_return waiter->outcome;
}

bool AsyncSemaphore::Enqueue(const std::shared_ptr<Waiter>& waiter,
                             std::chrono::steady_clock::time_point deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  // Checked again: the state may have changed since Acquire looked.
  if (closed_) {
    waiter->outcome = Wait::kClosed;
    return false;
  }
  if (first_ == nullptr && in_use_ < capacity_) {
    ++in_use_;
    waiter->outcome = Wait::kGranted;
    return false;
  }
  if (waiting_ >= max_waiting_) {
    waiter->outcome = Wait::kQueueFull;
    return false;
  }
  // Armed under the lock, before anyone can resume the coroutine: the
  // handler never runs inline, and takes the lock itself.
  waiter->timer.expires_at(deadline);
  waiter->timer.async_wait([self = shared_from_this(), w = waiter](boost::system::error_code ec) {
    if (!ec) self->Expire(*w);
  });
  Link(*waiter);
  return true;
}

void AsyncSemaphore::Expire(Waiter& w) {
  std::unique_ptr<Waiter::Resume> resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!w.linked) return;  // granted (or closed) meanwhile
    Unlink(w);
    w.outcome = Wait::kTimedOut;
    resume = std::move(w.resume);
  }
  resume->Post();
}

void AsyncSemaphore::Release() {
  std::unique_ptr<Waiter::Resume> resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_ != nullptr && !closed_) {
      Waiter& w = *first_;  // the slot passes to it: in_use_ unchanged
      Unlink(w);
      w.outcome = Wait::kGranted;
      resume = std::move(w.resume);
    } else {
      --in_use_;
    }
  }
  if (resume) resume->Post();
}

void AsyncSemaphore::Close() {
  std::vector<std::unique_ptr<Waiter::Resume>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    while (first_ != nullptr) {
      Waiter& w = *first_;
      Unlink(w);
      w.outcome = Wait::kClosed;
      waiting.push_back(std::move(w.resume));
    }
  }
  for (auto& resume : waiting) resume->Post();
}

}  // namespace recharge
