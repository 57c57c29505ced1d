// The card charges API of the sandbox (Stripe-like):
//
//   POST /v1/charges                     create a charge (form-encoded body)
//   GET  /v1/charges?idempotency_key=K   list with zero or one charge (Lookup)
//   GET  /v1/charges/<id>                retrieve one charge
//
// Auth: "Authorization: Bearer <secret>". Optional Idempotency-Key (1-255
// printable ASCII, no spaces): a repeat with the same parameters replays the
// stored status and body byte for byte (Idempotent-Replayed: true), also
// after a restart; with other parameters it is 400 idempotency_error.
// Injected latency is the provider's processing time: a processed charge
// sleeps while holding its key, so duplicates and lookups wait for the
// definite result. timeout_mode "drop": a valid create sleeps the latency,
// then the connection is closed with nothing charged (lookups still answer).
// Injected errors: 500 {"error":{"type":"api_error","code":"internal_error",
// "charged":false}}, nothing charged or stored under the key.
//
// Test instruments by card number: 4242424242424242 approves,
// 4000000000000002 declines (card_declined), 4000000000009995 declines
// (insufficient_funds), any other Luhn-valid number starting 4000000000
// declines (card_declined), any other Luhn-valid number approves.
//
// Journal line: {"ts","api":"card","id","idempotency_key","amount",
// "currency","status","decline_code","last4"}; never the card number or CVC.
#pragma once

#include <memory>

#include "io/secret.h"
#include "sandbox/api.h"
#include "sandbox/journal.h"

namespace recharge::sandbox {

// REQUIRES: `secret` not empty; journal and config outlive the API.
std::unique_ptr<SandboxApi> MakeCardApi(Secret secret, Journal& journal, const ApiConfig& config);

}  // namespace recharge::sandbox
