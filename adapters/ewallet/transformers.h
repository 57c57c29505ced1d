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

// How a payment is made: `direct` debits the account at once (the answer is
// final); `redirect` creates it PENDING_APPROVAL, the account holder approves
// or cancels it in the wallet (approval_url, deep_link, qr_payload) and the
// wallet notifies notify_url.
struct PaymentFlow {
  bool redirect = false;
  std::string notify_url;  // redirect only; empty: no notification
  // Which of the wallet's three ways the buyer is sent: approval_url
  // (kRedirect), deep_link (kDeepLink) or qr_payload (kQr).
  NextActionInfo::Type action = NextActionInfo::Type::kRedirect;
};

http::request<http::string_body> BuildPaymentRequest(const ChargeRequest& request,
                                                     std::string_view provider,
                                                     const Secret& secret, int64_t timestamp,
                                                     const PaymentFlow& flow = {});
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

// POST /ewallet/v1/{provider}/payments/{op.provider_reference}/cancel: gives
// up a payment still pending approval (an expired action).
http::request<http::string_body> BuildCancelRequest(const PaymentOperation& op,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp);
// The cancel's answer: kApproved once CANCELLED (again, if it was); a
// payment completed meanwhile is kDeclined ("ALREADY_COMPLETED", or its
// status); 5xx kUnknown unless it says nothing was done; other 4xx kFailed.
ChargeOutcome ParseCancelResponse(int http_status, std::string_view body);

// A payment's answer or a lookup's: SUCCESS kApproved, FAILED kDeclined,
// CANCELLED kFailed "cancelled" (nothing taken), PENDING_APPROVAL
// kRequiresAction with `action`'s link as next_action (expires_at unset).
ChargeOutcome ParsePaymentResponse(int http_status, std::string_view body,
                                   NextActionInfo::Type action = NextActionInfo::Type::kRedirect);
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
