// SandboxConfig: the latency and fault-injection knobs, changeable at run
// time through POST /_sandbox/config. Top-level values mean "all APIs";
// every registered API has its own effective copy (an ApiConfig), plus
// fields of its own (PayPal's token_ttl_s). A few fields are global only
// and have no per-API copy: the webhook retry policy
// (webhook_retry_base_ms, default 500; webhook_max_attempts, default 12).
//
// Update validates a change as a whole and applies all of it or nothing: a
// top-level field is written to the default and to every API, per-API blocks
// are applied after them, so {"latency_ms":0,"paypal":{"latency_ms":500}}
// slows only PayPal.
//
// Thread-safety: Update/Snapshot/Register take one mutex (control path
// only); an ApiConfig is read lock-free (atomics) on the request path.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "sandbox/http.h"

namespace recharge::sandbox {

inline constexpr double kMaxLatencyMs = 600000;
inline constexpr int64_t kMaxTokenTtlS = 366 * 86400;
inline constexpr int64_t kDefaultTokenTtlS = 32400;
inline constexpr int64_t kDefaultWebhookRetryBaseMs = 500;
inline constexpr int64_t kDefaultWebhookMaxAttempts = 12;
inline constexpr int64_t kMaxWebhookAttempts = 100;

// One API's effective settings.
class ApiConfig {
 public:
  explicit ApiConfig(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }

  // latency_ms plus a uniform jitter in [0, latency_jitter_ms], in seconds.
  double DelaySeconds() const;
  // True with probability error_rate.
  bool InjectError() const;
  bool DropMode() const { return drop_.load(std::memory_order_relaxed); }
  int64_t token_ttl_s() const { return token_ttl_s_.load(std::memory_order_relaxed); }

 private:
  friend class SandboxConfig;
  const std::string name_;
  std::atomic<double> latency_ms_{0};
  std::atomic<double> jitter_ms_{0};
  std::atomic<double> error_rate_{0};
  std::atomic<bool> drop_{false};
  std::atomic<int64_t> token_ttl_s_{kDefaultTokenTtlS};
};

class SandboxConfig {
 public:
  SandboxConfig();

  // Gives API `name` its own settings: a copy of the current top-level
  // ones plus `extra` fields (name -> default). The returned reference lives
  // as long as the SandboxConfig. REQUIRES: before concurrent use.
  ApiConfig& Register(const std::string& name, const Json& extra = Json::object());

  // Validates every change, then applies them all; returns the new
  // snapshot. INVALID_ARGUMENT (with a message for the caller): nothing
  // was applied.
  absl::StatusOr<Json> Update(const Json& changes);

  // {"latency_ms","latency_jitter_ms","error_rate","timeout_mode",
  //  "webhook_retry_base_ms","webhook_max_attempts",
  //  "<api>":{...effective settings...},...}
  Json Snapshot() const;

  // The webhook retry policy (global only), read lock-free: the delay
  // before the first retry in ms (doubling after each), and the number of
  // attempts (the first included) before a webhook is given up.
  int64_t webhook_retry_base_ms() const {
    return webhook_retry_base_ms_.load(std::memory_order_relaxed);
  }
  int64_t webhook_max_attempts() const {
    return webhook_max_attempts_.load(std::memory_order_relaxed);
  }

 private:
  Json SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Publish(const Json& values, ApiConfig& api);

  mutable std::mutex mu_;
  Json values_ ABSL_GUARDED_BY(mu_);                // top-level defaults
  Json global_values_ ABSL_GUARDED_BY(mu_);         // global-only fields
  std::atomic<int64_t> webhook_retry_base_ms_{kDefaultWebhookRetryBaseMs};
  std::atomic<int64_t> webhook_max_attempts_{kDefaultWebhookMaxAttempts};
  Json api_values_ ABSL_GUARDED_BY(mu_);            // name -> its values
  std::deque<ApiConfig> apis_ ABSL_GUARDED_BY(mu_);  // stable addresses
};

}  // namespace recharge::sandbox
