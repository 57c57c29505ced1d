// EWalletAdapter: one adapter type for regional e-wallets. Each configured
// instance is one provider account (`provider: gcash`, `regions: [PH]`,
// `currencies: [PHP]`); requests are signed with the instance's HMAC secret,
// and the idempotency key goes out as `X-Idempotency-Key`. Also full refunds
// of a payment, at the instance's own provider and idempotent by their own
// key: refund a payment through the instance that took it.
//
// `flow: redirect` (per instance) makes payments the account holder
// approves in the wallet: Charge answers kRequiresAction with the wallet's
// link (`action: redirect | deep_link | qr`), the wallet notifies the
// instance's notify_url when the payment is approved or cancelled, and an
// approval not given within action_expiry is cancelled (Void).
//
// Thread-safety: all calls may run concurrently from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "adapters/ewallet/transformers.h"
#include "adapters/http_provider.h"
#include "adapters/notifications.h"
#include "adapters/payment_adapter.h"

namespace recharge {

class EWalletAdapter final : public PaymentAdapter {
 public:
  // Settings: provider, regions, currencies, endpoint, ca_file, secret_file,
  // timeout, pool_size. See configs/adapters.yaml.
  static absl::StatusOr<std::unique_ptr<PaymentAdapter>> FromConfig(const std::string& name,
                                                                    const ConfigNode& config);
  EWalletAdapter(std::string name, std::string provider, std::unique_ptr<HttpProvider> http,
                 Secret secret, ewallet::PaymentFlow flow = {},
                 NotificationSettings notifications = {})
      : name_(std::move(name)),
        provider_(std::move(provider)),
        http_(std::move(http)),
        secret_(std::move(secret)),
        flow_(std::move(flow)),
        notifications_(std::move(notifications)) {}

  std::string_view name() const override { return name_; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) override;
  asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                        std::chrono::steady_clock::time_point deadline) override;
  // op.provider_reference: the payment id Charge answered.
  asio::awaitable<ChargeOutcome> Refund(const PaymentOperation& op) override;
  asio::awaitable<ChargeOutcome> LookupRefund(std::string_view idempotency_key,
                                              std::chrono::steady_clock::time_point deadline) override;
  // Cancels a payment still pending approval (redirect flow): kApproved once
  // cancelled, kDeclined if the account holder completed it first.
  asio::awaitable<ChargeOutcome> Void(const PaymentOperation& op) override;
  // payment.succeeded / payment.failed / payment.cancelled, signed with
  // Sandbox-Signature.
  absl::StatusOr<ProviderNotification> ReadNotification(
      const InboundNotification& notification) const override;

 private:
  std::string name_;
  std::string provider_;
  std::unique_ptr<HttpProvider> http_;
  Secret secret_;
  ewallet::PaymentFlow flow_;
  NotificationSettings notifications_;
};

}  // namespace recharge
