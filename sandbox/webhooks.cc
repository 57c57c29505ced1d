#include "sandbox/webhooks.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include <boost/asio/redirect_error.hpp>

#include "io/crypto.h"
#include "io/log.h"
#include "io/strings.h"
#include "sandbox/server.h"

namespace recharge::sandbox {
namespace {

constexpr auto kAttemptTimeout = std::chrono::seconds(5);
constexpr int64_t kMaxRetryDelayMs = 30'000;
constexpr size_t kMaxRecords = 10'000;
constexpr size_t kConnectionsPerReceiver = 16;

// The delay before retry number `failed` (1 after the first failure).
int64_t RetryDelayMs(int64_t base_ms, int64_t failed) {
  int64_t delay = base_ms;
  for (int64_t i = 1; i < failed && delay < kMaxRetryDelayMs; ++i) delay *= 2;
  return std::min(delay, kMaxRetryDelayMs);
}

}  // namespace

absl::StatusOr<WebhookUrl> ParseWebhookUrl(std::string_view url) {
  if (url.empty() || url.size() > kMaxNotifyUrlLen || !IsVisibleAscii(url)) {
    return absl::InvalidArgumentError(
        "must be 1-2048 printable ASCII characters without spaces");
  }
  if (url.find('#') != std::string_view::npos) {
    return absl::InvalidArgumentError("must not have a fragment");
  }
  constexpr std::string_view kScheme = "https://";
  if (!url.starts_with(kScheme)) return absl::InvalidArgumentError("must start with https://");
  const size_t path_at = url.find_first_of("/?", kScheme.size());
  std::string_view origin = url.substr(0, path_at);
  if (origin.find('@') != std::string_view::npos) {
    return absl::InvalidArgumentError("must not have user info");
  }
  absl::StatusOr<HttpsEndpoint> endpoint = ParseHttpsUrl(origin);
  if (!endpoint.ok()) return endpoint.status();
  WebhookUrl out;
  out.endpoint = *std::move(endpoint);
  if (path_at == std::string_view::npos) {
    out.target = "/";
  } else if (url[path_at] == '?') {
    out.target = StrCat("/", url.substr(path_at));
  } else {
    out.target = std::string(url.substr(path_at));
  }
  return out;
}

std::string WebhookSignature(const Secret& secret, int64_t t, std::string_view body) {
  return StrCat("t=", t, ",v1=", HexEncode(HmacSha256(secret, StrCat(t, ".", body))));
}

absl::StatusOr<std::unique_ptr<WebhookSender>> WebhookSender::Create(
    std::optional<Secret> secret, std::string ca_file, const SandboxConfig& config, Stats& stats,
    std::vector<std::string> redact) {
  if (secret && !ca_file.empty()) {
    // Fail at start-up, not at the first delivery, if the CA file is bad.
    HttpsClient::Options probe;
    probe.endpoint.host = "localhost";
    probe.ca_file = ca_file;
    absl::StatusOr<std::unique_ptr<HttpsClient>> client = HttpsClient::Create(std::move(probe));
    if (!client.ok()) return client.status();
  }
  return std::unique_ptr<WebhookSender>(new WebhookSender(
      std::move(secret), std::move(ca_file), config, stats, std::move(redact)));
}

WebhookSender::WebhookSender(std::optional<Secret> secret, std::string ca_file,
                             const SandboxConfig& config, Stats& stats,
                             std::vector<std::string> redact)
    : secret_(std::move(secret)),
      ca_file_(std::move(ca_file)),
      config_(config),
      stats_(stats),
      redact_(std::move(redact)) {
  if (!secret_) return;
  stats_.EnableWebhookCounters();
  guard_.emplace(ioc_.get_executor());
  thread_ = std::thread([this] { ioc_.run(); });
}

WebhookSender::~WebhookSender() {
  Stop();
  clients_.clear();  // idle connections close while the io_context exists
}

void WebhookSender::Stop() {
  if (stopping_.exchange(true)) return;
  guard_.reset();
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

void WebhookSender::Send(std::string_view api, std::string event_id, std::string type,
                         std::string url, std::string body) {
  if (!secret_ || stopping_.load()) return;
  absl::StatusOr<WebhookUrl> target = ParseWebhookUrl(url);
  if (!target.ok()) {  // the APIs validate notify_url at create: not reached
    LogError("webhook_bad_url", {{"event_id", event_id}});
    return;
  }
  auto record = std::make_shared<Record>();
  record->event_id = std::move(event_id);
  record->api = std::string(api);
  record->type = std::move(type);
  record->url = std::move(url);
  record->body = std::move(body);
  record->target = *std::move(target);
  {
    std::lock_guard lock(mu_);
    records_.push_back(record);
    if (records_.size() > kMaxRecords) records_.pop_front();
  }
  asio::co_spawn(ioc_, Deliver(std::move(record)), asio::detached);
}

asio::awaitable<void> WebhookSender::Deliver(std::shared_ptr<Record> record) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int64_t attempt = 1;; ++attempt) {
    const int64_t t = static_cast<int64_t>(NowSeconds());
    const std::string signature = WebhookSignature(*secret_, t, record->body);
    Outcome outcome;
    try {
      outcome = co_await Attempt(*record, signature);
    } catch (const std::exception& e) {
      outcome.error = e.what();
    }
    const bool delivered = outcome.status >= 200 && outcome.status < 300;
    {
      std::lock_guard lock(mu_);
      record->attempts = attempt;
      record->delivered = delivered;
      record->last_status = outcome.status;
      record->last_error = outcome.error;
      record->signature = signature;
    }
    stats_.CountWebhookAttempt(delivered);
    const int64_t max_attempts = config_.webhook_max_attempts();
    const bool give_up = !delivered && attempt >= max_attempts;
    if (give_up) stats_.CountWebhookGivenUp();
    LogInfo("webhook_attempt",
            {{"event_id", record->event_id},
             {"type", record->type},
             {"url", SanitizeForLog(record->url, redact_)},
             {"attempt", std::to_string(attempt)},
             {"status", std::to_string(outcome.status)},
             {"error", SanitizeForLog(outcome.error, redact_)},
             {"outcome", delivered ? "delivered" : give_up ? "given_up" : "retrying"}});
    if (delivered || give_up) co_return;
    timer.expires_after(
        std::chrono::milliseconds(RetryDelayMs(config_.webhook_retry_base_ms(), attempt)));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_.load()) co_return;
  }
}

