#include "sandbox/config.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "io/strings.h"

namespace recharge::sandbox {
namespace {

constexpr std::string_view kCommon[] = {"latency_ms", "latency_jitter_ms", "error_rate",
                                        "timeout_mode"};

// Top-level only: no per-API copy.
constexpr std::string_view kGlobal[] = {"webhook_retry_base_ms", "webhook_max_attempts"};

bool IsCommon(std::string_view name) {
  return std::find(std::begin(kCommon), std::end(kCommon), name) != std::end(kCommon);
}

bool IsGlobal(std::string_view name) {
  return std::find(std::begin(kGlobal), std::end(kGlobal), name) != std::end(kGlobal);
}

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

double Uniform01() { return std::uniform_real_distribution<double>(0.0, 1.0)(Rng()); }

// One field's value, checked and normalised (ints stay ints where Python's
// sandbox kept them), or an INVALID_ARGUMENT with the caller's message.
absl::StatusOr<Json> Check(const std::string& name, const Json& value) {
  if (name == "timeout_mode") {
    if (value.is_string() && (value == "charge" || value == "drop")) return value;
    return absl::InvalidArgumentError("timeout_mode must be one of: charge, drop");
  }
  if (value.is_boolean() || !value.is_number() || std::isnan(value.get<double>())) {
    return absl::InvalidArgumentError(StrCat(name, " must be a number"));
  }
  const double v = value.get<double>();
  const bool integral = std::isfinite(v) && std::floor(v) == v;
  if (name == "error_rate") {
    if (!(v >= 0.0 && v <= 1.0)) {
      return absl::InvalidArgumentError("error_rate must be between 0 and 1");
    }
    return Json(v);
  }
  if (name == "token_ttl_s") {
    if (!integral || v < 1 || v > static_cast<double>(kMaxTokenTtlS)) {
      return absl::InvalidArgumentError(
          StrCat("token_ttl_s must be an integer between 1 and ", kMaxTokenTtlS));
    }
    return Json(static_cast<int64_t>(v));
  }
  if (name == "webhook_retry_base_ms") {
    if (!integral || v < 1 || v > kMaxLatencyMs) {
      return absl::InvalidArgumentError(
          StrCat("webhook_retry_base_ms must be an integer between 1 and ",
                 static_cast<int64_t>(kMaxLatencyMs)));
    }
    return Json(static_cast<int64_t>(v));
  }
  if (name == "webhook_max_attempts") {
    if (!integral || v < 1 || v > static_cast<double>(kMaxWebhookAttempts)) {
      return absl::InvalidArgumentError(
          StrCat("webhook_max_attempts must be an integer between 1 and ", kMaxWebhookAttempts));
    }
    return Json(static_cast<int64_t>(v));
  }
  if (name == "latency_ms" || name == "latency_jitter_ms") {
    if (!(v >= 0 && v <= kMaxLatencyMs)) {
      return absl::InvalidArgumentError(
          StrCat(name, " must be between 0 and ", static_cast<int64_t>(kMaxLatencyMs)));
    }
    return integral ? Json(static_cast<int64_t>(v)) : Json(v);
  }
  return absl::InvalidArgumentError(StrCat("unknown config field: ", name));
}

}  // namespace

double ApiConfig::DelaySeconds() const {
  const double base = latency_ms_.load(std::memory_order_relaxed);
  const double jitter = jitter_ms_.load(std::memory_order_relaxed);
  const double extra = jitter > 0 ? Uniform01() * jitter : 0.0;
  return std::max(0.0, (base + extra) / 1000.0);
}

bool ApiConfig::InjectError() const {
  const double rate = error_rate_.load(std::memory_order_relaxed);
  return rate > 0 && Uniform01() < rate;
}

SandboxConfig::SandboxConfig() {
  values_ = Json::object();
  values_["latency_ms"] = 0;
  values_["latency_jitter_ms"] = 0;
  values_["error_rate"] = 0.0;
  values_["timeout_mode"] = "charge";
  global_values_ = Json::object();
  global_values_["webhook_retry_base_ms"] = kDefaultWebhookRetryBaseMs;
  global_values_["webhook_max_attempts"] = kDefaultWebhookMaxAttempts;
  api_values_ = Json::object();
}

ApiConfig& SandboxConfig::Register(const std::string& name, const Json& extra) {
  std::lock_guard lock(mu_);
  Json values = values_;
  for (auto& [k, v] : extra.items()) values[k] = v;
  api_values_[name] = values;
  ApiConfig& api = apis_.emplace_back(name);
  Publish(values, api);
  return api;
}

void SandboxConfig::Publish(const Json& values, ApiConfig& api) {
  api.latency_ms_.store(values["latency_ms"].get<double>(), std::memory_order_relaxed);
  api.jitter_ms_.store(values["latency_jitter_ms"].get<double>(), std::memory_order_relaxed);
  api.error_rate_.store(values["error_rate"].get<double>(), std::memory_order_relaxed);
  api.drop_.store(values["timeout_mode"] == "drop", std::memory_order_relaxed);
  if (values.contains("token_ttl_s")) {
    api.token_ttl_s_.store(values["token_ttl_s"].get<int64_t>(), std::memory_order_relaxed);
  }
}

absl::StatusOr<Json> SandboxConfig::Update(const Json& changes) {
  std::lock_guard lock(mu_);
  Json top = Json::object();
  Json global = Json::object();
  std::vector<std::pair<std::string, Json>> blocks;
  std::vector<std::string> unknown;
  for (auto& [key, value] : changes.items()) {
    if (IsCommon(key)) {
      absl::StatusOr<Json> checked = Check(key, value);
      if (!checked.ok()) return checked.status();
      top[key] = *std::move(checked);
    } else if (IsGlobal(key)) {
      absl::StatusOr<Json> checked = Check(key, value);
      if (!checked.ok()) return checked.status();
      global[key] = *std::move(checked);
    } else if (api_values_.contains(key)) {
      if (!value.is_object()) return absl::InvalidArgumentError(StrCat(key, " must be an object"));
      const Json& fields = api_values_[key];
      std::vector<std::string> bad;
      for (auto& [field, unused] : value.items()) {
        if (!fields.contains(field)) bad.push_back(StrCat(key, ".", field));
      }
      if (!bad.empty()) {
        unknown.insert(unknown.end(), bad.begin(), bad.end());
        continue;
      }
      Json block = Json::object();
      for (auto& [field, v] : value.items()) {
        absl::StatusOr<Json> checked = Check(field, v);
        if (!checked.ok()) return checked.status();
        block[field] = *std::move(checked);
      }
      blocks.emplace_back(key, std::move(block));
    } else {
      unknown.push_back(key);
    }
  }
  if (!unknown.empty()) {
    std::sort(unknown.begin(), unknown.end());
    return absl::InvalidArgumentError(StrCat("unknown config field(s): ", StrJoin(unknown, ", ")));
  }
  for (auto& [k, v] : top.items()) {
    values_[k] = v;
    for (auto& [name, vals] : api_values_.items()) vals[k] = v;
  }
  for (auto& [name, block] : blocks) {
    for (auto& [k, v] : block.items()) api_values_[name][k] = v;
  }
  for (auto& [k, v] : global.items()) global_values_[k] = v;
  for (ApiConfig& api : apis_) Publish(api_values_[api.name()], api);
  webhook_retry_base_ms_.store(global_values_["webhook_retry_base_ms"].get<int64_t>(),
                               std::memory_order_relaxed);
  webhook_max_attempts_.store(global_values_["webhook_max_attempts"].get<int64_t>(),
                              std::memory_order_relaxed);
  return SnapshotLocked();
}

Json SandboxConfig::SnapshotLocked() const {
  Json snap = values_;
  for (auto& [k, v] : global_values_.items()) snap[k] = v;
  for (auto& [name, vals] : api_values_.items()) snap[name] = vals;
  return snap;
}

Json SandboxConfig::Snapshot() const {
  std::lock_guard lock(mu_);
  return SnapshotLocked();
}

}  // namespace recharge::sandbox
