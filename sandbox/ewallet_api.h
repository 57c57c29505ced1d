// The e-wallet API of the sandbox: one API for regional wallets, the
// provider in the path. Enabled by --ewallet-secret-file (one HMAC secret
// shared by all providers); without it every path answers 404 NOT_ENABLED.
//
// Providers and currencies: gcash PHP; dana IDR; grabpay SGD, MYR; paytm INR;
// momo VND; kakaopay KRW; any provider whose name starts with "toy" (e.g.
// toypay) takes any currency. Names match exactly (lower case).
//
// Signing (every request, checked before anything else):
//   X-Timestamp: unix seconds; X-Signature: lowercase hex
//   HMAC-SHA256(secret, ts + "\n" + METHOD + "\n" + target + "\n" + body),
//   target being the request target exactly as sent. Bad or missing ->
//   401 {"code":"INVALID_SIGNATURE"}; a correct signature over a timestamp
//   more than 300 s off -> 401 {"code":"STALE_TIMESTAMP"}.
//
// POST /ewallet/v1/{provider}/payments
//   X-Idempotency-Key required (1-255 printable ASCII, no spaces); body
//   {"merchant_ref","account_id","amount":<int minor units>,"currency"}.
//   Checks: signature (401) -> provider (404 UNKNOWN_PROVIDER) -> key and
//   body (400 INVALID_REQUEST with "field") -> currency (400
//   UNSUPPORTED_CURRENCY). Outcome by account_id suffix: ...0005 -> 503
//   SYSTEM_BUSY "charged":false (nothing stored); ...0002 -> FAILED
//   INSUFFICIENT_BALANCE; ...0003 -> FAILED ACCOUNT_BLOCKED; else SUCCESS
//   (payment_id "EW-<24 upper hex>"), all 200 and journaled. Keys are per
//   provider: the same key and body replays (X-Idempotent-Replayed: true),
//   another body -> 409 IDEMPOTENCY_CONFLICT. Injected errors -> 500
//   SYSTEM_ERROR "charged":false.
//
//   Optional body fields flow ("direct", the default, or "redirect"),
//   notify_url (https://, for webhooks) and return_url. With "redirect" the
//   payment is created "status":"PENDING_APPROVAL" (200, journaled, nothing
//   taken yet) with "flow":"redirect", "approval_url" (the approval page,
//   with a token), "deep_link" ("<provider>://pay?payment_id=<id>") and
//   "qr_payload" (the approval URL); the account holder then approves
//   (SUCCESS, or FAILED by the suffix rules above) or cancels (CANCELLED),
//   and a webhook (webhooks.h) goes to notify_url.
//
// GET /ewallet/v1/{provider}/payments?idempotency_key=K   (signed)
//   -> 200 {"payments":[]} or {"payments":[<payment>]}, the payment as it
//   is now; waits for an in-flight payment under the key.
//
// POST /ewallet/v1/{provider}/payments/{payment_id}/cancel   (signed)
//   body empty or {}: cancels a PENDING_APPROVAL payment -> 200 the payment
//   (CANCELLED; again 200 for a cancelled one); 409 ALREADY_COMPLETED once
//   approved (SUCCESS or FAILED) or for a direct payment.
// GET /ewallet/approve/{payment_id}?token=T   the approval page (HTML)
// POST /ewallet/approve/{payment_id}/complete   its buttons (form token,
//   action=approve|cancel) -> 200 page; 409 once decided; 404 wrong token.
//
// POST /ewallet/v1/{provider}/payments/{payment_id}/refunds   (signed)
//   X-Idempotency-Key required (one key space with payments, per provider);
//   body empty or {"reason","amount"} (both optional; amount must be the
//   payment's: full refunds only). -> 200 {"refund_id":"RF-<24 hex>",
//   "payment_id","provider","status":"REFUNDED","amount","currency",
//   "reason","idempotency_key","created"}; 409 ALREADY_REFUNDED /
//   PAYMENT_NOT_REFUNDABLE (a failed, pending or cancelled payment); 404
//   PAYMENT_NOT_FOUND.
//   Refunds of one payment are serialised: one of racing refunds wins.
// GET /ewallet/v1/{provider}/refunds?idempotency_key=K   (signed)
//   -> 200 {"refunds":[]} or {"refunds":[<refund>]}; waits for one in flight.
//
// Journal line: {"ts","api":"ewallet","provider","id","idempotency_key",
// "amount","currency","status","decline_code","account_id_last4",
// "merchant_ref"}; a refund: {"ts","api":"ewallet","op":"refund","provider",
// "id","payment_id","idempotency_key","amount","currency",
// "status":"succeeded","reason"}; a redirect payment's line has
// "status":"PENDING_APPROVAL","flow":"redirect" (and notify_url /
// return_url when given), its decision {"ts","api":"ewallet",
// "op":"approve"|"cancel","provider","id","idempotency_key","amount",
// "currency","status":"SUCCESS"|"FAILED"|"CANCELLED","decline_code"}: money
// is taken by a payment line with "status":"succeeded" or an approve line
// with "status":"SUCCESS". The full account_id is never journaled: after a restart
// replays and lookups show it as "****" + last 4, and a key reused with
// another account_id is detected on its last 4 only. Latency applies to
// payments and lookups; timeout_mode "drop" to payments. The secret and
// signatures are never logged.
#pragma once

#include <memory>
#include <optional>

#include "io/secret.h"
#include "sandbox/api.h"
#include "sandbox/journal.h"
#include "sandbox/webhooks.h"

namespace recharge::sandbox {

// `secret` nullopt: the API answers 404 (it still restores its records).
// REQUIRES: journal, config, webhooks and self_url outlive the API.
std::unique_ptr<SandboxApi> MakeEwalletApi(std::optional<Secret> secret, Journal& journal,
                                           const ApiConfig& config, WebhookSender& webhooks,
                                           const SelfUrl& self_url);

}  // namespace recharge::sandbox
