#include "adapters/paypal/transformers.h"

#include <nlohmann/json.hpp>

#include "adapters/json_fields.h"
#include "adapters/lookup_list.h"

#include "adapters/card/transformers.h"
#include "adapters/money.h"
#include "io/crypto.h"
#include "io/strings.h"

namespace recharge::paypal {
namespace {

using nlohmann::json;

// The first `details[].issue` of a PayPal error body, or its `name`.
std::string IssueOf(const json& j) {
  if (j.contains("details") && j["details"].is_array() && !j["details"].empty() &&
      j["details"][0].is_object()) {
    std::string issue = JsonString(j["details"][0], "issue");
    if (!issue.empty()) return issue;
  }
  return JsonString(j, "name");
}

// PayPal keeps a note_to_payer of at most 255 characters and refuses a
// longer one.
constexpr size_t kMaxNoteChars = 255;

std::string TrimLine(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return std::string(s);
}

}  // namespace

absl::StatusOr<Credentials> ParseCredentials(std::string_view text) {
  Credentials c;
  json j = ParseJson(text);
  if (!j.is_discarded() && j.is_object()) {
    c.client_id = JsonString(j, "client_id");
    c.client_secret = Secret(JsonString(j, "client_secret"));
  } else {
    size_t nl = text.find('\n');
    if (nl != std::string_view::npos) {
      c.client_id = TrimLine(text.substr(0, nl));
      c.client_secret = Secret(TrimLine(text.substr(nl + 1)));
    }
  }
  if (c.client_id.empty() || c.client_secret.empty()) {
    return absl::InvalidArgumentError(
        "must hold a client id and a client secret (JSON {\"client_id\", \"client_secret\"} or two lines)");
  }
  return c;
}

http::request<http::string_body> BuildTokenRequest(const Credentials& credentials) {
  http::request<http::string_body> req{http::verb::post, "/v1/oauth2/token", 11};
  const std::string basic = StrCat(credentials.client_id, ":", credentials.client_secret.Reveal());
  req.set(http::field::authorization, StrCat("Basic ", Base64Encode(basic)));
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.set(http::field::accept, "application/json");
  req.body() = "grant_type=client_credentials";
  return req;
}

absl::StatusOr<AccessToken> ParseTokenResponse(int http_status, std::string_view body,
                                               std::chrono::steady_clock::time_point now) {
  json j = ParseJson(body);
  if (http_status != 200 || j.is_discarded() || !j.is_object()) {
    std::string why = j.is_object() ? JsonString(j, "error") : "";
    return absl::UnavailableError(StrCat("PayPal token request failed (HTTP ", http_status,
                                         why.empty() ? "" : ", ", why, ")"));
  }
  AccessToken t;
  t.value = Secret(JsonString(j, "access_token"));
  if (t.value.empty() || !j.contains("expires_in") || !j["expires_in"].is_number_integer()) {
    return absl::UnavailableError("PayPal token response has no access_token or expires_in");
  }
  t.expires_at = now + std::chrono::seconds(j["expires_in"].get<int64_t>());
  return t;
}

http::request<http::string_body> BuildCaptureRequest(const ChargeRequest& request,
                                                     const Secret& token) {
  http::request<http::string_body> req{
      http::verb::post,
      StrCat("/v2/checkout/orders/", card::FormEncode(request.paypal_order_id), "/capture"), 11};
  req.set(http::field::authorization, StrCat("Bearer ", token.Reveal()));
  req.set(http::field::content_type, "application/json");
  req.set("PayPal-Request-Id", request.idempotency_key);
  req.set("Prefer", "return=representation");
  json body = {{"amount",
                {{"currency_code", request.currency},
                 {"value", MinorUnitsToDecimal(request.minor_units, request.currency)}}}};
  req.body() = body.dump();
  return req;
}

http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    const Secret& token) {
  http::request<http::string_body> req{
      http::verb::get,
      StrCat("/v2/payments/captures?paypal_request_id=", card::FormEncode(idempotency_key)), 11};
  req.set(http::field::authorization, StrCat("Bearer ", token.Reveal()));
  return req;
}

http::request<http::string_body> BuildRefundRequest(const PaymentOperation& op,
                                                    const Secret& token) {
  http::request<http::string_body> req{
      http::verb::post,
      StrCat("/v2/payments/captures/", card::FormEncode(op.provider_reference), "/refund"), 11};
  req.set(http::field::authorization, StrCat("Bearer ", token.Reveal()));
  req.set(http::field::content_type, "application/json");
  req.set("PayPal-Request-Id", op.idempotency_key);
  json body = {{"amount",
                {{"currency_code", op.currency},
                 {"value", MinorUnitsToDecimal(op.minor_units, op.currency)}}}};
  // A longer reason is cut, the same way on every retry (the request id's
  // replay compares the note).
  if (!op.reason.empty()) body["note_to_payer"] = FirstChars(op.reason, kMaxNoteChars);
  // A reason that is not UTF-8 must not throw: its bad bytes become U+FFFD.
  req.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return req;
}

