// Provider notifications (webhooks): the signature scheme every sandbox API
// uses (Stripe's), and the notification a provider's transformer makes of a
// body. Pure functions; thread-safe.
//
//   Sandbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//
// Several v1 entries may be present (a provider rotating its secret); one
// matching is enough. Unknown keys (v0, ...) are ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "io/secret.h"

namespace recharge {

struct SignatureHeader {
  int64_t timestamp = 0;             // unix seconds
  std::vector<std::string> v1;       // hex digests as sent
};

// INVALID_ARGUMENT naming the part that is wrong: no t, no v1, a t that is
// not a number, a v1 that is not 64 hex digits, an empty or oversized header.
absl::StatusOr<SignatureHeader> ParseSignatureHeader(std::string_view value);

// OK when `header` parses, its timestamp is within `tolerance` of `now`, and
// one v1 equals HMAC-SHA256(secret, "<t>.<body>") (constant-time compare).
// UNAUTHENTICATED otherwise, saying which check failed (never the secret or
// the expected digest).
absl::Status VerifyWebhookSignature(const Secret& secret, std::string_view header,
                                    std::string_view body, std::chrono::system_clock::time_point now,
                                    std::chrono::seconds tolerance);

}  // namespace recharge
