#include "adapters/paypal/token_cache.h"

namespace recharge {

uint64_t TokenCache::fetches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fetches_;
}

void TokenCache::Invalidate(const Secret& token) {
  std::lock_guard<std::mutex> lock(mu_);
  if (token_ && token_->value.Reveal() == token.Reveal()) token_.reset();
}

asio::awaitable<absl::StatusOr<Secret>> TokenCache::Get(
    std::chrono::steady_clock::time_point deadline) {
  bool leader = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (token_ && std::chrono::steady_clock::now() + margin_ < token_->expires_at) {
      co_return token_->value;
    }
    if (!fetching_) {
      fetching_ = true;
      leader = true;
      ++fetches_;
    }
  }
  if (leader) {
    absl::StatusOr<AccessToken> fetched = co_await fetch_(deadline);
    absl::StatusOr<Secret> result =
        fetched.ok() ? absl::StatusOr<Secret>(fetched->value) : fetched.status();
    std::vector<Waiter> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fetched.ok()) token_ = *std::move(fetched);
      fetching_ = false;
      waiters.swap(waiters_);
    }
    for (Waiter& w : waiters) w(result);
    co_return result;
  }
  // Wait for the leader's fetch. Registration happens under the lock, so a
  // fetch that ends meanwhile is seen and answered at once.
  auto initiation = [this](auto handler) {
    using Handler = decltype(handler);
    auto shared = std::make_shared<Handler>(std::move(handler));
    auto resume = [shared](absl::StatusOr<Secret> r) {
      auto ex = asio::get_associated_executor(*shared);
      asio::post(ex, [shared, r = std::move(r)]() mutable { std::move(*shared)(std::move(r)); });
    };
    std::unique_lock<std::mutex> lock(mu_);
    if (fetching_) {
      waiters_.push_back(std::move(resume));
      return;
    }
    absl::StatusOr<Secret> now =
        token_ ? absl::StatusOr<Secret>(token_->value)
               : absl::StatusOr<Secret>(absl::UnavailableError("token fetch failed"));
    lock.unlock();
    resume(std::move(now));
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&,
                                          void(absl::StatusOr<Secret>)>(initiation,
                                                                        asio::use_awaitable);
}

}  // namespace recharge
