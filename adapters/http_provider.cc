#include "adapters/http_provider.h"

#include "io/log.h"
#include "io/strings.h"

namespace recharge {

absl::StatusOr<HttpProvider::Options> HttpProvider::ParseOptions(const ConfigNode& config) {
  Options options;
  absl::StatusOr<std::string> endpoint = config.GetString("endpoint");
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<HttpsEndpoint> parsed = ParseHttpsUrl(*endpoint);
  if (!parsed.ok()) return config.Child("endpoint").Error(std::string(parsed.status().message()));
  options.endpoint = *parsed;
  absl::StatusOr<std::string> ca = config.GetString("ca_file", "");
  if (!ca.ok()) return ca.status();
  options.ca_file = *ca;
  absl::StatusOr<std::chrono::milliseconds> timeout =
      config.GetDuration("timeout", options.timeout);
  if (!timeout.ok()) return timeout.status();
  if (timeout->count() <= 0) return config.Child("timeout").Error("must be positive");
  options.timeout = *timeout;
  absl::StatusOr<int64_t> pool =
      config.GetInt("pool_size", static_cast<int64_t>(options.pool_size), 1, 65536);
  if (!pool.ok()) return pool.status();
  options.pool_size = static_cast<size_t>(*pool);
  return options;
}

absl::StatusOr<std::unique_ptr<HttpProvider>> HttpProvider::Create(Options options) {
  HttpsClient::Options http;
  http.endpoint = options.endpoint;
  http.ca_file = options.ca_file;
  http.max_connections = options.pool_size;
  absl::StatusOr<std::unique_ptr<HttpsClient>> client = HttpsClient::Create(std::move(http));
  if (!client.ok()) return client.status();
  return std::unique_ptr<HttpProvider>(new HttpProvider(std::move(options), *std::move(client)));
}

std::chrono::steady_clock::time_point HttpProvider::Deadline(
    std::chrono::steady_clock::time_point caller) const {
  return std::min(caller, std::chrono::steady_clock::now() + options_.timeout);
}

asio::awaitable<HttpsResult> HttpProvider::Send(http::request<http::string_body> request,
                                                std::chrono::steady_clock::time_point caller_deadline,
                                                bool idempotent) {
  // Debug lines name the method and the path only: never a header (the
  // credentials) or a body (card data).
  std::string line;
  if (DebugLogging()) line = StrCat(request.method_string(), " ", request.target());
  HttpsResult r = co_await client_->Send(std::move(request), Deadline(caller_deadline), idempotent);
  if (!line.empty()) {
    LogDebug("provider_call", {{"request", line},
                               {"http_status", r.status.ok() ? StrCat(r.response.result_int()) : ""},
                               {"error", std::string(r.status.message())}});
  }
  co_return r;
}

ChargeOutcome TransportFailure(const HttpsResult& result, bool lookup) {
  ChargeOutcome out;
  out.result = !lookup && !result.maybe_sent ? ChargeResult::kFailed : ChargeResult::kUnknown;
  out.message = std::string(result.status.message());
  return out;
}

absl::StatusOr<Secret> ReadSecretField(const ConfigNode& config, std::string_view key) {
  absl::StatusOr<std::string> file = config.GetString(key);
  if (!file.ok()) return file.status();
  absl::StatusOr<Secret> secret = ReadSecretFile(*file);
  if (!secret.ok()) return config.Child(key).Error(std::string(secret.status().message()));
  return secret;
}

}  // namespace recharge
