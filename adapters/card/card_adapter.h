// CardAdapter: card payments through a Stripe-style charges API over HTTPS,
// with a keep-alive connection pool, a per-call timeout and the idempotency
// key sent as `Idempotency-Key` (so a retry can never charge twice).
//
// Thread-safety: Charge and Lookup may run concurrently from any thread.
#pragma once

#include <memory>
#include <string>

#include "adapters/payment_adapter.h"
#include "io/config_node.h"
#include "io/https_client.h"

namespace recharge {

class CardAdapter final : public PaymentAdapter {
 public:
  struct Options {
    std::string name;
    HttpsEndpoint endpoint;
    std::string ca_file;
    Secret api_key;
    std::chrono::milliseconds timeout{5000};
    size_t pool_size = 32;
  };
  static absl::StatusOr<std::unique_ptr<CardAdapter>> Create(Options options);
  // Reads the `card` settings of configs/adapters.yaml (see that file).
  static absl::StatusOr<std::unique_ptr<PaymentAdapter>> FromConfig(const std::string& name,
                                                                    const ConfigNode& config);

  std::string_view name() const override { return options_.name; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) override;
  asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                        std::chrono::steady_clock::time_point deadline) override;

 private:
  CardAdapter(Options options, std::unique_ptr<HttpsClient> client);
  std::chrono::steady_clock::time_point Deadline(std::chrono::steady_clock::time_point caller) const;

  Options options_;
  std::unique_ptr<HttpsClient> client_;
};

}  // namespace recharge
