// WebhookSender: the sandbox's signed event notifications (the providers'
// webhooks). An API hands it an event -- a JSON body for the notify_url its
// payment was created with -- and the sender POSTs it over verified HTTPS,
// off the request path, retrying until the receiver answers 2xx.
//
// Wire format (Stripe's scheme): POST <notify_url>, Content-Type:
// application/json, the body as given, and
//   Sandbox-Signature: t=<unix seconds>,v1=<lowercase hex
//                      HMAC-SHA256(secret, "<t>.<raw body>")>
// where t is the time of that attempt (every retry is signed afresh).
//
// Delivery: each attempt has 5 s (connect, TLS, request, answer). A 2xx is
// delivered; anything else (refused, timed out, non-2xx) is retried after
// webhook_retry_base_ms (default 500) doubling after each failure, capped
// at 30 s, until webhook_max_attempts (default 12, the first attempt
// included) have failed; then the webhook is given up. Both are read from
// SandboxConfig at each step, so POST /_sandbox/config applies to webhooks
// already waiting. Webhooks live in memory only: not journaled, not
// redelivered after a restart, and Stop() abandons the pending ones at once.
//
// Without a secret (no --webhook-secret-file) the sender is disabled: Send
// does nothing and the flows that would notify still work (the gateway polls).
//
// The secret and the signatures never reach the log; the control API's
// List() shows the last signature (tests re-send a delivery verbatim).
//
// Thread-safety: Send and List may be called from any thread. Deliveries run
// on the sender's own thread and io_context. Stop from one thread, once
// the server has stopped.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "io/asio.h"
#include "io/https_client.h"
#include "io/secret.h"
#include "sandbox/api.h"
#include "sandbox/config.h"
#include "sandbox/http.h"

namespace recharge::sandbox {

inline constexpr size_t kMaxNotifyUrlLen = 2048;

// A notify_url split for the HTTPS client: the endpoint and the request
// target ("/path?query", "/" when the URL has no path).
struct WebhookUrl {
  HttpsEndpoint endpoint;
  std::string target;
};

// "https://host[:port][/path][?query]": at most 2048 printable ASCII
// characters without spaces, no fragment, no user info. Errors say what is
// wrong (for the API's 400).
absl::StatusOr<WebhookUrl> ParseWebhookUrl(std::string_view url);

// The Sandbox-Signature header value for `body` signed at unix time `t`.
std::string WebhookSignature(const Secret& secret, int64_t t, std::string_view body);

class WebhookSender {
 public:
  // `secret` nullopt: disabled. `ca_file`: the CA bundle trusted for the
  // receivers' certificates (empty: the system's store); an unreadable
  // file is an error. REQUIRES: config and stats outlive the sender.
  static absl::StatusOr<std::unique_ptr<WebhookSender>> Create(
      std::optional<Secret> secret, std::string ca_file, const SandboxConfig& config,
      Stats& stats, std::vector<std::string> redact);
  ~WebhookSender();
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  bool enabled() const { return secret_.has_value(); }

  // Queues one event and returns at once (nothing when disabled or
  // stopped). `url` is the payment's notify_url; `event_id` and `type` are
  // the event's, `body` its JSON, sent byte for byte.
  void Send(std::string_view api, std::string event_id, std::string type, std::string url,
            std::string body);

  // {"webhooks":[{"event_id","api","type","url","body","attempts",
  //  "delivered","last_status","last_error","signature"}...]}, oldest first
  // (the newest 10000).
  Json List() const;

  // Abandons the pending deliveries and retries at once and stops the
  // delivery thread. Idempotent.
  void Stop();

 private:
  // One webhook. The event and its target are set before it is shared and
  // never change; the delivery state below them is guarded by mu_.
  struct Record {
    std::string event_id, api, type, url, body;
    WebhookUrl target;
    int64_t attempts = 0;
    bool delivered = false;
    int last_status = 0;
    std::string last_error;
    std::string signature;
  };
  // One attempt's outcome: an HTTP status (0: none) or an error.
  struct Outcome {
    int status = 0;
    std::string error;
  };

  WebhookSender(std::optional<Secret> secret, std::string ca_file, const SandboxConfig& config,
                Stats& stats, std::vector<std::string> redact);

  asio::awaitable<void> Deliver(std::shared_ptr<Record> record);
  asio::awaitable<Outcome> Attempt(const Record& record, const std::string& signature);

  const std::optional<Secret> secret_;
  const std::string ca_file_;
  const SandboxConfig& config_;
  Stats& stats_;
  const std::vector<std::string> redact_;

  // Declared first, destroyed last: coroutine frames it still holds at
  // Stop() are destroyed with it, after the clients closed their idle
  // connections.
  asio::io_context ioc_{1};
  // One client per receiver origin; used on the delivery thread only.
  std::map<std::string, std::unique_ptr<HttpsClient>> clients_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mu_;
  std::deque<std::shared_ptr<Record>> records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace recharge::sandbox