asio::awaitable<WebhookSender::Outcome> WebhookSender::Attempt(const Record& record,
                                                               const std::string& signature) {
  Outcome outcome;
  const std::string origin = StrCat(record.target.endpoint.host, ":", record.target.endpoint.port);
  auto it = clients_.find(origin);
  if (it == clients_.end()) {
    HttpsClient::Options options;
    options.endpoint = record.target.endpoint;
    options.ca_file = ca_file_;
    options.max_connections = kConnectionsPerReceiver;
    absl::StatusOr<std::unique_ptr<HttpsClient>> client = HttpsClient::Create(std::move(options));
    if (!client.ok()) {
      outcome.error = std::string(client.status().message());
      co_return outcome;
    }
    it = clients_.emplace(origin, *std::move(client)).first;
  }
  http::request<http::string_body> request{http::verb::post, record.target.target, 11};
  request.set(http::field::content_type, "application/json");
  request.set(http::field::user_agent, "psp-sandbox-webhooks/1.0");
  request.set("Sandbox-Signature", signature);
  request.body() = record.body;
  // Idempotent: a receiver dedupes by event id, so a request cut on a stale
  // keep-alive connection may be sent again at once.
  HttpsResult result = co_await it->second->Send(
      std::move(request), std::chrono::steady_clock::now() + kAttemptTimeout, true);
  if (!result.status.ok()) {
    outcome.error = std::string(result.status.message());
    co_return outcome;
  }
  outcome.status = static_cast<int>(result.response.result_int());
  if (outcome.status < 200 || outcome.status >= 300) {
    outcome.error = StrCat("HTTP ", outcome.status);
  }
  co_return outcome;
}

Json WebhookSender::List() const {
  Json list = Json::array();
  std::lock_guard lock(mu_);
  for (const std::shared_ptr<Record>& r : records_) {
    Json item = Json::object();
    item["event_id"] = r->event_id;
    item["api"] = r->api;
    item["type"] = r->type;
    item["url"] = r->url;
    item["body"] = r->body;
    item["attempts"] = r->attempts;
    item["delivered"] = r->delivered;
    item["last_status"] = r->last_status;
    item["last_error"] = r->last_error;
    item["signature"] = r->signature;
    list.push_back(std::move(item));
  }
  Json out = Json::object();
  out["webhooks"] = std::move(list);
  return out;
}

}  // namespace recharge::sandbox
