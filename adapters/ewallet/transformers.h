// Wire mapping for the e-wallet adapter: one JSON API shape for regional
// wallets (GCash, DANA, GrabPay, Paytm, MoMo, KakaoPay...), the provider in
// the path, every request signed with HMAC-SHA256 over
//   timestamp "\n" METHOD "\n" path-with-query "\n" body
// (hex, header X-Signature, with X-Timestamp in unix seconds). Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/payment_adapter.h"
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

ChargeOutcome ParsePaymentResponse(int http_status, std::string_view body);
ChargeOutcome ParseLookupResponse(int http_status, std::string_view body);

}  // namespace recharge::ewallet
