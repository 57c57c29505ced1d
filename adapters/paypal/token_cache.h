// TokenCache: an OAuth2 access token shared by all calls of one adapter
// instance, fetched when missing or about to expire. Concurrent callers that
// find no valid token share ONE fetch (single flight): the first starts it,
// the others wait for its result.
//
// Thread-safety: Get and Invalidate may be called concurrently from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "io/asio.h"
#include "io/secret.h"

namespace recharge {

struct AccessToken {
  Secret value;
  std::chrono::steady_clock::time_point expires_at;
};

class TokenCache {
 public:
  // Fetches a token; it must answer by the deadline it is given.
  using Fetch = std::function<asio::awaitable<absl::StatusOr<AccessToken>>(
      std::chrono::steady_clock::time_point deadline)>;
  // `refresh_margin`: a token this close to expiry is treated as expired.
  TokenCache(Fetch fetch, std::chrono::milliseconds refresh_margin)
      : fetch_(std::move(fetch)), margin_(refresh_margin) {}

  // The current token, fetching one if needed. A fetch started by this call
  // ends by `deadline`; a caller that finds a fetch under way waits for it.
  asio::awaitable<absl::StatusOr<Secret>> Get(std::chrono::steady_clock::time_point deadline);
  // The provider rejected `token`: forget it (if it is still the current one).
  void Invalidate(const Secret& token);
  uint64_t fetches() const;

 private:
  using Waiter = std::function<void(absl::StatusOr<Secret>)>;
  Fetch fetch_;
  const std::chrono::milliseconds margin_;
  mutable std::mutex mu_;
  std::optional<AccessToken> token_;  // guarded by mu_
  bool fetching_ = false;             // guarded by mu_
  std::vector<Waiter> waiters_;       // guarded by mu_
  uint64_t fetches_ = 0;              // guarded by mu_
};

}  // namespace recharge
