#include "sandbox/paypal_api.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "absl/base/thread_annotations.h"

#include "io/crypto.h"
#include "io/strings.h"
#include "sandbox/idempotency.h"

namespace recharge::sandbox {
namespace {

constexpr std::string_view kApiName = "paypal";
constexpr size_t kMaxRequestIdLen = 108;
constexpr size_t kMaxNoteLen = 255;
constexpr int64_t kMaxAmount = 99'999'999'999;
constexpr std::string_view kTokenPrefix = "A21AA";
constexpr std::string_view kScope =
    "https://uri.paypal.com/services/payments/payment "
    "https://uri.paypal.com/services/payments/refund "
    "https://uri.paypal.com/services/payments/orders/readwrite";
constexpr std::string_view kInvalidMessage =
    "Request is not well-formed, syntactically incorrect, or violates schema.";
constexpr std::string_view kUnprocessableMessage =
    "The requested action could not be performed, semantically incorrect, or failed business "
    "validation.";
constexpr std::string_view kUnavailableSuffix = "UNAVAILABLE";

struct Decline {
  std::string_view suffix, issue, description;
};
// Checked in this order.
constexpr Decline kDeclines[] = {
    {"DECLINED", "INSTRUMENT_DECLINED",
     "The instrument presented was either declined by the processor or bank, or it can't be used "
     "for this payment."},
    {"NOTAPPROVED", "ORDER_NOT_APPROVED",
     "Payer has not yet approved the Order for payment. Please redirect the payer to the "
     "'rel':'approve' url returned as part of the HATEOAS links within the Create Order call or "
     "provide a valid payment_source in the request."},
    {"CAPTURED", "ORDER_ALREADY_CAPTURED",
     "Order already captured. If 'intent=CAPTURE' only one capture per order is allowed."},
};

std::string_view IssueDescription(std::string_view issue) {
  for (const Decline& d : kDeclines) {
    if (d.issue == issue) return d.description;
  }
  return {};
}

int MinorDigits(std::string_view currency) {
  return currency == "JPY" || currency == "KRW" || currency == "VND" ? 0 : 2;
}

// "12.34" -> 1234 minor units, or nullopt if malformed for the currency:
// (0|[1-9][0-9]{0,14}) with at most MinorDigits decimals.
std::optional<int64_t> ParseAmountValue(std::string_view value, std::string_view currency) {
  const int digits = MinorDigits(currency);
  size_t dot = value.find('.');
  std::string_view whole = value.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : value.substr(dot + 1);
  if (!IsAsciiDigits(whole) || whole.size() > 15 || (whole.size() > 1 && whole[0] == '0')) {
    return std::nullopt;
  }
  if (dot != std::string_view::npos &&
      (digits == 0 || !IsAsciiDigits(frac) || frac.size() > static_cast<size_t>(digits))) {
    return std::nullopt;
  }
  int64_t v = 0;
  for (char c : whole) v = v * 10 + (c - '0');
  int64_t f = 0;
  for (int i = 0; i < digits; ++i) {
    f = f * 10 + (static_cast<size_t>(i) < frac.size() ? frac[static_cast<size_t>(i)] - '0' : 0);
    v *= 10;
  }
  return v + f;
}

std::string FormatAmount(int64_t minor, std::string_view currency) {
  if (MinorDigits(currency) == 0) return std::to_string(minor);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%lld.%02lld", static_cast<long long>(minor / 100),
                static_cast<long long>(minor % 100));
  return buf;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::abort();  // the CSPRNG failing is not a state to continue in
  }
  return out;
}

std::string RandomDebugId() { return RandomHex(7).substr(0, 13); }

