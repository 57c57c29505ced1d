// Wire mapping for the example adapter: a JSON payments API
// (POST /v1/payments, bearer key, Idempotency-Key header;
// GET /v1/payments?idempotency_key=K for lookups). Everything that knows the
// provider's format lives here: pure functions, no I/O, unit-tested with the
// provider's documented examples.
#pragma once

#include <string_view>

#include "adapters/payment_adapter.h"
#include "io/https_client.h"

namespace recharge::example {

http::request<http::string_body> BuildChargeRequest(const ChargeRequest& request,
                                                    const Secret& api_key);
http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    const Secret& api_key);
// The provider's statuses onto the shared outcome: succeeded -> kApproved,
// declined -> kDeclined, a 5xx saying "charged": false -> kFailed, any other
// 5xx or unreadable success -> kUnknown, other 4xx -> kFailed.
ChargeOutcome ParseChargeResponse(int http_status, std::string_view body);
ChargeOutcome ParseLookupResponse(int http_status, std::string_view body);

}  // namespace recharge::example
