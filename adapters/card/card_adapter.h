// CardAdapter: card payments through a Stripe-style charges API over HTTPS
// (form-encoded POST /v1/charges, bearer secret key), with the idempotency
// key sent as `Idempotency-Key` so that a retry can never charge twice.
// Also authorisation holds (capture=false) with capture and void, and full
// refunds (POST /v1/refunds), each idempotent by its own key.
//
// Thread-safety: Charge and Lookup may run concurrently from any thread.
#pragma once

#include <memory>
#include <string>

#include "adapters/http_provider.h"
#include "adapters/notifications.h"
#include "adapters/payment_adapter.h"
#include "io/config_node.h"

namespace recharge {

class CardAdapter final : public PaymentAdapter {
 public:
  // Reads the `card` settings of configs/adapters.yaml (see that file).
  static absl::StatusOr<std::unique_ptr<PaymentAdapter>> FromConfig(const std::string& name,
                                                                    const ConfigNode& config);
  CardAdapter(std::string name, std::unique_ptr<HttpProvider> http, Secret api_key,
              NotificationSettings notifications = {})
      : name_(std::move(name)),
        http_(std::move(http)),
        api_key_(std::move(api_key)),
        notifications_(std::move(notifications)) {}

  std::string_view name() const override { return name_; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) override;
  asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                        std::chrono::steady_clock::time_point deadline) override;
  bool SupportsHolds() const override { return true; }
  asio::awaitable<ChargeOutcome> Capture(const PaymentOperation& op) override;
  asio::awaitable<ChargeOutcome> Void(const PaymentOperation& op) override;
  asio::awaitable<ChargeOutcome> Refund(const PaymentOperation& op) override;
  asio::awaitable<ChargeOutcome> LookupRefund(std::string_view idempotency_key,
                                              std::chrono::steady_clock::time_point deadline) override;
  // charge.authenticated / charge.authentication_failed, signed with
  // Sandbox-Signature.
  absl::StatusOr<ProviderNotification> ReadNotification(
      const InboundNotification& notification) const override;

 private:
  std::string name_;
  std::unique_ptr<HttpProvider> http_;
  Secret api_key_;
  NotificationSettings notifications_;
};

}  // namespace recharge