std::string DerivedId(std::string_view a, std::string_view b) {
  return HexEncode(Sha256(StrCat(a, std::string_view("\0", 1), b))).substr(0, 13);
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

Response Invalid(std::string_view field, std::string_view location, std::string_view issue,
                 std::string_view description, int status = 400,
                 std::string_view name = "INVALID_REQUEST",
                 std::string_view message = kInvalidMessage) {
  Json detail = Json::object();
  detail["field"] = field;
  detail["location"] = location;
  detail["issue"] = issue;
  detail["description"] = description;
  Json body = Json::object();
  body["name"] = name;
  body["message"] = message;
  body["debug_id"] = RandomDebugId();
  body["details"] = Json::array({std::move(detail)});
  return Response::FromJson(status, body);
}

Response OauthError(int status, std::string_view error, std::string_view description) {
  Json body = Json::object();
  body["error"] = error;
  body["error_description"] = description;
  return Response::FromJson(status, body);
}

// One capture taken (or rebuilt from the journal). A refund makes a new
// Capture (copy on write): the one stored under the capture call's key
// stays as it was answered.
struct Capture final : StoredResult {
  std::string id;
  std::string order_id;
  int64_t amount = 0;
  std::string currency;
  std::string status;  // "succeeded" | "failed"
  std::string decline_code;  // the issue of a failed capture
  std::optional<std::string> idempotency_key;
  double ts = 0;
  std::string refund_id;  // set once refunded (always in full)
};

struct CaptureParams {
  std::string order_id;
  int64_t amount = 0;
  std::string currency;
};

// One refund of a capture, in full (taken or rebuilt from the journal); also
// what is stored under its PayPal-Request-Id.
struct Refund final : StoredResult {
  std::string id;
  std::string capture_id;
  int64_t amount = 0;
  std::string currency;
  std::optional<std::string> note_to_payer;
  std::optional<std::string> idempotency_key;
  double ts = 0;
};

struct RefundParams {
  std::string capture_id;
  std::optional<int64_t> amount;  // if given, in `currency`
  std::string currency;
  std::optional<std::string> note_to_payer;
};

// Captures by id as they are now, and refunds by id.
class PaymentIndex {
 public:
  void Put(std::shared_ptr<const Capture> cap) {
    std::lock_guard lock(mu_);
    captures_[cap->id] = std::move(cap);
  }
  void Put(std::shared_ptr<const Refund> refund) {
    std::lock_guard lock(mu_);
    refunds_[refund->id] = std::move(refund);
  }
  std::shared_ptr<const Capture> GetCapture(std::string_view id) {
    std::lock_guard lock(mu_);
    auto it = captures_.find(std::string(id));
    return it == captures_.end() ? nullptr : it->second;
  }
  std::shared_ptr<const Refund> GetRefund(std::string_view id) {
    std::lock_guard lock(mu_);
    auto it = refunds_.find(std::string(id));
    return it == refunds_.end() ? nullptr : it->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Capture>> captures_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, std::shared_ptr<const Refund>> refunds_ ABSL_GUARDED_BY(mu_);
};

class PaypalApi final : public SandboxApi {
 public:
  PaypalApi(std::optional<PaypalCredentials> credentials, Journal& journal,
            const ApiConfig& config, Stats& stats)
      : credentials_(std::move(credentials)), journal_(journal), config_(config), stats_(stats) {
    if (credentials_) {
      token_key_ = Secret(HmacSha256(
          credentials_->client_secret,
          StrCat(std::string_view("psp-sandbox paypal token key\0", 29), credentials_->client_id)));
    }
  }

  std::string_view name() const override { return kApiName; }

  void AddRoutes(Router& router, int api_index) override {
    router.Add("POST", "/v1/oauth2/token", [this](Request& r) { return Token(r); }, api_index);
    router.Add("POST", "/v2/checkout/orders/*/capture", [this](Request& r) { return CaptureOrder(r); },
               api_index);
    router.Add("GET", "/v2/payments/captures", [this](Request& r) { return SearchCaptures(r); },
               api_index);
    router.Add("GET", "/v2/payments/captures/*", [this](Request& r) { return GetCapture(r); },
               api_index);
    router.Add("POST", "/v2/payments/captures/*/refund",
               [this](Request& r) { return RefundCapture(r); }, api_index);
    router.Add("GET", "/v2/payments/refunds", [this](Request& r) { return SearchRefunds(r); },
               api_index);
    router.Add("GET", "/v2/payments/refunds/*", [this](Request& r) { return GetRefund(r); },
               api_index);
  }

  // Journal lines come in the order they were taken: a capture line, then
  // the refund line ("op":"refund") of that capture, if any.
  absl::Status Restore(const Json& rec) override {
    if (!rec.contains("op")) return RestoreCapture(rec);
    if (rec["op"] != "refund") return absl::DataLossError("paypal journal record: bad op");
    return RestoreRefund(rec);
  }

 private:
  absl::Status RestoreCapture(const Json& rec) {
    auto cap = std::make_shared<Capture>();
    try {
      cap->id = rec.at("id").get<std::string>();
      cap->order_id = rec.at("order_id").get<std::string>();
      cap->amount = rec.at("amount").get<int64_t>();
      cap->currency = rec.at("currency").get<std::string>();
      cap->status = rec.at("status").get<std::string>();
      if (rec.contains("decline_code") && rec["decline_code"].is_string()) {
        cap->decline_code = rec["decline_code"].get<std::string>();
      }
      if (rec.contains("idempotency_key") && rec["idempotency_key"].is_string()) {
        cap->idempotency_key = rec["idempotency_key"].get<std::string>();
      }
      cap->ts = rec.at("ts").get<double>();
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("paypal journal record: ", e.what()));
    }
    if (cap->status != "succeeded" && cap->status != "failed") {
      return absl::DataLossError(StrCat("paypal journal record ", cap->id, ": bad status"));
    }
    if (cap->status == "failed" && IssueDescription(cap->decline_code).empty()) {
      return absl::DataLossError(StrCat("paypal journal record ", cap->id, ": unknown issue"));
    }
    if (cap->idempotency_key && !cap->idempotency_key->empty()) {
      store_.Put(*cap->idempotency_key, cap);
    }
    index_.Put(cap);
    return absl::OkStatus();
  }

  // A refund line: its capture must be journaled before it and refundable.
  absl::Status RestoreRefund(const Json& rec) {
    auto refund = std::make_shared<Refund>();
    try {
      refund->id = rec.at("id").get<std::string>();
      refund->capture_id = rec.at("capture_id").get<std::string>();
      refund->amount = rec.at("amount").get<int64_t>();
      refund->currency = rec.at("currency").get<std::string>();
      if (rec.contains("note_to_payer") && rec["note_to_payer"].is_string()) {
        refund->note_to_payer = rec["note_to_payer"].get<std::string>();
      }
      if (rec.contains("idempotency_key") && rec["idempotency_key"].is_string()) {
        refund->idempotency_key = rec["idempotency_key"].get<std::string>();
      }
      refund->ts = rec.at("ts").get<double>();
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("paypal journal record: ", e.what()));
    }
    std::shared_ptr<const Capture> cap = index_.GetCapture(refund->capture_id);
    if (cap == nullptr || !RefundRefusal(*cap).empty() || cap->amount != refund->amount ||
        cap->currency != refund->currency) {
      return absl::DataLossError(StrCat("paypal journal record ", refund->id,
                                        ": not a full refund of a refundable capture"));
    }
    auto refunded = std::make_shared<Capture>(*cap);
    refunded->refund_id = refund->id;
    index_.Put(refunded);
    index_.Put(refund);
    if (refund->idempotency_key && !refund->idempotency_key->empty()) {
      store_.Put(*refund->idempotency_key, refund);
    }
    return absl::OkStatus();
  }

  // POST /v1/oauth2/token
  asio::awaitable<Response> Token(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (!CheckBasic(req.header("Authorization"))) {
      co_return OauthError(401, "invalid_client", "Client Authentication failed");
    }
    std::vector<std::string> grant;
    if (ValidUtf8(req.body)) grant = QueryValues(req.body, "grant_type");
    if (grant.size() != 1 || grant[0] != "client_credentials") {
      const bool null = grant.empty() || (grant.size() == 1 && grant[0].empty());
      co_return OauthError(400, "unsupported_grant_type",
                           null ? "Grant Type is NULL" : "unsupported grant_type");
    }
    const int64_t ttl = config_.token_ttl_s();
    const double now = NowSeconds();
    std::string token = IssueToken(now + static_cast<double>(ttl));
    stats_.CountTokenGrant();
    Json body = Json::object();
    body["scope"] = kScope;
    body["access_token"] = std::move(token);
    body["token_type"] = "Bearer";
    body["app_id"] = "APP-SANDBOX";
    body["expires_in"] = ttl;
    body["nonce"] = StrCat(IsoTime(now), Base64UrlEncode(RandomBytes(32)));
    Response resp = Response::FromJson(200, body);
    resp.log_key = "-";
    co_return resp;
  }

  // POST /v2/checkout/orders/{order_id}/capture
  asio::awaitable<Response> CaptureOrder(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    CaptureParams params;
    params.order_id = std::string(req.path_params.at(0));
    if (params.order_id.size() > 64 ||
        !std::all_of(params.order_id.begin(), params.order_id.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        })) {
      co_return Invalid("order_id", "path", "INVALID_PARAMETER_VALUE",
                        "The order id must be 1-64 characters of A-Z a-z 0-9 _ -.");
    }
    std::optional<std::string> key;
    if (std::optional<Response> err = RequestId(req, &key)) co_return *std::move(err);
    if (std::optional<Response> err = ParseBody(req, &params)) co_return *std::move(err);
    auto take = [&](IdempotencyStore::Hold* hold) { return TakeCapture(params, key, hold); };
    auto replay = [&](const StoredResult& prior) { return Replay(prior, params); };
    co_return co_await TakeOrReplay(config_, store_, req, key, key.value_or(""), take, replay);
  }

  // GET /v2/payments/captures?paypal_request_id=K
  asio::awaitable<Response> SearchCaptures(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::vector<std::string> values = QueryValues(req.query, "paypal_request_id");
    if (values.size() != 1 || values[0].empty()) {
      co_return Invalid("paypal_request_id", "query", "MISSING_REQUIRED_PARAMETER",
                        "Exactly one paypal_request_id query parameter is required.");
    }
    const std::string key = values[0];
    std::shared_ptr<const StoredResult> prior;
    {
      IdempotencyStore::Hold hold = co_await store_.Acquire(key);  // waits for an in-flight one
      prior = hold.prior();
    }
    Json captures = Json::array();
    if (const auto* cap = dynamic_cast<const Capture*>(prior.get())) {
      std::shared_ptr<const Capture> now = index_.GetCapture(cap->id);  // refunded since?
      captures.push_back(LookupObject(now != nullptr ? *now : *cap));
    }
    Json body = Json::object();
    body["captures"] = std::move(captures);
    Response resp = Response::FromJson(200, body);
    resp.log_key = key;
    co_return resp;
  }

  // GET /v2/payments/captures/{capture_id}: the capture as it is now.
  asio::awaitable<Response> GetCapture(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::shared_ptr<const Capture> cap = index_.GetCapture(req.path_params.at(0));
    if (cap == nullptr) co_return NotFound("capture_id");
    co_return Response::FromJson(200, LookupObject(*cap));
  }

  // POST /v2/payments/captures/{capture_id}/refund: a full refund.
  asio::awaitable<Response> RefundCapture(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    std::optional<std::string> key;
    if (std::optional<Response> err = RequestId(req, &key)) co_return *std::move(err);
    RefundParams params;
    params.capture_id = std::string(req.path_params.at(0));
    if (std::optional<Response> err = ParseRefundBody(req, &params)) co_return *std::move(err);
    std::shared_ptr<const Capture> cap = index_.GetCapture(params.capture_id);
    if (cap == nullptr) co_return NotFound("capture_id");
    if (params.amount) {  // full refunds only
      if (params.currency != cap->currency) {
        co_return Unprocessable("/amount/currency_code", "REFUND_CAPTURE_CURRENCY_MISMATCH",
                                "Refund must be in the same currency as the capture.");
      }
      if (*params.amount < cap->amount) {
        co_return Unprocessable("/amount/value", "PARTIAL_REFUND_NOT_ALLOWED",
                                "The sandbox refunds captures in full only: omit amount or give "
                                "the captured amount.");
      }
      if (*params.amount > cap->amount) {
        co_return Unprocessable("/amount/value", "REFUND_AMOUNT_EXCEEDED",
                                "The refund amount must be less than or equal to the capture "
                                "amount that has not yet been refunded.");
      }
    }
    auto take = [&](IdempotencyStore::Hold* hold) { return TakeRefund(params, key, hold); };
    auto replay = [&](const StoredResult& prior) { return ReplayRefund(prior, params); };
    co_return co_await TakeOrReplay(config_, store_, req, key, key.value_or(""), take, replay);
  }

  // GET /v2/payments/refunds/{refund_id}
  asio::awaitable<Response> GetRefund(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::shared_ptr<const Refund> refund = index_.GetRefund(req.path_params.at(0));
    if (refund == nullptr) co_return NotFound("refund_id");
    co_return Response::FromJson(200, RefundObject(*refund));
  }

  // GET /v2/payments/refunds?paypal_request_id=K: {"refunds":[]} or one;
  // waits for a refund in flight under the key.
  asio::awaitable<Response> SearchRefunds(Request& req) {
    if (std::optional<Response> err = RequireEnabled()) co_return *std::move(err);
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::vector<std::string> values = QueryValues(req.query, "paypal_request_id");
    if (values.size() != 1 || values[0].empty()) {
      co_return Invalid("paypal_request_id", "query", "MISSING_REQUIRED_PARAMETER",
                        "Exactly one paypal_request_id query parameter is required.");
    }
    const std::string key = values[0];
    std::shared_ptr<const StoredResult> prior;
    {
      IdempotencyStore::Hold hold = co_await store_.Acquire(key);
      prior = hold.prior();
    }
    Json refunds = Json::array();
    if (const auto* refund = dynamic_cast<const Refund*>(prior.get())) {
      refunds.push_back(RefundObject(*refund));
    }
    Json body = Json::object();
    body["refunds"] = std::move(refunds);
    Response resp = Response::FromJson(200, body);
    resp.log_key = key;
    co_return resp;
  }

  static std::optional<Response> RequestId(const Request& req, std::optional<std::string>* key) {
    std::optional<std::string_view> value = req.header("PayPal-Request-Id");
    if (!value) return std::nullopt;
    if (value->empty() || value->size() > kMaxRequestIdLen || !IsVisibleAscii(*value)) {
      return Invalid("PayPal-Request-Id", "header", "INVALID_PARAMETER_VALUE",
                     "PayPal-Request-Id must be 1-108 printable ASCII characters without spaces.");
    }
    *key = std::string(*value);
    return std::nullopt;
  }

  static Response NotFound(std::string_view field) {
    return Invalid(field, "path", "INVALID_RESOURCE_ID",
                   "Specified resource ID does not exist. Please check the resource ID and try "
                   "again.",
                   404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.");
  }

  static Response Unprocessable(std::string_view field, std::string_view issue,
                                std::string_view description) {
    return Invalid(field, "body", issue, description, 422, "UNPROCESSABLE_ENTITY",
                   kUnprocessableMessage);
  }

  // Why the capture cannot be refunded now (an issue), or empty.
  static std::string_view RefundRefusal(const Capture& cap) {
    if (cap.status != "succeeded") return "REFUND_NOT_ALLOWED";
    if (!cap.refund_id.empty()) return "CAPTURE_FULLY_REFUNDED";
    return {};
  }

  // An empty body, or a JSON object with `amount` (the captured amount) and
  // `note_to_payer` (at most 255 characters), both optional.
  static std::optional<Response> ParseRefundBody(const Request& req, RefundParams* out) {
    if (TrimSpace(req.body).empty()) return std::nullopt;
    std::optional<Json> body;
    if (std::optional<Response> err = ParseJsonObject(req, &body)) return err;
    for (auto& [k, v] : body->items()) {
      if (k != "amount" && k != "note_to_payer") {
        return Invalid(StrCat("/", Utf8Prefix(k, 100)), "body", "UNKNOWN_FIELD",
                       "Only amount and note_to_payer are accepted by the sandbox.");
      }
    }
    if (body->contains("note_to_payer")) {
      const Json& note = (*body)["note_to_payer"];
      if (!note.is_string() || Utf8Length(note.get<std::string>()) > kMaxNoteLen) {
        return Invalid("/note_to_payer", "body", "INVALID_PARAMETER_VALUE",
                       "note_to_payer must be a string of at most 255 characters.");
      }
      out->note_to_payer = note.get<std::string>();
    }
    if (body->contains("amount")) {
      int64_t minor = 0;
      if (std::optional<Response> err = ParseAmount(*body, &minor, &out->currency)) return err;
      out->amount = minor;
    }
    return std::nullopt;
  }

  // Same capture and note under the same PayPal-Request-Id: the stored answer.
  static Response ReplayRefund(const StoredResult& stored, const RefundParams& params) {
    const auto* prior = dynamic_cast<const Refund*>(&stored);
    if (prior == nullptr || prior->capture_id != params.capture_id ||
        prior->note_to_payer != params.note_to_payer) {
      return RequestIdReused();
    }
    Response resp = Response::FromJson(201, RefundObject(*prior));
    resp.headers.emplace_back("PayPal-Request-Id-Replayed", "true");
    resp.replayed = true;
    return resp;
  }

  static Response RequestIdReused() {
    return Invalid("PayPal-Request-Id", "header", "PAYPAL_REQUEST_ID_PREVIOUSLY_USED",
                   "The PayPal-Request-Id has already been used for another request.", 422,
                   "UNPROCESSABLE_ENTITY", kUnprocessableMessage);
  }

  // Under the capture's lock: checks the capture as it is now, journals the
  // refund, then applies it. A refusal or error changes, journals and stores
  // nothing.
  asio::awaitable<Response> TakeRefund(const RefundParams& params,
                                       const std::optional<std::string>& key,
                                       IdempotencyStore::Hold* hold) {
    if (config_.InjectError()) co_return ServerError();
    IdempotencyStore::Hold capture_lock = co_await capture_locks_.Acquire(params.capture_id);
    std::shared_ptr<const Capture> cap = index_.GetCapture(params.capture_id);
    if (std::string_view issue = RefundRefusal(*cap); !issue.empty()) {
      co_return Unprocessable("capture_id", issue,
                              issue == "CAPTURE_FULLY_REFUNDED"
                                  ? "Capture has already been fully refunded."
                                  : "The capture was declined: there is nothing to refund.");
    }
    auto refund = std::make_shared<Refund>();
    refund->id = StrCat("REF", Upper(RandomHex(9).substr(0, 17)));
    refund->capture_id = cap->id;
    refund->amount = cap->amount;
    refund->currency = cap->currency;
    refund->note_to_payer = params.note_to_payer;
    refund->idempotency_key = key;
    refund->ts = NowSeconds();

    Json rec = Json::object();
    rec["ts"] = refund->ts;
    rec["api"] = kApiName;
    rec["op"] = "refund";
    rec["id"] = refund->id;
    rec["capture_id"] = refund->capture_id;
    rec["idempotency_key"] = key ? Json(*key) : Json(nullptr);
    rec["amount"] = refund->amount;
    rec["currency"] = refund->currency;
    rec["status"] = "succeeded";
    rec["note_to_payer"] = refund->note_to_payer ? Json(*refund->note_to_payer) : Json(nullptr);
    if (!co_await journal_.Append(rec)) co_return ServerError();  // not journaled: not refunded
    auto refunded = std::make_shared<Capture>(*cap);
    refunded->refund_id = refund->id;
    index_.Put(refunded);
    index_.Put(refund);
    if (hold != nullptr) hold->Put(refund);
    co_return Response::FromJson(201, RefundObject(*refund));
  }

  // The refund resource (the refund call's answer, GET and search items): a
  // pure function of the journaled record.
  static Json RefundObject(const Refund& refund) {
    Json amount = Json::object();
    amount["currency_code"] = refund.currency;
    amount["value"] = FormatAmount(refund.amount, refund.currency);
    Json self = Json::object();
    self["href"] = StrCat("/v2/payments/refunds/", refund.id);
    self["rel"] = "self";
    self["method"] = "GET";
    Json up = Json::object();
    up["href"] = StrCat("/v2/payments/captures/", refund.capture_id);
    up["rel"] = "up";
    up["method"] = "GET";
    Json obj = Json::object();
    obj["id"] = refund.id;
    obj["status"] = "COMPLETED";
    obj["amount"] = std::move(amount);
    if (refund.note_to_payer) obj["note_to_payer"] = *refund.note_to_payer;
    obj["paypal_request_id"] =
        refund.idempotency_key ? Json(*refund.idempotency_key) : Json(nullptr);
    obj["create_time"] = IsoTime(refund.ts);
    obj["links"] = Json::array({std::move(self), std::move(up)});
    return obj;
  }

  std::optional<Response> RequireEnabled() const {
    if (credentials_) return std::nullopt;
    Json body = Json::object();
    body["name"] = "RESOURCE_NOT_FOUND";
    body["message"] =
        "The PayPal API is not enabled: start the sandbox with --paypal-credentials-file.";
    body["debug_id"] = RandomDebugId();
    return Response::FromJson(404, body);
  }

  // HTTP Basic with strict base64 (padding required, no stray characters).
  bool CheckBasic(std::optional<std::string_view> header) const {
    auto [scheme, value] = SplitAuthorization(header);
    if (!EqualsIgnoreCase(scheme, "basic")) return false;
    size_t pad = 0;
    while (pad < value.size() && value[value.size() - 1 - pad] == '=') ++pad;
    std::string url(value.substr(0, value.size() - pad));
    if (pad > 2 || value.size() % 4 != 0) return false;
    for (char& c : url) {
      if (c == '+') {
        c = '-';
      } else if (c == '/') {
        c = '_';
      } else if (c == '-' || c == '_') {
        return false;
      }
    }
    std::string raw;
    if (!Base64UrlDecode(url, &raw)) return false;
    size_t colon = raw.find(':');
    std::string_view id = std::string_view(raw).substr(0, colon);
    std::string_view secret =
        colon == std::string::npos ? std::string_view() : std::string_view(raw).substr(colon + 1);
    // Both comparisons run (no short-circuit on the id).
    const bool ok_id = ConstantTimeEquals(id, credentials_->client_id);
    const bool ok_secret = ConstantTimeEquals(secret, credentials_->client_secret.Reveal());
    return colon != std::string::npos && ok_id && ok_secret;
  }

  std::string TokenMac(std::string_view payload) const {
    return HmacSha256(token_key_, StrCat(std::string_view("paypal-access-token\0", 20), payload))
        .substr(0, 16);
  }

  // nonce (16 bytes) | expiry in unix ms (8, big-endian) | truncated HMAC (16)
  std::string IssueToken(double expires_at) const {
    std::string payload = RandomBytes(16);
    uint64_t ms = static_cast<uint64_t>(expires_at * 1000);
    for (int i = 7; i >= 0; --i) payload.push_back(static_cast<char>((ms >> (8 * i)) & 0xff));
    return StrCat(kTokenPrefix, Base64UrlEncode(payload + TokenMac(payload)));
  }

  bool TokenValid(std::string_view token) const {
    if (!token.starts_with(kTokenPrefix) || token.size() > 200) return false;
    std::string blob;
    if (!Base64UrlDecode(token.substr(kTokenPrefix.size()), &blob) || blob.size() != 40) {
      return false;
    }
    std::string_view payload = std::string_view(blob).substr(0, 24);
    if (!ConstantTimeEquals(std::string_view(blob).substr(24), TokenMac(payload))) return false;
    uint64_t ms = 0;
    for (size_t i = 16; i < 24; ++i) ms = (ms << 8) | static_cast<unsigned char>(payload[i]);
    return static_cast<double>(ms) > NowSeconds() * 1000;
  }

  std::optional<Response> Authenticate(const Request& req) const {
    auto [scheme, token] = SplitAuthorization(req.header("Authorization"));
    if (EqualsIgnoreCase(scheme, "bearer") && TokenValid(token)) return std::nullopt;
    Response resp = OauthError(401, "invalid_token", "Token signature verification failed");
    resp.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"psp-sandbox\"");
    return resp;
  }

  // A JSON object body with Content-Type application/json.
  static std::optional<Response> ParseJsonObject(const Request& req, std::optional<Json>* out) {
    if (MediaType(req.header("Content-Type")) != "application/json") {
      return Invalid("Content-Type", "header", "UNSUPPORTED_MEDIA_TYPE",
                     "Content-Type must be application/json.", 415, "UNSUPPORTED_MEDIA_TYPE",
                     "The requested resource does not support the media type.");
    }
    Json body = ValidUtf8(req.body) ? Json::parse(req.body, nullptr, false) : Json(Json::value_t::discarded);
    if (body.is_discarded()) {
      return Invalid("/", "body", "MALFORMED_REQUEST_JSON", "The request JSON is not well formed.");
    }
    if (!body.is_object()) {
      return Invalid("/", "body", "MALFORMED_REQUEST_JSON", "The request body must be a JSON object.");
    }
    *out = std::move(body);
    return std::nullopt;
  }

  static std::optional<Response> ParseBody(const Request& req, CaptureParams* out) {
    std::optional<Json> body;
    if (std::optional<Response> err = ParseJsonObject(req, &body)) return err;
    for (auto& [k, v] : body->items()) {
      if (k != "amount") {
        return Invalid(StrCat("/", Utf8Prefix(k, 100)), "body", "UNKNOWN_FIELD",
                       "Only the amount member is accepted by the sandbox.");
      }
    }
    return ParseAmount(*body, &out->amount, &out->currency);
  }

  // The "amount" member {"currency_code","value"} of `body`, in minor units.
  static std::optional<Response> ParseAmount(const Json& body, int64_t* minor_out,
                                             std::string* currency_out) {
    const Json* amount = body.contains("amount") ? &body["amount"] : nullptr;
    if (amount == nullptr || !amount->is_object()) {
      return Invalid("/amount", "body", "MISSING_REQUIRED_PARAMETER",
                     "amount must be an object with currency_code and value.");
    }
    for (auto& [k, v] : amount->items()) {
      if (k != "currency_code" && k != "value") {
        return Invalid(StrCat("/amount/", Utf8Prefix(k, 100)), "body", "UNKNOWN_FIELD",
                       "amount accepts only currency_code and value.");
      }
    }
    std::string currency;
    if (amount->contains("currency_code") && (*amount)["currency_code"].is_string()) {
      currency = (*amount)["currency_code"].get<std::string>();
    }
    if (currency.size() != 3 || !std::all_of(currency.begin(), currency.end(),
                                             [](char c) { return c >= 'A' && c <= 'Z'; })) {
      return Invalid("/amount/currency_code", "body", "INVALID_PARAMETER_VALUE",
                     "currency_code must be a 3-letter upper-case ISO 4217 code.");
    }
    std::optional<int64_t> minor;
    if (amount->contains("value") && (*amount)["value"].is_string()) {
      minor = ParseAmountValue((*amount)["value"].get<std::string>(), currency);
    }
    if (!minor || *minor <= 0 || *minor > kMaxAmount) {
      return Invalid("/amount/value", "body", "INVALID_PARAMETER_VALUE",
                     StrCat("value must be a positive decimal string with at most ",
                            MinorDigits(currency), " decimal places for ", currency, "."));
    }
    *minor_out = *minor;
    *currency_out = std::move(currency);
    return std::nullopt;
  }

  // Everything compared on reuse is journaled: no fingerprint needed. A key
  // used for a refund is not reusable for a capture.
  static Response Replay(const StoredResult& stored, const CaptureParams& params) {
    const auto* capture = dynamic_cast<const Capture*>(&stored);
    if (capture == nullptr) return RequestIdReused();
    const Capture& prior = *capture;
    if (prior.order_id != params.order_id || prior.amount != params.amount ||
        prior.currency != params.currency) {
      return RequestIdReused();
    }
    Response resp = Render(prior);
    resp.headers.emplace_back("PayPal-Request-Id-Replayed", "true");
    resp.replayed = true;
    return resp;
  }

  static Response ServerError() {
    Json body = Json::object();
    body["name"] = "INTERNAL_SERVER_ERROR";
    body["message"] = "An internal server error has occurred.";
    body["debug_id"] = RandomDebugId();
    body["charged"] = false;
    return Response::FromJson(500, body);
  }

  // Injected errors and UNAVAILABLE happen before anything is captured,
  // journaled or stored under the key: a retry may succeed.
  asio::awaitable<Response> TakeCapture(const CaptureParams& params,
                                        const std::optional<std::string>& key,
                                        IdempotencyStore::Hold* hold) {
    if (config_.InjectError()) co_return ServerError();
    if (params.order_id.ends_with(kUnavailableSuffix)) {
      Json body = Json::object();
      body["name"] = "SERVICE_UNAVAILABLE";
      body["message"] = "Service Unavailable.";
      body["debug_id"] = RandomDebugId();
      body["charged"] = false;
      co_return Response::FromJson(503, body);
    }
    std::string issue;
    for (const Decline& d : kDeclines) {
      if (params.order_id.ends_with(d.suffix)) {
        issue = std::string(d.issue);
        break;
      }
    }
    auto cap = std::make_shared<Capture>();
    cap->id = StrCat("CAP", Upper(RandomHex(9).substr(0, 17)));
    cap->order_id = params.order_id;
    cap->amount = params.amount;
    cap->currency = params.currency;
    cap->status = issue.empty() ? "succeeded" : "failed";
    cap->decline_code = issue;
    cap->idempotency_key = key;
    cap->ts = NowSeconds();

    Json rec = Json::object();
    rec["ts"] = cap->ts;
    rec["api"] = kApiName;
    rec["id"] = cap->id;
    rec["idempotency_key"] = key ? Json(*key) : Json(nullptr);
    rec["order_id"] = cap->order_id;
    rec["amount"] = cap->amount;
    rec["currency"] = cap->currency;
    rec["status"] = cap->status;
    rec["decline_code"] = cap->decline_code;
    if (!co_await journal_.Append(rec)) co_return ServerError();  // not journaled: not captured
    index_.Put(cap);
    if (hold != nullptr) hold->Put(cap);
    co_return Render(*cap);
  }

  static Json AmountObject(const Capture& cap) {
    Json amount = Json::object();
    amount["currency_code"] = cap.currency;
    amount["value"] = FormatAmount(cap.amount, cap.currency);
    return amount;
  }

  static Json LookupObject(const Capture& cap) {
    Json obj = Json::object();
    obj["id"] = cap.id;
    obj["status"] = cap.status != "succeeded" ? "DECLINED"
                    : cap.refund_id.empty()   ? "COMPLETED"
                                              : "REFUNDED";
    obj["order_id"] = cap.order_id;
    obj["paypal_request_id"] = cap.idempotency_key ? Json(*cap.idempotency_key) : Json(nullptr);
    obj["amount"] = AmountObject(cap);
    obj["issue"] = cap.decline_code;
    obj["create_time"] = IsoTime(cap.ts);
    return obj;
  }

  // The capture call's answer: a pure function of the journaled record, so
  // replays after a restart are byte-identical.
  static Response Render(const Capture& cap) {
    if (cap.status == "succeeded") {
      Json capture = Json::object();
      capture["id"] = cap.id;
      capture["status"] = "COMPLETED";
      capture["amount"] = AmountObject(cap);
      capture["final_capture"] = true;
      capture["create_time"] = IsoTime(cap.ts);
      Json payments = Json::object();
      payments["captures"] = Json::array({std::move(capture)});
      Json unit = Json::object();
      unit["reference_id"] = "default";
      unit["payments"] = std::move(payments);
      Json payer = Json::object();
      payer["payer_id"] = Upper(DerivedId("payer", cap.order_id));
      Json body = Json::object();
      body["id"] = cap.order_id;
      body["status"] = "COMPLETED";
      body["purchase_units"] = Json::array({std::move(unit)});
      body["payer"] = std::move(payer);
      return Response::FromJson(201, body);
    }
    Json detail = Json::object();
    detail["issue"] = cap.decline_code;
    detail["description"] = IssueDescription(cap.decline_code);
    Json body = Json::object();
    body["name"] = "UNPROCESSABLE_ENTITY";
    body["message"] = kUnprocessableMessage;
    body["debug_id"] = DerivedId("debug", cap.id);
    body["details"] = Json::array({std::move(detail)});
    return Response::FromJson(422, body);
  }

  const std::optional<PaypalCredentials> credentials_;
  Secret token_key_;
  Journal& journal_;
  const ApiConfig& config_;
  Stats& stats_;
  IdempotencyStore store_;  // captures and refunds share the PayPal-Request-Id space
  // Used only for its per-key lock: one refund of a capture at a time (keyed
  // by capture id; nothing is stored).
  IdempotencyStore capture_locks_;
  PaymentIndex index_;
};

}  // namespace

absl::StatusOr<PaypalCredentials> ReadPaypalCredentials(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (!ValidUtf8(text)) return absl::InvalidArgumentError(StrCat(path, ": not UTF-8 text"));
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find_first_of("\r\n", start);
    std::string_view line = TrimSpace(std::string_view(text).substr(
        start, end == std::string::npos ? std::string::npos : end - start));
    if (!line.empty()) lines.emplace_back(line);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (lines.size() != 2) {
    return absl::InvalidArgumentError(
        StrCat(path, ": expected two non-empty lines (client_id, client_secret), found ",
               lines.size()));
  }
  return PaypalCredentials{lines[0], Secret(lines[1])};
}

std::unique_ptr<SandboxApi> MakePaypalApi(std::optional<PaypalCredentials> credentials,
                                          Journal& journal, const ApiConfig& config, Stats& stats) {
  return std::make_unique<PaypalApi>(std::move(credentials), journal, config, stats);
}

}  // namespace recharge::sandbox
