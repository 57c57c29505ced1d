// SandboxApi: one provider API of the sandbox (card, PayPal, e-wallet). An
// API adds its routes to the router, rebuilds its state from its journal
// records at start-up, and is given the shared services: the journal, its
// own idempotency store, its ApiConfig (latency / fault injection) and, for
// the asynchronous flows, the WebhookSender (webhooks.h) and the SelfUrl
// its pages are reached at.
//
// Adding an API: a new <name>_api.{h,cc} with a Make<Name>Api factory that
// returns a SandboxApi, registered in main.cc's API list.
//
// Thread-safety: handlers run concurrently on every server thread.
#pragma once

#include <atomic>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "io/asio.h"
#include "sandbox/config.h"
#include "sandbox/http.h"
#include "sandbox/idempotency.h"

namespace recharge::sandbox {

class SandboxApi {
 public:
  virtual ~SandboxApi() = default;
  virtual std::string_view name() const = 0;
  // Adds the API's routes; requests routed to them count for `api_index`.
  virtual void AddRoutes(Router& router, int api_index) = 0;
  // Rebuilds one charge, or applies one operation on one ("op": capture,
  // void, refund, authenticate, approve, cancel), with its idempotency
  // entry, from a journal record of this API; records come in journal
  // order. An error stops start-up.
  virtual absl::Status Restore(const Json& record) = 0;
};

// Sleeps the API's configured latency (plus jitter). False: the sandbox is
// stopping and the request must be abandoned (nothing charged).
inline asio::awaitable<bool> SimulateLatency(const ApiConfig& config, Request& request) {
  const double seconds = config.DelaySeconds();
  if (seconds <= 0) co_return true;
  co_return co_await request.context->Sleep(seconds);
}

// The flow every charge-like request shares. In timeout_mode "drop" it waits
// the latency and is dropped, nothing charged. With a key (`store_key`) the
// key is held (duplicates and lookups wait on it), the latency is waited,
// then the request is taken anew if nothing is stored under the key
// (`take(&hold)`) or answered from what is (`replay(prior)`, the key released
// first); the answer's log line names `log_key`. Without a key it is taken
// with no hold (`take(nullptr)`). A stop during the latency drops it.
template <typename Take, typename Replay>
asio::awaitable<Response> TakeOrReplay(const ApiConfig& config, IdempotencyStore& store,
                                       Request& req, std::optional<std::string> store_key,
                                       std::string log_key, const Take& take,
                                       const Replay& replay) {
  if (config.DropMode()) {
    co_await SimulateLatency(config, req);
    co_return Response::Drop("timeout_mode=drop");
  }
  if (!store_key) {
    if (!co_await SimulateLatency(config, req)) co_return Response::Drop("shutting down");
    co_return co_await take(nullptr);
  }
  IdempotencyStore::Hold hold = co_await store.Acquire(*std::move(store_key));
  std::shared_ptr<const StoredResult> prior = hold.prior();
  if (prior != nullptr) hold.Release();
  if (!co_await SimulateLatency(config, req)) co_return Response::Drop("shutting down");
  Response resp;
  if (prior == nullptr) {
    resp = co_await take(&hold);
  } else {
    resp = replay(*prior);
  }
  resp.log_key = std::move(log_key);
  co_return resp;
}

// Request counters per API, PayPal token grants and webhook deliveries, for
// /_sandbox/stats.
class Stats {
 public:
  explicit Stats(std::vector<std::string> apis)
      : apis_(std::move(apis)), requests_(apis_.size()) {}

  // Adds the "webhooks" block to the snapshot (webhooks are configured).
  // REQUIRES: before concurrent use.
  void EnableWebhookCounters() { webhooks_enabled_ = true; }

  void CountRequest(int api_index) {
    requests_[static_cast<size_t>(api_index)].fetch_add(1, std::memory_order_relaxed);
  }
  void CountTokenGrant() { token_grants_.fetch_add(1, std::memory_order_relaxed); }
  // One delivery attempt of a webhook: delivered (a 2xx) or failed.
  void CountWebhookAttempt(bool delivered) {
    webhook_attempts_.fetch_add(1, std::memory_order_relaxed);
    (delivered ? webhook_delivered_ : webhook_failed_).fetch_add(1, std::memory_order_relaxed);
  }
  // A webhook given up after its last attempt failed.
  void CountWebhookGivenUp() { webhook_given_up_.fetch_add(1, std::memory_order_relaxed); }

  // {"paypal_token_grants":N,"requests":{"card":N,...}}, plus with webhooks
  // "webhooks":{"attempts","delivered","failed_attempts","given_up"}.
  Json Snapshot() const {
    Json requests = Json::object();
    for (size_t i = 0; i < apis_.size(); ++i) {
      requests[apis_[i]] = requests_[i].load(std::memory_order_relaxed);
    }
    Json out = Json::object();
    out["paypal_token_grants"] = token_grants_.load(std::memory_order_relaxed);
    out["requests"] = std::move(requests);
    if (webhooks_enabled_) {
      Json webhooks = Json::object();
      webhooks["attempts"] = webhook_attempts_.load(std::memory_order_relaxed);
      webhooks["delivered"] = webhook_delivered_.load(std::memory_order_relaxed);
      webhooks["failed_attempts"] = webhook_failed_.load(std::memory_order_relaxed);
      webhooks["given_up"] = webhook_given_up_.load(std::memory_order_relaxed);
      out["webhooks"] = std::move(webhooks);
    }
    return out;
  }
  Json Reset() {
    token_grants_.store(0, std::memory_order_relaxed);
    for (auto& r : requests_) r.store(0, std::memory_order_relaxed);
    for (auto* counter :
         {&webhook_attempts_, &webhook_delivered_, &webhook_failed_, &webhook_given_up_}) {
      counter->store(0, std::memory_order_relaxed);
    }
    return Snapshot();
  }

 private:
  const std::vector<std::string> apis_;
  std::vector<std::atomic<uint64_t>> requests_;
  std::atomic<uint64_t> token_grants_{0};
  bool webhooks_enabled_ = false;
  std::atomic<uint64_t> webhook_attempts_{0};
  std::atomic<uint64_t> webhook_delivered_{0};
  std::atomic<uint64_t> webhook_failed_{0};
  std::atomic<uint64_t> webhook_given_up_{0};
};

// The sandbox's own address, "https://host:port", for the pages an API
// links to (the 3-D Secure challenge, the wallet approval page): --host
// (localhost for a wildcard address) and the port it listens on.
// REQUIRES: Set before serving; read-only afterwards.
class SelfUrl {
 public:
  void Set(std::string url) { url_ = std::move(url); }
  const std::string& get() const { return url_; }

 private:
  std::string url_;
};

}  // namespace recharge::sandbox
