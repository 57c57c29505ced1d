// The PayPal-style API of the sandbox: OAuth2 client credentials and Orders
// v2 capture, modelled on PayPal REST. Enabled by --paypal-credentials-file;
// without it every PayPal path answers 404 RESOURCE_NOT_FOUND.
//
// POST /v1/oauth2/token
//   Authorization: Basic base64(client_id:client_secret), form body
//   grant_type=client_credentials -> 200 {"scope","access_token":"A21AA...",
//   "token_type":"Bearer","app_id":"APP-SANDBOX","expires_in":<ttl s>,"nonce"}.
//   Wrong/missing credentials -> 401 {"error":"invalid_client",...}; another
//   grant type -> 400 {"error":"unsupported_grant_type",...}. TTL: config
//   paypal.token_ttl_s (default 32400). Tokens verify themselves (an HMAC
//   over expiry and nonce, keyed from the credentials), so they stay valid
//   across a restart with the same credentials until they expire. Grants are
//   never slowed, dropped or failed by fault injection.
//
// POST /v2/checkout/orders/{order_id}/capture
//   Bearer token (missing, unknown, tampered or expired -> 401
//   {"error":"invalid_token",...}); optional PayPal-Request-Id (1-108
//   printable ASCII, no spaces: the idempotency key); Content-Type
//   application/json (else 415); body {"amount":{"currency_code":"USD",
//   "value":"0.99"}} (value: a decimal string > 0 with at most 2 decimals,
//   none for JPY/KRW/VND). Bad input -> 400 INVALID_REQUEST naming the field.
//   order_id: 1-64 of [A-Za-z0-9_-]. Outcome by order id suffix:
//     ...UNAVAILABLE -> 503 SERVICE_UNAVAILABLE "charged":false (nothing stored)
//     ...DECLINED    -> 422 INSTRUMENT_DECLINED
//     ...NOTAPPROVED -> 422 ORDER_NOT_APPROVED
//     ...CAPTURED    -> 422 ORDER_ALREADY_CAPTURED
//     anything else  -> 201 COMPLETED with one capture "CAP<17 hex>"
//   The 422s are failed captures: journaled and stored under the key. A
//   repeated PayPal-Request-Id replays status and body byte for byte
//   (PayPal-Request-Id-Replayed: true), also after a restart; with another
//   order id or amount -> 422 PAYPAL_REQUEST_ID_PREVIOUSLY_USED. Injected
//   errors -> 500 INTERNAL_SERVER_ERROR "charged":false (not stored).
//
// GET /v2/payments/captures?paypal_request_id=K   (bearer token)
//   -> 200 {"captures":[]} or {"captures":[{"id","status":"COMPLETED"|
//   "DECLINED","order_id","paypal_request_id","amount","issue","create_time"}]};
//   waits for an in-flight capture under the key.
//
// POST /v2/payments/captures/{capture_id}/refund   (bearer token)
//   Optional PayPal-Request-Id (as for captures; one key space for both),
//   optional JSON body {"amount":{...},"note_to_payer":"..."}; full refunds
//   only. -> 201 {"id":"REF<17 hex>","status":"COMPLETED","amount",...,
//   "links"}; refused with 422 CAPTURE_FULLY_REFUNDED, REFUND_NOT_ALLOWED (a
//   declined capture), PARTIAL_REFUND_NOT_ALLOWED / REFUND_AMOUNT_EXCEEDED /
//   REFUND_CAPTURE_CURRENCY_MISMATCH; unknown capture 404 RESOURCE_NOT_FOUND.
//   Refunds of one capture are serialised: exactly one of racing refunds wins.
// GET /v2/payments/captures/{capture_id}, GET /v2/payments/refunds/{id},
// GET /v2/payments/refunds?paypal_request_id=K   (bearer token)
//   A refunded capture shows "status":"REFUNDED" here and in the search.
//
// Latency applies to captures, refunds and lookups; timeout_mode "drop" to
// captures and refunds.
// Journal line: {"ts","api":"paypal","id","idempotency_key","order_id",
// "amount":<minor units>,"currency","status","decline_code"}; a refund:
// {"ts","api":"paypal","op":"refund","id","capture_id","idempotency_key",
// "amount","currency","status":"succeeded","note_to_payer"}. Tokens and the
// client secret are never logged or journaled.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "io/secret.h"
#include "sandbox/api.h"
#include "sandbox/journal.h"

namespace recharge::sandbox {

struct PaypalCredentials {
  std::string client_id;
  Secret client_secret;
};

// The credentials file: UTF-8 text, exactly two non-empty lines (client_id,
// then client_secret), whitespace around each stripped, blank lines ignored.
absl::StatusOr<PaypalCredentials> ReadPaypalCredentials(const std::string& path);

// `credentials` nullopt: the API answers 404 (it still restores its journal
// records). Grants are counted in `stats`.
std::unique_ptr<SandboxApi> MakePaypalApi(std::optional<PaypalCredentials> credentials,
                                          Journal& journal, const ApiConfig& config, Stats& stats);

}  // namespace recharge::sandbox
