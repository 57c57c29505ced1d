// The card charges API of the sandbox (Stripe-like):
//
//   POST /v1/charges                     create a charge (form-encoded body)
//   GET  /v1/charges?idempotency_key=K   list with zero or one charge (Lookup)
//   GET  /v1/charges/<id>                retrieve one charge
//   POST /v1/charges/<id>/capture        capture an authorisation hold
//   POST /v1/charges/<id>/void           release a hold (the sandbox's stand-in
//                                        for cancelling a Stripe PaymentIntent)
//   POST /v1/refunds                     refund a captured charge in full
//   GET  /v1/refunds?idempotency_key=K   list with zero or one refund
//   GET  /3ds/<id>?token=T               the 3-D Secure challenge page (HTML)
//   POST /3ds/<id>/complete              its Approve / Fail buttons (form
//                                        token, result=approve|fail)
//
// capture=false on create makes a hold (status succeeded, captured false).
// Capture, void and refund of one charge are serialised (a per-charge lock
// held across the checks and the journal write): of racing calls exactly one
// wins, the others are refused (400 charge_already_captured, ...). They take
// Idempotency-Key like charges (one key space for all four calls); a refusal
// is not stored under the key. Full contract: sandbox/README.md.
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
// (insufficient_funds), 4000000000003055 approves without a challenge (even
// in DE/GB/IN), any other Luhn-valid number starting 4000000000 declines
// (card_declined), any other Luhn-valid number approves.
//
// 3-D Secure (optional create params region, notify_url, return_url): an
// approving charge needs the cardholder's authentication if its card is
// 4000002760003184 (the button decides) or 4000008400001629 (always fails),
// or if region is DE, GB or IN (except 4000000000003055). It is answered 200
// "status":"requires_action" with next_action.redirect_to_url {url (the
// challenge page, with a token), return_url}; approving makes it a hold
// (succeeded, captured false), failing makes it failed
// (authentication_failed); a webhook (webhooks.h) goes to notify_url. Void
// cancels it (status canceled); capture and refund are refused
// (charge_not_authenticated). Full contract: sandbox/README.md.
//
// Journal lines: {"ts","api":"card","id","idempotency_key","amount",
// "currency","status","decline_code","last4"} (a hold adds "captured":false);
// {"ts","api":"card","op":"capture"|"void","id":<charge>,"idempotency_key",
// "amount","currency"}; {"ts","api":"card","op":"refund","id":<refund>,
// "charge","idempotency_key","amount","currency","status":"succeeded",
// "reason"}; a challenged charge's line has "status":"requires_action",
// "captured":false and "three_d_secure":"challenge"|"challenge_fails", and
// its completion {"ts","api":"card","op":"authenticate","id":<charge>,
// "idempotency_key":<the charge's>,"result":"approved"|"failed"}; region,
// notify_url and return_url are journaled when given. Never the card number
// or CVC (nor the challenge token, which is derived from the API secret).
#pragma once

#include <memory>

#include "io/secret.h"
#include "sandbox/api.h"
#include "sandbox/journal.h"
#include "sandbox/webhooks.h"

namespace recharge::sandbox {

// REQUIRES: `secret` not empty; journal, config, webhooks and self_url
// outlive the API.
std::unique_ptr<SandboxApi> MakeCardApi(Secret secret, Journal& journal, const ApiConfig& config,
                                        WebhookSender& webhooks, const SelfUrl& self_url);

}  // namespace recharge::sandbox
