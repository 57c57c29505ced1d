#include "adapters/_template/transformers.h"

#include <nlohmann/json.hpp>

#include "adapters/json_fields.h"

#include "adapters/card/transformers.h"
#include "io/strings.h"

namespace recharge::example {
namespace {

using nlohmann::json;

ChargeOutcome FromPayment(const json& p) {
  ChargeOutcome out;
  out.provider_reference = JsonString(p, "id");
  const std::string status = JsonString(p, "status");
  if (status == "succeeded") {
    out.result = ChargeResult::kApproved;
  } else if (status == "declined") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(p, "decline_code");
  } else {
    out.result = ChargeResult::kUnknown;
    out.message = StrCat("payment in state \"", status, "\"");
  }
  return out;
}

}  // namespace

http::request<http::string_body> BuildChargeRequest(const ChargeRequest& request,
                                                    const Secret& api_key) {
  http::request<http::string_body> req{http::verb::post, "/v1/payments", 11};
  req.set(http::field::authorization, StrCat("Bearer ", api_key.Reveal()));
  req.set(http::field::content_type, "application/json");
  req.set("Idempotency-Key", request.idempotency_key);
  req.body() = json{{"reference", request.recharge_id},
                    {"amount", request.minor_units},
                    {"currency", request.currency},
                    {"account", request.wallet_account}}
                   .dump();
  return req;
}

http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    const Secret& api_key) {
  http::request<http::string_body> req{
      http::verb::get, StrCat("/v1/payments?idempotency_key=", card::FormEncode(idempotency_key)),
      11};
  req.set(http::field::authorization, StrCat("Bearer ", api_key.Reveal()));
  return req;
}

ChargeOutcome ParseChargeResponse(int http_status, std::string_view body) {
  json j = ParseJson(body);
  const bool object = !j.is_discarded() && j.is_object();
  ChargeOutcome out;
  if (http_status == 200 && object) return FromPayment(j);
  if (http_status == 200 || (http_status >= 500 && !SaysNotCharged(j))) {
    out.result = ChargeResult::kUnknown;
  } else {
    out.result = ChargeResult::kFailed;
  }
  out.message = StrCat("provider answered HTTP ", http_status);
  return out;
}

ChargeOutcome ParseLookupResponse(int http_status, std::string_view body) {
  json j = ParseJson(body);
  ChargeOutcome out;
  if (http_status != 200 || j.is_discarded() || !j.is_object() || !j.contains("data") ||
      !j["data"].is_array()) {
    out.result = ChargeResult::kUnknown;
    out.message = StrCat("lookup failed (HTTP ", http_status, ")");
    return out;
  }
  if (j["data"].empty()) {
    out.result = ChargeResult::kNotFound;
    return out;
  }
  return FromPayment(j["data"][0]);
}

}  // namespace recharge::example
