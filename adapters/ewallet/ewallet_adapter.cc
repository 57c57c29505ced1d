#include "adapters/ewallet/ewallet_adapter.h"

#include <ctime>

#include "adapters/adapter_registry.h"
#include "adapters/ewallet/transformers.h"
#include "io/strings.h"

namespace recharge {
namespace {

int64_t UnixNow() { return static_cast<int64_t>(std::time(nullptr)); }

}  // namespace

absl::StatusOr<std::unique_ptr<PaymentAdapter>> EWalletAdapter::FromConfig(
    const std::string& name, const ConfigNode& config) {
  if (absl::Status s = CheckAdapterKeys(
          config, {"provider", "endpoint", "ca_file", "secret_file", "timeout", "pool_size", "flow",
                   "action", "notify_url", "webhook_secret_file", "webhook_secret_env",
                   "webhook_tolerance", "action_expiry"});
      !s.ok()) {
    return s;
  }
  ewallet::PaymentFlow flow;
  absl::StatusOr<std::string> flow_name = config.GetString("flow", "direct");
  if (!flow_name.ok()) return flow_name.status();
  if (*flow_name != "direct" && *flow_name != "redirect") {
    return config.Child("flow").Error("must be direct or redirect");
  }
  flow.redirect = *flow_name == "redirect";
  absl::StatusOr<std::string> action = config.GetString("action", "redirect");
  if (!action.ok()) return action.status();
  if (*action == "deep_link") {
    flow.action = NextActionInfo::Type::kDeepLink;
  } else if (*action == "qr") {
    flow.action = NextActionInfo::Type::kQr;
  } else if (*action != "redirect") {
    return config.Child("action").Error("must be redirect, deep_link or qr");
  }
  absl::StatusOr<NotificationSettings> notifications = NotificationSettings::FromConfig(config);
  if (!notifications.ok()) return notifications.status();
  flow.notify_url = notifications->notify_url;
  absl::StatusOr<std::string> provider = config.GetString("provider");
  if (!provider.ok()) return provider.status();
  if (provider->empty()) return config.Child("provider").Error("must name the wallet, e.g. gcash");
  // `regions` and `currencies` are read by the Router, which never sends this
  // account a request outside them (INVALID_ARGUMENT before any charge).
  absl::StatusOr<HttpProvider::Options> options = HttpProvider::ParseOptions(config);
  if (!options.ok()) return options.status();
  absl::StatusOr<Secret> secret = ReadSecretField(config, "secret_file");
  if (!secret.ok()) return secret.status();
  absl::StatusOr<std::unique_ptr<HttpProvider>> http = HttpProvider::Create(*std::move(options));
  if (!http.ok()) return config.Child("ca_file").Error(std::string(http.status().message()));
  return std::make_unique<EWalletAdapter>(name, *provider, *std::move(http), *std::move(secret),
                                          std::move(flow), *std::move(notifications));
}

asio::awaitable<ChargeOutcome> EWalletAdapter::Charge(const ChargeRequest& request) {
  HttpsResult r = co_await http_->Send(
      ewallet::BuildPaymentRequest(request, provider_, secret_, UnixNow(), flow_),
      request.deadline, /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  ChargeOutcome out =
      ewallet::ParsePaymentResponse(r.response.result_int(), r.response.body(), flow_.action);
  if (out.next_action) out.next_action->expires_at = notifications_.ActionExpiresAt();
  co_return out;
}

asio::awaitable<ChargeOutcome> EWalletAdapter::Void(const PaymentOperation& op) {
  HttpsResult r = co_await http_->Send(
      ewallet::BuildCancelRequest(op, provider_, secret_, UnixNow()), op.deadline,
      /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return ewallet::ParseCancelResponse(r.response.result_int(), r.response.body());
}

absl::StatusOr<ProviderNotification> EWalletAdapter::ReadNotification(
    const InboundNotification& notification) const {
  if (absl::Status s = notifications_.Verify(notification, "Sandbox-Signature"); !s.ok()) return s;
  return ewallet::ParseNotification(notification.body);
}

asio::awaitable<ChargeOutcome> EWalletAdapter::Lookup(std::string_view idempotency_key,
                                                      std::chrono::steady_clock::time_point deadline) {
  HttpsResult r = co_await http_->Send(
      ewallet::BuildLookupRequest(idempotency_key, provider_, secret_, UnixNow()), deadline,
      /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return ewallet::ParseLookupResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> EWalletAdapter::Refund(const PaymentOperation& op) {
  HttpsResult r = co_await http_->Send(
      ewallet::BuildRefundRequest(op, provider_, secret_, UnixNow()), op.deadline,
      /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return ewallet::ParseRefundResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> EWalletAdapter::LookupRefund(
    std::string_view idempotency_key, std::chrono::steady_clock::time_point deadline) {
  HttpsResult r = co_await http_->Send(
      ewallet::BuildRefundLookupRequest(idempotency_key, provider_, secret_, UnixNow()), deadline,
      /*idempotent=*/true);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return ewallet::ParseRefundLookupResponse(r.response.result_int(), r.response.body());
}

}  // namespace recharge
