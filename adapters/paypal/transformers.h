// Wire mapping for the PayPal adapter: OAuth2 client-credentials token
// requests, Orders v2 capture with `PayPal-Request-Id`, and PayPal's error
// names mapped onto the shared ChargeOutcome. Pure functions, no I/O.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "adapters/paypal/token_cache.h"
#include "io/https_client.h"

namespace recharge::paypal {

struct Credentials {
  std::string client_id;
  Secret client_secret;
};
// The credentials file: JSON {"client_id":..,"client_secret":..}, or two
// lines (client id, then secret). Errors never contain the secret.
absl::StatusOr<Credentials> ParseCredentials(std::string_view text);

http::request<http::string_body> BuildTokenRequest(const Credentials& credentials);
// The token and its lifetime from a token response.
absl::StatusOr<AccessToken> ParseTokenResponse(int http_status, std::string_view body,
                                               std::chrono::steady_clock::time_point now);

http::request<http::string_body> BuildCaptureRequest(const ChargeRequest& request,
                                                     const Secret& token);
http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    const Secret& token);

// True when the answer says the token was refused (fetch a new one, retry once).
bool IsTokenRejected(int http_status, std::string_view body);
ChargeOutcome ParseCaptureResponse(int http_status, std::string_view body);
ChargeOutcome ParseLookupResponse(int http_status, std::string_view body);

}  // namespace recharge::paypal
