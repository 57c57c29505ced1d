// PayPalAdapter: captures approved PayPal orders (Orders v2) over HTTPS.
// Authenticates with an OAuth2 client-credentials token, cached until shortly
// before it expires and fetched once for all concurrent calls (TokenCache).
// The idempotency key goes out as `PayPal-Request-Id`, so a retry — after a
// refused token, or from the reconciler — never captures twice. Also full
// refunds of a capture (POST /v2/payments/captures/{id}/refund), idempotent by
// their own key and authorised with the same cached token.
//
// Thread-safety: all calls may run concurrently from any thread.
#pragma once

#include <memory>
#include <string>

#include "adapters/http_provider.h"
#include "adapters/payment_adapter.h"
#include "adapters/paypal/token_cache.h"
#include "adapters/paypal/transformers.h"

namespace recharge {

class PayPalAdapter final : public PaymentAdapter {
 public:
  // Settings: endpoint, ca_file, credentials_file, timeout, pool_size,
  // token_refresh_margin (default 60s). See configs/adapters.yaml.
  static absl::StatusOr<std::unique_ptr<PaymentAdapter>> FromConfig(const std::string& name,
                                                                    const ConfigNode& config);
  PayPalAdapter(std::string name, std::unique_ptr<HttpProvider> http,
                paypal::Credentials credentials, std::chrono::milliseconds refresh_margin);

  std::string_view name() const override { return name_; }
  asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) override;
  asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                        std::chrono::steady_clock::time_point deadline) override;
  // op.provider_reference: the capture id Charge answered.
  asio::awaitable<ChargeOutcome> Refund(const PaymentOperation& op) override;
  asio::awaitable<ChargeOutcome> LookupRefund(std::string_view idempotency_key,
                                              std::chrono::steady_clock::time_point deadline) override;
  uint64_t token_fetches() const { return tokens_.fetches(); }

 private:
  asio::awaitable<absl::StatusOr<AccessToken>> FetchToken(
      std::chrono::steady_clock::time_point deadline);
  // Sends the request `build(token)` makes; on a refused token, fetches a new
  // one and sends once more.
  template <typename Build>
  asio::awaitable<HttpsResult> SendAuthorized(Build build,
                                              std::chrono::steady_clock::time_point deadline);

  std::string name_;
  std::unique_ptr<HttpProvider> http_;
  paypal::Credentials credentials_;
  TokenCache tokens_;
};

}  // namespace recharge
