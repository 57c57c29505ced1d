// Wire mapping for the card adapter: a Stripe-style charges API
// (form-encoded POST /v1/charges, JSON answers, Idempotency-Key header).
// Everything that knows the provider's format is here; pure functions, no I/O.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "adapters/webhook_signature.h"
#include "io/https_client.h"

namespace recharge::card {

// POST /v1/charges with the card fields form-encoded and the secret key as a
// bearer token; the region (3-D Secure is decided by it) and, when given,
// the URL the provider notifies when a challenge ends.
http::request<http::string_body> BuildChargeRequest(const ChargeRequest& request,
                                                    const Secret& api_key,
                                                    std::string_view notify_url = {});
// GET /v1/charges?idempotency_key=...
http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    const Secret& api_key);

// POST /v1/charges/{id}/capture or /void (`action`), with Idempotency-Key.
http::request<http::string_body> BuildHoldRequest(std::string_view action,
                                                  const PaymentOperation& op,
                                                  const Secret& api_key);
// POST /v1/refunds: charge, reason; full refunds only (no amount).
http::request<http::string_body> BuildRefundRequest(const PaymentOperation& op,
                                                    const Secret& api_key);
// GET /v1/refunds?idempotency_key=...
http::request<http::string_body> BuildRefundLookupRequest(std::string_view idempotency_key,
                                                          const Secret& api_key);
// The answer to a capture or void: kApproved when the charge is now
// captured (capture) or voided (void); a 400 the provider explains (already
// captured, voided...) is kDeclined with its code.
ChargeOutcome ParseHoldResponse(std::string_view action, int http_status, std::string_view body);
// The answer to a refund (a refund object) or a refund lookup (a list).
ChargeOutcome ParseRefundResponse(int http_status, std::string_view body);
ChargeOutcome ParseRefundLookupResponse(int http_status, std::string_view body);

// Maps the provider's answer to a charge onto the shared outcome.
ChargeOutcome ParseChargeResponse(int http_status, std::string_view body);
// Maps the answer to a lookup; an empty list is kNotFound.
ChargeOutcome ParseLookupResponse(int http_status, std::string_view body);
// A webhook body (its signature checked already):
//   {"id":"evt_…","type":"charge.authenticated"|"charge.authentication_failed",
//    "created":…,"data":{"object":<charge>}}
// The outcome is the charge's (an authenticated charge is an uncaptured
// hold: kApproved, captured false); idempotency_key is the charge's.
// INVALID_ARGUMENT naming the field that is missing or malformed.
absl::StatusOr<ProviderNotification> ParseNotification(std::string_view body);

std::string FormEncode(std::string_view value);

}  // namespace recharge::card
