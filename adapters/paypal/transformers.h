// Wire mapping for the PayPal adapter: OAuth2 client-credentials token
// requests, Orders v2 capture and Payments v2 full refunds, each with
// `PayPal-Request-Id`, and PayPal's error names mapped onto the shared
// ChargeOutcome. Pure functions, no I/O.
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

// POST /v2/payments/captures/{op.provider_reference}/refund with
// `PayPal-Request-Id` = op.idempotency_key: a full refund. The body names the
// whole captured amount (PayPal refuses any other) and op.reason as
// note_to_payer: left out when empty, its first 255 characters when longer
// (PayPal refuses a longer note).
http::request<http::string_body> BuildRefundRequest(const PaymentOperation& op,
                                                    const Secret& token);
// GET /v2/payments/refunds?paypal_request_id=...
http::request<http::string_body> BuildRefundLookupRequest(std::string_view idempotency_key,
                                                          const Secret& token);

// True when the answer says the token was refused (fetch a new one, retry once).
bool IsTokenRejected(int http_status, std::string_view body);
ChargeOutcome ParseCaptureResponse(int http_status, std::string_view body);
ChargeOutcome ParseLookupResponse(int http_status, std::string_view body);
// The answer to a refund: a COMPLETED refund is kApproved with the refund's
// id; a 422 naming its issue (CAPTURE_FULLY_REFUNDED, REFUND_NOT_ALLOWED,
// PARTIAL_REFUND_NOT_ALLOWED...) is kDeclined with it; a 5xx is kUnknown
// unless it says nothing was done. A request id already used for another
// request (PAYPAL_REQUEST_ID_PREVIOUSLY_USED) did nothing: kFailed.
ChargeOutcome ParseRefundResponse(int http_status, std::string_view body);
// The answer to a refund lookup: the refund as above, kNotFound for an empty
// list, kUnknown for a 5xx or unreadable answer, kFailed for any other.
ChargeOutcome ParseRefundLookupResponse(int http_status, std::string_view body);

}  // namespace recharge::paypal
