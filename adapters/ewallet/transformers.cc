#include "adapters/ewallet/transformers.h"

#include <nlohmann/json.hpp>

#include "adapters/json_fields.h"

#include "adapters/card/transformers.h"
#include "io/crypto.h"
#include "io/strings.h"

namespace recharge::ewallet {
namespace {

using nlohmann::json;

void Sign(http::request<http::string_body>& req, const Secret& secret, int64_t timestamp) {
  req.set("X-Timestamp", std::to_string(timestamp));
  req.set("X-Signature", Signature(secret, timestamp, std::string(req.method_string()),
                                   std::string(req.target()), req.body()));
}

ChargeOutcome FromPayment(const json& p) {
  ChargeOutcome out;
  out.provider_reference = JsonString(p, "payment_id");
  const std::string status = JsonString(p, "status");
  if (status == "SUCCESS") {
    out.result = ChargeResult::kApproved;
  } else if (status == "FAILED") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(p, "failure_code");
    out.message = "the wallet refused the payment";
  } else {
    out.result = ChargeResult::kUnknown;
    out.message = StrCat("payment in state \"", status, "\"");
  }
  return out;
}

}  // namespace

std::string Signature(const Secret& secret, int64_t timestamp, std::string_view method,
                      std::string_view target, std::string_view body) {
  return HexEncode(HmacSha256(secret, StrCat(timestamp, "\n", method, "\n", target, "\n", body)));
}

http::request<http::string_body> BuildPaymentRequest(const ChargeRequest& request,
                                                     std::string_view provider,
                                                     const Secret& secret, int64_t timestamp) {
  http::request<http::string_body> req{
      http::verb::post, StrCat("/ewallet/v1/", card::FormEncode(provider), "/payments"), 11};
  req.set(http::field::content_type, "application/json");
  req.set("X-Idempotency-Key", request.idempotency_key);
  json body = {{"merchant_ref", request.recharge_id},
               {"account_id", request.wallet_account},
               {"amount", request.minor_units},
               {"currency", request.currency}};
  req.body() = body.dump();
  Sign(req, secret, timestamp);
  return req;
}

http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp) {
  http::request<http::string_body> req{
      http::verb::get,
      StrCat("/ewallet/v1/", card::FormEncode(provider),
             "/payments?idempotency_key=", card::FormEncode(idempotency_key)),
      11};
  Sign(req, secret, timestamp);
  return req;
}

ChargeOutcome ParsePaymentResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  const bool object = !j.is_discarded() && j.is_object();
  if (http_status == 200) {
    if (!object) {
      out.result = ChargeResult::kUnknown;
      out.message = "unreadable payment response";
      return out;
    }
    return FromPayment(j);
  }
  if (http_status >= 500) {
    const bool not_charged = SaysNotCharged(j);
    out.result = not_charged ? ChargeResult::kFailed : ChargeResult::kUnknown;
    out.message = StrCat("wallet error ", http_status, object ? " " + JsonString(j, "code") : "");
    return out;
  }
  // 4xx (bad signature, unsupported currency, unknown provider, conflict):
  // refused before anything was charged.
  out.result = ChargeResult::kFailed;
  out.message = StrCat("wallet rejected the request (HTTP ", http_status,
                       object && !JsonString(j, "code").empty() ? ": " + JsonString(j, "code") : "", ")");
  return out;
}

ChargeOutcome ParseLookupResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  if (http_status != 200 || j.is_discarded() || !j.is_object() || !j.contains("payments") ||
      !j["payments"].is_array()) {
    out.result = ChargeResult::kUnknown;
    out.message = StrCat("wallet lookup failed (HTTP ", http_status, ")");
    return out;
  }
  if (j["payments"].empty()) {
    out.result = ChargeResult::kNotFound;
    return out;
  }
  return FromPayment(j["payments"][0]);
}

}  // namespace recharge::ewallet
