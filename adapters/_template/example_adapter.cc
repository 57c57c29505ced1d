#include "adapters/_template/example_adapter.h"

#include "adapters/_template/transformers.h"
#include "adapters/adapter_registry.h"

namespace recharge {

absl::StatusOr<std::unique_ptr<PaymentAdapter>> ExampleAdapter::FromConfig(
    const std::string& name, const ConfigNode& config) {
  if (absl::Status s = CheckAdapterKeys(config, {"endpoint", "ca_file", "secret_file", "timeout",
                                                "pool_size"});
      !s.ok()) {
    return s;
  }
  absl::StatusOr<HttpProvider::Options> options = HttpProvider::ParseOptions(config);
  if (!options.ok()) return options.status();
  absl::StatusOr<Secret> key = ReadSecretField(config, "secret_file");
  if (!key.ok()) return key.status();
  absl::StatusOr<std::unique_ptr<HttpProvider>> http = HttpProvider::Create(*std::move(options));
  if (!http.ok()) return config.Child("ca_file").Error(std::string(http.status().message()));
  return std::make_unique<ExampleAdapter>(name, *std::move(http), *std::move(key));
}

asio::awaitable<ChargeOutcome> ExampleAdapter::Charge(const ChargeRequest& request) {
  // The idempotency key travels with the request, so resending is safe.
  HttpsResult r = co_await http_->Send(example::BuildChargeRequest(request, api_key_),
                                       request.deadline, /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return example::ParseChargeResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> ExampleAdapter::Lookup(std::string_view idempotency_key,
                                                      std::chrono::steady_clock::time_point deadline) {
  HttpsResult r = co_await http_->Send(example::BuildLookupRequest(idempotency_key, api_key_),
                                       deadline, /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return example::ParseLookupResponse(r.response.result_int(), r.response.body());
}

}  // namespace recharge
