#include "adapters/card/transformers.h"

#include <nlohmann/json.hpp>

#include <optional>

#include "adapters/json_fields.h"
#include "adapters/lookup_list.h"

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
    // A hold not captured (yet): no "captured" field means an older,
    // captured charge.
    if (charge.contains("captured") && charge["captured"].is_boolean()) {
      out.captured = charge["captured"].get<bool>();
    }
  } else if (status == "failed") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(charge, "failure_code");
    out.message = "the card was declined";
  } else if (status == "requires_action") {
    // 3-D Secure: the buyer must pass the issuer's challenge first.
    const json* redirect = nullptr;
    if (auto next = charge.find("next_action"); next != charge.end() && next->is_object()) {
      if (auto r = next->find("redirect_to_url"); r != next->end() && r->is_object()) {
        redirect = &*r;
      }
    }
    const std::string url = redirect != nullptr ? JsonString(*redirect, "url") : "";
    if (url.empty()) {
      out.result = ChargeResult::kUnknown;
      out.message = "requires_action without a redirect URL";
      return out;
    }
    out.result = ChargeResult::kRequiresAction;
    out.captured = false;
    out.next_action = NextActionInfo{NextActionInfo::Type::kRedirect, url, {}};
    out.message = "3-D Secure authentication required";
  } else if (status == "canceled") {
    // Voided while waiting for its challenge: nothing was charged.
    out.result = ChargeResult::kFailed;
    out.decline_code = "canceled";
    out.message = "the charge was cancelled before it was authenticated";
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
                                                    const Secret& api_key,
                                                    std::string_view notify_url) {
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
  if (!request.capture) body += "&capture=false";
  if (!request.description.empty()) {
    StrAppend(&body, "&description=", FormEncode(request.description));
  }
  // The issuer decides on 3-D Secure by the buyer's region, and says how
  // the challenge ended at notify_url.
  if (!request.region.empty()) StrAppend(&body, "&region=", FormEncode(request.region));
  if (!notify_url.empty()) StrAppend(&body, "&notify_url=", FormEncode(notify_url));
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

namespace {
http::request<http::string_body> Post(std::string target, const PaymentOperation& op,
                                      const Secret& api_key, std::string body) {
  http::request<http::string_body> req{http::verb::post, std::move(target), 11};
  req.set(http::field::authorization, StrCat("Bearer ", api_key.Reveal()));
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.set("Idempotency-Key", op.idempotency_key);
  req.body() = std::move(body);
  return req;
}

// The shared part of the operations' answers: 5xx and unreadable answers,
// and 4xx with the provider's error code. nullopt: a 200 with a JSON object
// in `*j`, for the caller to read.
std::optional<ChargeOutcome> OperationFailure(int http_status, const json& j) {
  ChargeOutcome out;
  const json* error = nullptr;
  if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_object()) {
    error = &j["error"];
  }
  if (http_status == 200) {
    if (j.is_discarded() || !j.is_object()) {
      out.result = ChargeResult::kUnknown;  // it said OK: it may have happened
      out.message = "unreadable success response";
      return out;
    }
    return std::nullopt;
  }
  if (http_status >= 500) {
    out.result = error != nullptr && SaysNotCharged(*error) ? ChargeResult::kFailed
                                                            : ChargeResult::kUnknown;
    out.message = StrCat("provider error ", http_status);
    return out;
  }
  const std::string code = error != nullptr ? JsonString(*error, "code") : "";
  // A refusal that names its reason (already captured, voided, not
  // captured...) is the provider's answer on the payment: kDeclined. A key
  // reused for other parameters says nothing about the payment: this
  // request did nothing (kFailed), as the PayPal and e-wallet parsers say.
  const bool about_payment = http_status == 400 && !code.empty() && code != "idempotency_key_reused";
  out.result = about_payment ? ChargeResult::kDeclined : ChargeResult::kFailed;
  out.decline_code = code;
  out.message = StrCat("provider refused (HTTP ", http_status, code.empty() ? "" : ": ", code, ")");
  return out;
}
}  // namespace

