#include "adapters/card/card_adapter.h"

#include "adapters/adapter_registry.h"
#include "adapters/card/transformers.h"
#include "io/strings.h"

namespace recharge {

absl::StatusOr<std::unique_ptr<PaymentAdapter>> CardAdapter::FromConfig(const std::string& name,
                                                                        const ConfigNode& config) {
  if (absl::Status s = CheckAdapterKeys(
          config, {"endpoint", "ca_file", "secret_file", "timeout", "pool_size", "notify_url",
                   "webhook_secret_file", "webhook_secret_env", "webhook_tolerance",
                   "action_expiry"});
      !s.ok()) {
    return s;
  }
  absl::StatusOr<HttpProvider::Options> options = HttpProvider::ParseOptions(config);
  if (!options.ok()) return options.status();
  absl::StatusOr<Secret> key = ReadSecretField(config, "secret_file");
  if (!key.ok()) return key.status();
  absl::StatusOr<NotificationSettings> notifications = NotificationSettings::FromConfig(config);
  if (!notifications.ok()) return notifications.status();
  absl::StatusOr<std::unique_ptr<HttpProvider>> http = HttpProvider::Create(*std::move(options));
  if (!http.ok()) return config.Child("ca_file").Error(std::string(http.status().message()));
  return std::make_unique<CardAdapter>(name, *std::move(http), *std::move(key),
                                       *std::move(notifications));
}

asio::awaitable<ChargeOutcome> CardAdapter::Charge(const ChargeRequest& request) {
  HttpsResult r = co_await http_->Send(
      card::BuildChargeRequest(request, api_key_, notifications_.notify_url), request.deadline,
      /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  ChargeOutcome out = card::ParseChargeResponse(r.response.result_int(), r.response.body());
  if (out.next_action) out.next_action->expires_at = notifications_.ActionExpiresAt();
  co_return out;
}

absl::StatusOr<ProviderNotification> CardAdapter::ReadNotification(
    const InboundNotification& notification) const {
  if (absl::Status s = notifications_.Verify(notification, "Sandbox-Signature"); !s.ok()) return s;
  return card::ParseNotification(notification.body);
}

asio::awaitable<ChargeOutcome> CardAdapter::Capture(const PaymentOperation& op) {
  HttpsResult r = co_await http_->Send(card::BuildHoldRequest("capture", op, api_key_), op.deadline,
                                       /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return card::ParseHoldResponse("capture", r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> CardAdapter::Void(const PaymentOperation& op) {
  HttpsResult r = co_await http_->Send(card::BuildHoldRequest("void", op, api_key_), op.deadline,
                                       /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return card::ParseHoldResponse("void", r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> CardAdapter::Refund(const PaymentOperation& op) {
  HttpsResult r = co_await http_->Send(card::BuildRefundRequest(op, api_key_), op.deadline,
                                       /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return card::ParseRefundResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> CardAdapter::LookupRefund(
    std::string_view idempotency_key, std::chrono::steady_clock::time_point deadline) {
  HttpsResult r = co_await http_->Send(card::BuildRefundLookupRequest(idempotency_key, api_key_),
                                       deadline, /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return card::ParseRefundLookupResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> CardAdapter::Lookup(std::string_view idempotency_key,
                                                   std::chrono::steady_clock::time_point deadline) {
  HttpsResult r = co_await http_->Send(card::BuildLookupRequest(idempotency_key, api_key_),
                                       deadline, /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return card::ParseLookupResponse(r.response.result_int(), r.response.body());
}

}  // namespace recharge