http::request<http::string_body> BuildRefundLookupRequest(std::string_view idempotency_key,
                                                          const Secret& token) {
  http::request<http::string_body> req{
      http::verb::get,
      StrCat("/v2/payments/refunds?paypal_request_id=", card::FormEncode(idempotency_key)), 11};
  req.set(http::field::authorization, StrCat("Bearer ", token.Reveal()));
  return req;
}

bool IsTokenRejected(int http_status, std::string_view body) {
  if (http_status != 401) return false;
  json j = ParseJson(body);
  return !j.is_discarded() && j.is_object() && JsonString(j, "error") == "invalid_token";
}

ChargeOutcome ParseCaptureResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  const bool object = !j.is_discarded() && j.is_object();
  if (http_status == 200 || http_status == 201) {
    if (!object || JsonString(j, "status") != "COMPLETED") {
      out.result = ChargeResult::kUnknown;  // it said OK: money may have moved
      out.message = "unexpected capture response";
      return out;
    }
    out.result = ChargeResult::kApproved;
    out.provider_reference = JsonString(j, "id");
    try {
      out.provider_reference = j.at("purchase_units").at(0).at("payments").at("captures").at(0).at("id").get<std::string>();
    } catch (const json::exception&) {
      // keep the order id
    }
    return out;
  }
  if (http_status == 422 && object) {
    // INSTRUMENT_DECLINED, ORDER_NOT_APPROVED, ORDER_ALREADY_CAPTURED...: the
    // capture was refused; nothing was charged by this request.
    out.result = ChargeResult::kDeclined;
    out.decline_code = IssueOf(j);
    out.message = JsonString(j, "message");
    return out;
  }
  if (http_status >= 500) {
    const bool not_charged = SaysNotCharged(j);
    out.result = not_charged ? ChargeResult::kFailed : ChargeResult::kUnknown;
    out.message = StrCat("PayPal error ", http_status, object ? " " + JsonString(j, "name") : "");
    return out;
  }
  out.result = ChargeResult::kFailed;  // 4xx: the request itself was refused
  out.message = StrCat("PayPal rejected the request (HTTP ", http_status,
                       object && !IssueOf(j).empty() ? ": " + IssueOf(j) : "", ")");
  return out;
}

ChargeOutcome ParseLookupResponse(int http_status, std::string_view body) {
  return ParseLookupList(http_status, body, "captures", "PayPal lookup", [](const json& c) {
    ChargeOutcome out;
    out.provider_reference = JsonString(c, "id");
    const std::string status = JsonString(c, "status");
    if (status == "COMPLETED") {
      out.result = ChargeResult::kApproved;
    } else if (status == "DECLINED" || status == "FAILED") {
      out.result = ChargeResult::kDeclined;
      out.decline_code = JsonString(c, "issue");
    } else {
      out.result = ChargeResult::kUnknown;
      out.message = StrCat("capture in state \"", status, "\"");
    }
    return out;
  });
}

namespace {

// A refund object (the refund call's answer, a lookup's item) as an outcome.
ChargeOutcome FromRefundObject(const json& refund) {
  ChargeOutcome out;
  out.provider_reference = JsonString(refund, "id");
  const std::string status = JsonString(refund, "status");
  if (status == "FAILED" || status == "CANCELLED") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = StrCat("REFUND_", status);
    out.message = "PayPal did not complete the refund";
  } else if (status != "COMPLETED") {
    out.result = ChargeResult::kUnknown;  // PENDING: it may yet complete
    out.message = StrCat("refund in state \"", status, "\"");
  } else if (out.provider_reference.empty()) {
    out.result = ChargeResult::kUnknown;  // refunded, but under no reference we could keep
    out.message = "completed refund without an id";
  } else {
    out.result = ChargeResult::kApproved;
  }
  return out;
}

}  // namespace

ChargeOutcome ParseRefundResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  const bool object = !j.is_discarded() && j.is_object();
  if (http_status >= 200 && http_status < 300) {
    if (!object) {
      out.result = ChargeResult::kUnknown;  // it said OK: it may have refunded
      out.message = "unreadable refund response";
      return out;
    }
    return FromRefundObject(j);
  }
  if (http_status >= 500) {
    out.result = SaysNotCharged(j) ? ChargeResult::kFailed : ChargeResult::kUnknown;
    out.message = StrCat("PayPal error ", http_status, object ? " " + JsonString(j, "name") : "");
    return out;
  }
  const std::string issue = object ? IssueOf(j) : "";
  if (http_status == 422 && !issue.empty() && issue != "PAYPAL_REQUEST_ID_PREVIOUSLY_USED") {
    // The capture cannot be refunded as asked; nothing was refunded by this request.
    out.result = ChargeResult::kDeclined;
    out.decline_code = issue;
    out.message = StrCat("PayPal refused the refund: ", issue);
    return out;
  }
  // 4xx: the request itself was refused (unknown capture, bad body, token,
  // a request id that names another request); nothing was refunded by it.
  out.result = ChargeResult::kFailed;
  out.message = StrCat("PayPal rejected the refund request (HTTP ", http_status,
                       issue.empty() ? "" : ": " + issue, ")");
  return out;
}

ChargeOutcome ParseRefundLookupResponse(int http_status, std::string_view body) {
  return ParseLookupList(http_status, body, "refunds", "PayPal refund lookup", FromRefundObject);
}

}  // namespace recharge::paypal
