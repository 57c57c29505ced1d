// ExampleAdapter: the template for a new payment adapter type. One instance
// is one account at the provider, built from its block in
// configs/adapters.yaml. Transport and auth live here; the wire format lives
// in transformers.*.
//
// Thread-safety: Charge and Lookup may run concurrently from any thread.
#pragma once

#include <memory>
#include <string>

#include "adapters/http_provider.h"
#include "adapters/payment_adapter.h"

namespace recharge {

class ExampleAdapter final : public PaymentAdapter {
 public:
  // Settings: endpoint, ca_file, secret_file, timeout, pool_size (plus the
  // regions, currencies and circuit_breaker every instance takes).
  static absl::StatusOr<std::unique_ptr<PaymentAdapter>> FromConfig(const std::string& name,
                                                                    const ConfigNode& config);
  ExampleAdapter(std::string name, std::unique_ptr<HttpProvider> http, Secret api_key)
      : name_(std::move(name)), http_(std::move(http)), api_key_(std::move(api_key)) {}

  std::string_view name() const override { return name_; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) override;
  asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                        std::chrono::steady_clock::time_point deadline) override;

 private:
  std::string name_;
  std::unique_ptr<HttpProvider> http_;
  Secret api_key_;
};

}  // namespace recharge
