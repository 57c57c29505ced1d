// EWalletAdapter: one adapter type for regional e-wallets. Each configured
// instance is one provider account (`provider: gcash`, `regions: [PH]`,
// `currencies: [PHP]`); requests are signed with the instance's HMAC secret,
// and the idempotency key goes out as `X-Idempotency-Key`. Also full refunds
// of a payment, at the instance's own provider and idempotent by their own
// key: refund a payment through the instance that took it.
//
// Thread-safety: all calls may run concurrently from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "adapters/http_provider.h"
#include "adapters/payment_adapter.h"

namespace recharge {

class EWalletAdapter final : public PaymentAdapter {
 public:
  // Settings: provider, regions, currencies, endpoint, ca_file, secret_file,
  // timeout, pool_size. See configs/adapters.yaml.
  static absl::StatusOr<std::unique_ptr<PaymentAdapter>> FromConfig(const std::string& name,
                                                                    const ConfigNode& config);
  EWalletAdapter(std::string name, std::string provider, std::unique_ptr<HttpProvider> http,
                 Secret secret)
      : name_(std::move(name)),
        provider_(std::move(provider)),
        http_(std::move(http)),
        secret_(std::move(secret)) {}

  std::string_view name() const override { return name_; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) override;
  asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                        std::chrono::steady_clock::time_point deadline) override;
  // op.provider_reference: the payment id Charge answered.
  asio::awaitable<ChargeOutcome> Refund(const PaymentOperation& op) override;
  asio::awaitable<ChargeOutcome> LookupRefund(std::string_view idempotency_key,
                                              std::chrono::steady_clock::time_point deadline) override;

 private:
  std::string name_;
  std::string provider_;
  std::unique_ptr<HttpProvider> http_;
  Secret secret_;
};

}  // namespace recharge
