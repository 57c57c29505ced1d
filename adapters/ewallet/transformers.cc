#include "adapters/ewallet/transformers.h"

#include <nlohmann/json.hpp>

#include "adapters/json_fields.h"
#include "adapters/lookup_list.h"

#include "adapters/card/transformers.h"
#include "io/crypto.h"
#include "io/strings.h"

namespace recharge::ewallet {
namespace {

using nlohmann::json;

// The wallets keep a refund reason of at most 255 characters and refuse a
// longer one.
constexpr size_t kMaxReasonChars = 255;

void Sign(http::request<http::string_body>& req, const Secret& secret, int64_t timestamp) {
  req.set("X-Timestamp", std::to_string(timestamp));
  req.set("X-Signature", Signature(secret, timestamp, std::string(req.method_string()),
                                   std::string(req.target()), req.body()));
}

// A signed JSON POST under an idempotency key. A string that is not UTF-8
// must not throw: its bad bytes become U+FFFD.
http::request<http::string_body> SignedPost(std::string target, std::string_view idempotency_key,
                                            const json& body, const Secret& secret,
                                            int64_t timestamp) {
  http::request<http::string_body> req{http::verb::post, std::move(target), 11};
  req.set(http::field::content_type, "application/json");
  req.set("X-Idempotency-Key", std::string(idempotency_key));
  req.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  Sign(req, secret, timestamp);
  return req;
}

// A signed lookup: GET /ewallet/v1/{provider}/{what}?idempotency_key=K.
http::request<http::string_body> SignedLookup(std::string_view provider, std::string_view what,
                                              std::string_view idempotency_key,
                                              const Secret& secret, int64_t timestamp) {
  http::request<http::string_body> req{
      http::verb::get,
      StrCat("/ewallet/v1/", card::FormEncode(provider), "/", what,
             "?idempotency_key=", card::FormEncode(idempotency_key)),
      11};
  Sign(req, secret, timestamp);
  return req;
}

ChargeOutcome FromPayment(const json& p,
                          NextActionInfo::Type action = NextActionInfo::Type::kRedirect) {
  ChargeOutcome out;
  out.provider_reference = JsonString(p, "payment_id");
  const std::string status = JsonString(p, "status");
  if (status == "SUCCESS") {
    out.result = ChargeResult::kApproved;
  } else if (status == "FAILED") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(p, "failure_code");
    out.message = "the wallet refused the payment";
  } else if (status == "CANCELLED") {
    out.result = ChargeResult::kFailed;
    out.decline_code = "cancelled";
    out.message = "the payment was cancelled before it was approved";
  } else if (status == "PENDING_APPROVAL") {
    const char* field = action == NextActionInfo::Type::kDeepLink ? "deep_link"
                        : action == NextActionInfo::Type::kQr     ? "qr_payload"
                                                                  : "approval_url";
    const std::string url = JsonString(p, field);
    if (url.empty()) {
      out.result = ChargeResult::kUnknown;
      out.message = StrCat("PENDING_APPROVAL without ", field);
      return out;
    }
    out.result = ChargeResult::kRequiresAction;
    out.next_action = NextActionInfo{action, url, {}};
    out.message = "waiting for the account holder's approval in the wallet";
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
                                                     const Secret& secret, int64_t timestamp,
                                                     const PaymentFlow& flow) {
  json body = {{"merchant_ref", request.recharge_id},
               {"account_id", request.wallet_account},
               {"amount", request.minor_units},
               {"currency", request.currency}};
  if (flow.redirect) {
    body["flow"] = "redirect";
    if (!flow.notify_url.empty()) body["notify_url"] = flow.notify_url;
  }
  return SignedPost(StrCat("/ewallet/v1/", card::FormEncode(provider), "/payments"),
                    request.idempotency_key, body, secret, timestamp);
}

http::request<http::string_body> BuildLookupRequest(std::string_view idempotency_key,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp) {
  return SignedLookup(provider, "payments", idempotency_key, secret, timestamp);
}

http::request<http::string_body> BuildRefundRequest(const PaymentOperation& op,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp) {
  json body = {{"amount", op.minor_units}};
  // A longer reason is cut, the same way on every retry (the key's replay
  // compares the reason).
  if (!op.reason.empty()) body["reason"] = FirstChars(op.reason, kMaxReasonChars);
  return SignedPost(StrCat("/ewallet/v1/", card::FormEncode(provider), "/payments/",
                           card::FormEncode(op.provider_reference), "/refunds"),
                    op.idempotency_key, body, secret, timestamp);
}

http::request<http::string_body> BuildRefundLookupRequest(std::string_view idempotency_key,
                                                          std::string_view provider,
                                                          const Secret& secret, int64_t timestamp) {
  return SignedLookup(provider, "refunds", idempotency_key, secret, timestamp);
}

http::request<http::string_body> BuildCancelRequest(const PaymentOperation& op,
                                                    std::string_view provider,
                                                    const Secret& secret, int64_t timestamp) {
  return SignedPost(StrCat("/ewallet/v1/", card::FormEncode(provider), "/payments/",
                           card::FormEncode(op.provider_reference), "/cancel"),
                    op.idempotency_key, json::object(), secret, timestamp);
}

ChargeOutcome ParseCancelResponse(int http_status, std::string_view body) {
  ChargeOutcome out;
  json j = ParseJson(body);
  const bool object = !j.is_discarded() && j.is_object();
  const std::string code = object ? JsonString(j, "code") : "";
  if (http_status == 200 && object) {
    out.provider_reference = JsonString(j, "payment_id");
    const std::string status = JsonString(j, "status");
    if (status == "CANCELLED") {
      out.result = ChargeResult::kApproved;
    } else {
      out.result = ChargeResult::kDeclined;
      out.decline_code = status.empty() ? "ALREADY_COMPLETED" : status;
      out.message = StrCat("the payment is ", status, ", not cancelled");
    }
    return out;
  }
  if (http_status == 200 || http_status >= 500) {
    out.result = object && SaysNotCharged(j) ? ChargeResult::kFailed : ChargeResult::kUnknown;
    out.message = StrCat("wallet error ", http_status, code.empty() ? "" : " " + code);
    return out;
  }
  if (http_status == 409 && code == "ALREADY_COMPLETED") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = code;
    out.message = "the payment was completed before it could be cancelled";
    return out;
  }
  out.result = ChargeResult::kFailed;
  out.message = StrCat("wallet rejected the cancel (HTTP ", http_status,
                       code.empty() ? "" : ": " + code, ")");
  return out;
}

ChargeOutcome ParsePaymentResponse(int http_status, std::string_view body,
                                   NextActionInfo::Type action) {
  ChargeOutcome out;
  json j = ParseJson(body);
  const bool object = !j.is_discarded() && j.is_object();
  if (http_status == 200) {
    if (!object) {
      out.result = ChargeResult::kUnknown;
      out.message = "unreadable payment response";
      return out;
    }
    return FromPayment(j, action);
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
  return ParseLookupList(http_status, body, "payments", "wallet lookup",
                         [](const json& p) { return FromPayment(p); });
}

namespace {

// A refund (the refund call's answer, a lookup's item) as an outcome.
ChargeOutcome FromRefund(const json& refund) {
  ChargeOutcome out;
  out.provider_reference = JsonString(refund, "refund_id");
  const std::string status = JsonString(refund, "status");
  if (status == "FAILED") {
    out.result = ChargeResult::kDeclined;
    out.decline_code = JsonString(refund, "failure_code");
    if (out.decline_code.empty()) out.decline_code = "REFUND_FAILED";
    out.message = "the wallet did not refund the payment";
  } else if (status != "REFUNDED") {
    out.result = ChargeResult::kUnknown;  // in progress: it may yet be refunded
    out.message = StrCat("refund in state \"", status, "\"");
  } else if (out.provider_reference.empty()) {
    out.result = ChargeResult::kUnknown;  // refunded, but under no reference we could keep
    out.message = "refund without a refund_id";
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
    return FromRefund(j);
  }
  const std::string code = object ? JsonString(j, "code") : "";
  if (http_status >= 500) {
    out.result = SaysNotCharged(j) ? ChargeResult::kFailed : ChargeResult::kUnknown;
    out.message = StrCat("wallet error ", http_status, code.empty() ? "" : " " + code);
    return out;
  }
  if (http_status == 409 && !code.empty() && code != "IDEMPOTENCY_CONFLICT") {
    // The payment cannot be refunded; nothing was refunded by this request.
    out.result = ChargeResult::kDeclined;
    out.decline_code = code;
    out.message = StrCat("the wallet refused the refund: ", code);
    return out;
  }
  // 4xx (bad signature, unknown payment or provider, bad amount, a key that
  // names another request): refused before anything was refunded.
  out.result = ChargeResult::kFailed;
  out.message = StrCat("wallet rejected the refund request (HTTP ", http_status,
                       code.empty() ? "" : ": " + code, ")");
  return out;
}

ChargeOutcome ParseRefundLookupResponse(int http_status, std::string_view body) {
  return ParseLookupList(http_status, body, "refunds", "wallet refund lookup", FromRefund);
}

absl::StatusOr<ProviderNotification> ParseNotification(std::string_view body) {
  const json j = ParseJson(body);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("body: not a JSON object");
  ProviderNotification out;
  out.event_id = JsonString(j, "event_id");
  out.event_type = JsonString(j, "event_type");
  if (out.event_id.empty()) return absl::InvalidArgumentError("event_id: missing");
  if (out.event_type.empty()) return absl::InvalidArgumentError("event_type: missing");
  auto payment = j.find("payment");
  if (payment == j.end() || !payment->is_object()) return absl::InvalidArgumentError("payment: missing");
  out.outcome = FromPayment(*payment);
  out.recharge_id = JsonString(*payment, "merchant_ref");
  if (out.outcome.provider_reference.empty()) return absl::InvalidArgumentError("payment.payment_id: missing");
  if (out.recharge_id.empty()) return absl::InvalidArgumentError("payment.merchant_ref: missing");
  return out;
}

}  // namespace recharge::ewallet
