// Wire mapping for the e-wallet adapter: one JSON API shape for regional
// wallets (GCash, DANA, GrabPay, Paytm, MoMo, KakaoPay...), the provider in
// the path, every request signed with HMAC-SHA256 over
//   timestamp "\n" METHOD "\n" path-with-query "\n" body
// (hex, header X-Signature, with X-Timestamp in unix seconds). Payments and
// full refunds of them, each idempotent by its X-Idempotency-Key (keys are
// scoped per provider). Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "adapters/webhook_signature.h"
#include "io/https_client.h"

namespace recharge::ewallet {

std::string Signature(const Secret& secret, int64_t timestamp, std::string_view method,
                      std::string_view target, std::string_view body);

http::request<http::string_body> BuildPaymentRequest(const ChargeRequest& request,
                                                     std::string_view provider,
                                                     const Secret& secret, int64_t timestamp);
http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp);

// POST /ewallet/v1/{provider}/payments/{op.provider_reference}/refunds with
// X-Idempotency-Key = op.idempotency_key: a full refund. The JSON body names
// the payment's whole amount (the wallet refuses any other: kFailed) and
// op.reason: left out when empty, its first 255 characters when longer (the
// wallet refuses a longer one).
http::request<http::string_body> BuildRefundRequest(const PaymentOperation& op,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp);
// GET /ewallet/v1/{provider}/refunds?idempotency_key=...
http::request<http::string_body> BuildRefundLookupRequest(std::string_view idempotency_key,
                                                          std::string_view provider,
                                                          const Secret& secret, int64_t timestamp);

ChargeOutcome ParsePaymentResponse(int http_status, std::string_view body);
ChargeOutcome ParseLookupResponse(int http_status, std::string_view body);
// A webhook body (its signature checked already):
//   {"event_id":"EV-…","event_type":"payment.succeeded"|"payment.failed"|
//    "payment.cancelled","created_at":…,"payment":<payment>}
// The outcome is the payment's; CANCELLED (the buyer cancelled, nothing
// taken) is kFailed with decline_code "cancelled". recharge_id is the
// payment's merchant_ref. INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<ProviderNotification> ParseNotification(std::string_view body);
// The answer to a refund: status REFUNDED is kApproved with the refund_id; a
// 409 naming why the payment cannot be refunded (ALREADY_REFUNDED,
// PAYMENT_NOT_REFUNDABLE) is kDeclined with that code; a 5xx is kUnknown
// unless it says nothing was done ("charged": false). Any other 4xx,
// IDEMPOTENCY_CONFLICT included, did nothing: kFailed.
ChargeOutcome ParseRefundResponse(int http_status, std::string_view body);
// The answer to a refund lookup: the refund as above, kNotFound for an empty
// list, kUnknown for a 5xx or unreadable answer, kFailed for any other.
ChargeOutcome ParseRefundLookupResponse(int http_status, std::string_view body);

}  // namespace recharge::ewallet
