#include "adapters/card/card_adapter.h"

#include "io/strings.h"
#include "adapters/adapter_registry.h"
#include "adapters/card/transformers.h"

namespace recharge {

CardAdapter::CardAdapter(Options options, std::unique_ptr<HttpsClient> client)
    : options_(std::move(options)), client_(std::move(client)) {}

absl::StatusOr<std::unique_ptr<CardAdapter>> CardAdapter::Create(Options options) {
  HttpsClient::Options http;
  http.endpoint = options.endpoint;
  http.ca_file = options.ca_file;
  http.max_idle_connections = options.pool_size;
  absl::StatusOr<std::unique_ptr<HttpsClient>> client = HttpsClient::Create(std::move(http));
  if (!client.ok()) return client.status();
  return std::unique_ptr<CardAdapter>(new CardAdapter(std::move(options), *std::move(client)));
}

absl::StatusOr<std::unique_ptr<PaymentAdapter>> CardAdapter::FromConfig(const std::string& name,
                                                                        const ConfigNode& config) {
  if (absl::Status s = CheckAdapterKeys(config, {"endpoint", "ca_file", "secret_file", "timeout",
                                                "pool_size"});
      !s.ok()) {
    return s;
  }
  Options options;
  options.name = name;
  absl::StatusOr<std::string> endpoint = config.GetString("endpoint");
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<HttpsEndpoint> parsed = ParseHttpsUrl(*endpoint);
  if (!parsed.ok()) return config.Child("endpoint").Error(std::string(parsed.status().message()));
  options.endpoint = *parsed;
  absl::StatusOr<std::string> ca = config.GetString("ca_file", "");
  if (!ca.ok()) return ca.status();
  options.ca_file = *ca;
  absl::StatusOr<std::string> secret_file = config.GetString("secret_file");
  if (!secret_file.ok()) return secret_file.status();
  absl::StatusOr<Secret> key = ReadSecretFile(*secret_file);
  if (!key.ok()) return config.Child("secret_file").Error(std::string(key.status().message()));
  options.api_key = *std::move(key);
  absl::StatusOr<std::chrono::milliseconds> timeout =
      config.GetDuration("timeout", std::chrono::milliseconds(5000));
  if (!timeout.ok()) return timeout.status();
  options.timeout = *timeout;
  absl::StatusOr<int64_t> pool = config.GetInt("pool_size", 32, 1, 4096);
  if (!pool.ok()) return pool.status();
  options.pool_size = static_cast<size_t>(*pool);
  absl::StatusOr<std::unique_ptr<CardAdapter>> adapter = Create(std::move(options));
  if (!adapter.ok()) return config.Child("ca_file").Error(std::string(adapter.status().message()));
  return std::unique_ptr<PaymentAdapter>(*std::move(adapter));
}

std::chrono::steady_clock::time_point CardAdapter::Deadline(
    std::chrono::steady_clock::time_point caller) const {
  return std::min(caller, std::chrono::steady_clock::now() + options_.timeout);
}

asio::awaitable<ChargeOutcome> CardAdapter::Charge(const ChargeRequest& request) {
  HttpsResult r = co_await client_->Send(card::BuildChargeRequest(request, options_.api_key),
                                         Deadline(request.deadline), /*idempotent=*/true);
  if (!r.status.ok()) {
    ChargeOutcome out;
    out.result = r.maybe_sent ? ChargeResult::kUnknown : ChargeResult::kFailed;
    out.message = std::string(r.status.message());
    co_return out;
  }
  co_return card::ParseChargeResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> CardAdapter::Lookup(std::string_view idempotency_key,
                                                   std::chrono::steady_clock::time_point deadline) {
  HttpsResult r = co_await client_->Send(card::BuildLookupRequest(idempotency_key, options_.api_key),
                                         Deadline(deadline), /*idempotent=*/true);
  if (!r.status.ok()) {
    ChargeOutcome out;
    out.result = ChargeResult::kUnknown;
    out.message = std::string(r.status.message());
    co_return out;
  }
  co_return card::ParseLookupResponse(r.response.result_int(), r.response.body());
}

}  // namespace recharge
