#include "adapters/card/transformers.h"

#include <nlohmann/json.hpp>

#include "adapters/json_fields.h"

#include "io/strings.h"

namespace recharge::card {
namespace {

using nlohmann::json;

// A charge object (a lookup's list item) as an outcome.
ChargeOutcome FromChargeObject(const json& charge) {
  ChargeOutcome out;
  out.provider_reference = JsonString(charge, "id");
  const std::string status = JsonString(charge, "status");
  if (status == "succeeded") {
    out.result = ChargeResult::kApproved;
  } else if (status == "failed") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(charge, "failure_code");
    out.message = "the card was declined";
  } else {
    out.result = ChargeResult::kUnknown;
    out.message = StrCat("charge in unexpected state \"", status, "\"");
  }
  return out;
}

}  // namespace

std::string FormEncode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

http::request<http::string_body> BuildChargeRequest(const ChargeRequest& request,
                                                    const Secret& api_key) {
  http::request<http::string_body> req{http::verb::post, "/v1/charges", 11};
  req.set(http::field::authorization, StrCat("Bearer ", api_key.Reveal()));
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.set("Idempotency-Key", request.idempotency_key);
  std::string body = StrCat("amount=", request.minor_units,
                                  "&currency=", FormEncode(request.currency));
  if (request.card) {
    const CardDetails& c = *request.card;
    StrAppend(&body, "&card%5Bnumber%5D=", FormEncode(c.number.Reveal()),
                    "&card%5Bexp_month%5D=", c.exp_month, "&card%5Bexp_year%5D=", c.exp_year,
                    "&card%5Bcvc%5D=", FormEncode(c.cvc.Reveal()));
  }
  if (!request.description.empty()) {
    StrAppend(&body, "&description=", FormEncode(request.description));
  }
  StrAppend(&body, "&metadata%5Brecharge_id%5D=", FormEncode(request.recharge_id));
  req.body() = std::move(body);
  return req;
}

http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    const Secret& api_key) {
  http::request<http::string_body> req{
      http::verb::get, StrCat("/v1/charges?idempotency_key=", FormEncode(idempotency_key)),
      11};
  req.set(http::field::authorization, StrCat("Bearer ", api_key.Reveal()));
  return req;
}

ChargeOutcome ParseChargeResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  if (http_status == 200) {
    if (j.is_discarded() || !j.is_object()) {
      out.result = ChargeResult::kUnknown;  // it said OK: money may have moved
      out.message = "unreadable success response";
      return out;
    }
    return FromChargeObject(j);
  }
  const json* error = nullptr;
  if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_object()) {
    error = &j["error"];
  }
  if (http_status == 402 && error != nullptr) {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(*error, "decline_code");
    if (out.decline_code.empty()) out.decline_code = JsonString(*error, "code");
    out.provider_reference = JsonString(*error, "charge");
    out.message = JsonString(*error, "message");
    return out;
  }
  if (http_status >= 500) {
    // Only a 5xx that states nothing was charged is a definite failure.
    const bool not_charged = error != nullptr && SaysNotCharged(*error);
    out.result = not_charged ? ChargeResult::kFailed : ChargeResult::kUnknown;
    out.message = StrCat("provider error ", http_status);
    return out;
  }
  // 4xx: the provider rejected the request itself; nothing was charged.
  out.result = ChargeResult::kFailed;
  out.message = StrCat("provider rejected the request (HTTP ", http_status, ")");
  if (error != nullptr) {
    const std::string code = JsonString(*error, "code");
    if (!code.empty()) StrAppend(&out.message, ": ", code);
  }
  return out;
}

ChargeOutcome ParseLookupResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  if (http_status != 200 || j.is_discarded() || !j.is_object() || !j.contains("data") ||
      !j["data"].is_array()) {
    out.result = http_status >= 500 ? ChargeResult::kUnknown : ChargeResult::kFailed;
    out.message = StrCat("lookup failed (HTTP ", http_status, ")");
    return out;
  }
  if (j["data"].empty()) {
    out.result = ChargeResult::kNotFound;
    return out;
  }
  return FromChargeObject(j["data"][0]);
}

}  // namespace recharge::card