http::request<http::string_body> BuildHoldRequest(std::string_view action,
                                                  const PaymentOperation& op,
                                                  const Secret& api_key) {
  return Post(StrCat("/v1/charges/", FormEncode(op.provider_reference), "/", action), op, api_key,
              "");
}

http::request<http::string_body> BuildRefundRequest(const PaymentOperation& op,
                                                    const Secret& api_key) {
  std::string body = StrCat("charge=", FormEncode(op.provider_reference));
  if (!op.reason.empty()) StrAppend(&body, "&reason=", FormEncode(op.reason));
  return Post("/v1/refunds", op, api_key, std::move(body));
}

http::request<http::string_body> BuildRefundLookupRequest(std::string_view idempotency_key,
                                                          const Secret& api_key) {
  http::request<http::string_body> req{
      http::verb::get, StrCat("/v1/refunds?idempotency_key=", FormEncode(idempotency_key)), 11};
  req.set(http::field::authorization, StrCat("Bearer ", api_key.Reveal()));
  return req;
}

ChargeOutcome ParseHoldResponse(std::string_view action, int http_status, std::string_view body) {
  json j = ParseJson(body);
  if (std::optional<ChargeOutcome> failed = OperationFailure(http_status, j)) return *failed;
  ChargeOutcome out;
  out.provider_reference = JsonString(j, "id");
  const bool done = action == "capture"
                        ? j.contains("captured") && j["captured"].is_boolean() && j["captured"].get<bool>()
                        : j.contains("voided") && j["voided"].is_boolean() && j["voided"].get<bool>();
  out.result = done ? ChargeResult::kApproved : ChargeResult::kUnknown;
  out.captured = action == "capture" && done;
  if (!done) out.message = StrCat("the charge does not show the ", action);
  return out;
}

namespace {
ChargeOutcome FromRefundObject(const json& refund) {
  ChargeOutcome out;
  out.provider_reference = JsonString(refund, "id");
  const std::string status = JsonString(refund, "status");
  if (status == "succeeded") {
    out.result = ChargeResult::kApproved;
  } else if (status == "failed") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = "refund_failed";
  } else {
    out.result = ChargeResult::kUnknown;
    out.message = StrCat("refund in unexpected state \"", status, "\"");
  }
  return out;
}
}  // namespace

ChargeOutcome ParseRefundResponse(int http_status, std::string_view body) {
  json j = ParseJson(body);
  if (std::optional<ChargeOutcome> failed = OperationFailure(http_status, j)) return *failed;
  return FromRefundObject(j);
}

ChargeOutcome ParseRefundLookupResponse(int http_status, std::string_view body) {
  return ParseLookupList(http_status, body, "data", "refund lookup", FromRefundObject);
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
  return ParseLookupList(http_status, body, "data", "lookup", FromChargeObject);
}

absl::StatusOr<ProviderNotification> ParseNotification(std::string_view body) {
  const json j = ParseJson(body);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("body: not a JSON object");
  ProviderNotification out;
  out.event_id = JsonString(j, "id");
  out.event_type = JsonString(j, "type");
  if (out.event_id.empty()) return absl::InvalidArgumentError("id: missing");
  if (out.event_type.empty()) return absl::InvalidArgumentError("type: missing");
  auto data = j.find("data");
  if (data == j.end() || !data->is_object()) return absl::InvalidArgumentError("data: missing");
  auto object = data->find("object");
  if (object == data->end() || !object->is_object()) {
    return absl::InvalidArgumentError("data.object: missing");
  }
  out.outcome = FromChargeObject(*object);
  out.idempotency_key = JsonString(*object, "idempotency_key");
  if (out.outcome.provider_reference.empty()) return absl::InvalidArgumentError("data.object.id: missing");
  if (out.idempotency_key.empty()) {
    return absl::InvalidArgumentError("data.object.idempotency_key: missing");
  }
  return out;
}

}  // namespace recharge::card
