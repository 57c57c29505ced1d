#include "sandbox/ewallet_api.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <mutex>
#include <unordered_map>

#include "absl/base/thread_annotations.h"

#include "io/crypto.h"
#include "io/strings.h"
#include "sandbox/idempotency.h"
#include "sandbox/webhooks.h"

namespace recharge::sandbox {
namespace {

constexpr std::string_view kApiName = "ewallet";
constexpr int64_t kMaxSkewS = 300;
constexpr size_t kMaxKeyLen = 255;
constexpr int64_t kMaxAmount = 99'999'999'999;
constexpr size_t kMaxReasonLen = 255;
constexpr std::string_view kBusySuffix = "0005";
constexpr size_t kMaxReturnUrlLen = 2048;

// Internal payment states; the API shows them as SUCCESS, FAILED,
// PENDING_APPROVAL and CANCELLED. Payment lines journal the first two as
// "succeeded" / "failed" (as before the redirect flow), the others and the
// approve / cancel lines with the API's names.
constexpr std::string_view kSucceeded = "succeeded";
constexpr std::string_view kFailed = "failed";
constexpr std::string_view kPending = "pending_approval";
constexpr std::string_view kCancelled = "cancelled";

std::string_view ApiStatus(std::string_view status) {
  if (status == kSucceeded) return "SUCCESS";
  if (status == kPending) return "PENDING_APPROVAL";
  if (status == kCancelled) return "CANCELLED";
  return "FAILED";
}

// "<prefix><24 upper-case hex>": payment, refund and event ids.
std::string UpperHexId(std::string_view prefix) {
  std::string id = StrCat(prefix, RandomHex(12));
  for (char& c : id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return id;
}

struct Provider {
  std::string_view name;
  std::vector<std::string_view> currencies;
};

// Currencies of a provider: empty means any; nullopt an unknown provider.
std::optional<std::vector<std::string_view>> ProviderCurrencies(std::string_view provider) {
  static const Provider kProviders[] = {
      {"gcash", {"PHP"}}, {"dana", {"IDR"}},  {"grabpay", {"SGD", "MYR"}},
      {"paytm", {"INR"}}, {"momo", {"VND"}}, {"kakaopay", {"KRW"}},
  };
  for (const Provider& p : kProviders) {
    if (p.name == provider) return p.currencies;
  }
  const bool toy_name = provider.starts_with("toy") && provider.size() <= 40 &&
                        std::all_of(provider.begin(), provider.end(), [](char c) {
                          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                                 c == '-';
                        });
  if (toy_name) return std::vector<std::string_view>{};
  return std::nullopt;
}

std::string_view FailureFor(std::string_view last4) {
  if (last4 == "0002") return "INSUFFICIENT_BALANCE";
  if (last4 == "0003") return "ACCOUNT_BLOCKED";
  return {};
}

Response Code(int status, std::string_view code) {
  Json body = Json::object();
  body["code"] = code;
  return Response::FromJson(status, body);
}

Response Invalid(std::string_view field, std::string_view message) {
  Json body = Json::object();
  body["code"] = "INVALID_REQUEST";
  body["field"] = field;
  body["message"] = message;
  return Response::FromJson(400, body);
}

Response NotCharged(int status, std::string_view code) {
  Json body = Json::object();
  body["code"] = code;
  body["charged"] = false;
  return Response::FromJson(status, body);
}

bool AllIn(std::string_view s, char lo, char hi) {
  return std::all_of(s.begin(), s.end(), [lo, hi](char c) { return c >= lo && c <= hi; });
}

// One payment taken (or rebuilt from the journal).
struct Payment final : StoredResult {
  std::string id;
  std::string provider;
  int64_t amount = 0;
  std::string currency;
  std::string status;  // kSucceeded | kFailed | kPending | kCancelled
  std::string decline_code;
  std::string account_id;  // "****" + last 4 when rebuilt from the journal
  std::string account_id_last4;
  std::string merchant_ref;
  std::string idempotency_key;
  double ts = 0;
  std::string fingerprint;  // empty when rebuilt: compare on the summary
  // Set once refunded (in full). A refund, an approval or a cancellation
  // makes a new Payment (copy on write): the one stored under the payment's
  // key stays as it was answered.
  std::string refund_id;
  // The redirect flow: created kPending, approved or cancelled later.
  bool redirect = false;
  std::optional<std::string> notify_url, return_url;
};

struct PaymentParams {
  std::string provider, merchant_ref, account_id, currency;
  int64_t amount = 0;
  bool redirect = false;  // "flow":"redirect"
  std::optional<std::string> notify_url, return_url;
  std::string fingerprint;
};

// One refund of a payment, in full (taken or rebuilt from the journal); also
// what is stored under its idempotency key.
struct PaymentRefund final : StoredResult {
  std::string id;
  std::string provider;
  std::string payment_id;
  int64_t amount = 0;
  std::string currency;
  std::optional<std::string> reason;
  std::string idempotency_key;
  double ts = 0;
};

struct RefundParams {
  std::string provider, payment_id;
  std::optional<int64_t> amount;
  std::optional<std::string> reason;
};

// Payments by provider and id, as they are now (refunded or not).
class PaymentIndex {
 public:
  void Put(std::shared_ptr<const Payment> pay) {
    std::string id = StrCat(pay->provider, "\n", pay->id);
    std::lock_guard lock(mu_);
    if (pay->redirect) providers_[pay->id] = pay->provider;
    payments_[std::move(id)] = std::move(pay);
  }
  // A redirect-flow payment by id alone (the approval page has no provider).
  std::shared_ptr<const Payment> GetRedirect(std::string_view id) {
    std::lock_guard lock(mu_);
    auto p = providers_.find(std::string(id));
    if (p == providers_.end()) return nullptr;
    auto it = payments_.find(StrCat(p->second, "\n", id));
    return it == payments_.end() ? nullptr : it->second;
  }
  std::shared_ptr<const Payment> Get(std::string_view provider, std::string_view id) {
    std::string key = StrCat(provider, "\n", id);
    std::lock_guard lock(mu_);
    auto it = payments_.find(key);
    return it == payments_.end() ? nullptr : it->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Payment>> payments_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, std::string> providers_ ABSL_GUARDED_BY(mu_);  // id -> provider
};

class EwalletApi final : public SandboxApi {
 public:
  EwalletApi(std::optional<Secret> secret, Journal& journal, const ApiConfig& config,
             WebhookSender& webhooks, const SelfUrl& self_url)
      : secret_(std::move(secret)),
        journal_(journal),
        config_(config),
        webhooks_(webhooks),
        self_url_(self_url) {}

  std::string_view name() const override { return kApiName; }

  void AddRoutes(Router& router, int api_index) override {
    router.Add("POST", "/ewallet/v1/*/payments", [this](Request& r) { return CreatePayment(r); },
               api_index);
    router.Add("GET", "/ewallet/v1/*/payments", [this](Request& r) { return LookupPayments(r); },
               api_index);
    router.Add("POST", "/ewallet/v1/*/payments/*/refunds",
               [this](Request& r) { return RefundPayment(r); }, api_index);
    router.Add("GET", "/ewallet/v1/*/refunds", [this](Request& r) { return LookupRefunds(r); },
               api_index);
    router.Add("POST", "/ewallet/v1/*/payments/*/cancel",
               [this](Request& r) { return CancelPayment(r); }, api_index);
    router.Add("GET", "/ewallet/approve/*", [this](Request& r) { return ApprovalPage(r); },
               api_index);
    router.Add("POST", "/ewallet/approve/*/complete",
               [this](Request& r) { return CompleteApproval(r); }, api_index);
  }

  // Journal lines come in the order they were taken: a payment line, then
  // the approve / cancel line of a redirect payment, then the refund line
  // ("op":"refund") of that payment, if any.
  absl::Status Restore(const Json& rec) override {
    if (!rec.contains("op")) return RestorePayment(rec);
    if (rec["op"] == "approve" || rec["op"] == "cancel") return RestoreDecision(rec);
    if (rec["op"] != "refund") return absl::DataLossError("ewallet journal record: bad op");
    return RestoreRefund(rec);
  }

 private:
  absl::Status RestorePayment(const Json& rec) {
    auto pay = std::make_shared<Payment>();
    try {
      pay->account_id_last4 = rec.at("account_id_last4").get<std::string>();
      pay->id = rec.at("id").get<std::string>();
      pay->provider = rec.at("provider").get<std::string>();
      pay->amount = rec.at("amount").get<int64_t>();
      pay->currency = rec.at("currency").get<std::string>();
      pay->status = rec.at("status").get<std::string>();
      if (rec.contains("decline_code") && rec["decline_code"].is_string()) {
        pay->decline_code = rec["decline_code"].get<std::string>();
      }
      if (rec.contains("merchant_ref") && rec["merchant_ref"].is_string()) {
        pay->merchant_ref = rec["merchant_ref"].get<std::string>();
      }
      if (rec.contains("idempotency_key") && rec["idempotency_key"].is_string()) {
        pay->idempotency_key = rec["idempotency_key"].get<std::string>();
      }
      pay->ts = rec.at("ts").get<double>();
      pay->redirect = rec.contains("flow") && rec["flow"] == "redirect";
      for (auto [name, field] : {std::pair{"notify_url", &pay->notify_url},
                                 std::pair{"return_url", &pay->return_url}}) {
        if (rec.contains(name) && rec[name].is_string()) *field = rec[name].get<std::string>();
      }
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("ewallet journal record: ", e.what()));
    }
    if (pay->status == "PENDING_APPROVAL") pay->status = kPending;
    if (pay->redirect ? pay->status != kPending
                      : (pay->status != kSucceeded && pay->status != kFailed)) {
      return absl::DataLossError(StrCat("ewallet journal record ", pay->id, ": bad status"));
    }
    pay->account_id = StrCat("****", pay->account_id_last4);
    if (!pay->idempotency_key.empty()) store_.Put(StoreKey(pay->provider, pay->idempotency_key), pay);
    payments_.Put(pay);
    return absl::OkStatus();
  }

  // An approve / cancel line: its payment must be pending approval.
  absl::Status RestoreDecision(const Json& rec) {
    std::string op, provider, id, status, decline_code;
    try {
      op = rec.at("op").get<std::string>();
      provider = rec.at("provider").get<std::string>();
      id = rec.at("id").get<std::string>();
      status = rec.at("status").get<std::string>();
      if (rec.contains("decline_code") && rec["decline_code"].is_string()) {
        decline_code = rec["decline_code"].get<std::string>();
      }
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("ewallet journal record: ", e.what()));
    }
    std::shared_ptr<const Payment> pay = payments_.Get(provider, id);
    const bool fits = op == "approve" ? (status == "SUCCESS" || status == "FAILED")
                                      : status == "CANCELLED";
    if (pay == nullptr || pay->status != kPending || !fits) {
      return absl::DataLossError(
          StrCat("ewallet journal record: ", op, " of payment ", id, ": not pending approval"));
    }
    auto next = std::make_shared<Payment>(*pay);
    next->status = status == "SUCCESS" ? kSucceeded : status == "FAILED" ? kFailed : kCancelled;
    next->decline_code = decline_code;
    payments_.Put(next);
    return absl::OkStatus();
  }

  // A refund line: its payment must be journaled before it and refundable.
  absl::Status RestoreRefund(const Json& rec) {
    auto refund = std::make_shared<PaymentRefund>();
    try {
      refund->id = rec.at("id").get<std::string>();
      refund->provider = rec.at("provider").get<std::string>();
      refund->payment_id = rec.at("payment_id").get<std::string>();
      refund->amount = rec.at("amount").get<int64_t>();
      refund->currency = rec.at("currency").get<std::string>();
      if (rec.contains("reason") && rec["reason"].is_string()) {
        refund->reason = rec["reason"].get<std::string>();
      }
      refund->idempotency_key = rec.at("idempotency_key").get<std::string>();
      refund->ts = rec.at("ts").get<double>();
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("ewallet journal record: ", e.what()));
    }
    std::shared_ptr<const Payment> pay = payments_.Get(refund->provider, refund->payment_id);
    if (pay == nullptr || !Refusal(*pay).empty() || pay->amount != refund->amount ||
        pay->currency != refund->currency) {
      return absl::DataLossError(StrCat("ewallet journal record ", refund->id,
                                        ": not a full refund of a refundable payment"));
    }
    auto refunded = std::make_shared<Payment>(*pay);
    refunded->refund_id = refund->id;
    payments_.Put(refunded);
    store_.Put(StoreKey(refund->provider, refund->idempotency_key), refund);
    return absl::OkStatus();
  }

  // Providers are different companies: keys are scoped per provider.
  static std::string StoreKey(std::string_view provider, std::string_view key) {
    return StrCat(provider, "\n", key);
  }

  // POST /ewallet/v1/{provider}/payments
  asio::awaitable<Response> CreatePayment(Request& req) {
    if (std::optional<Response> err = Verify(req)) co_return *std::move(err);
    std::string provider(req.path_params.at(0));
    std::optional<std::vector<std::string_view>> currencies = ProviderCurrencies(provider);
    if (!currencies) co_return Code(404, "UNKNOWN_PROVIDER");
    std::string_view key = req.header("X-Idempotency-Key").value_or("");
    if (key.empty() || key.size() > kMaxKeyLen || !IsVisibleAscii(key)) {
      co_return Invalid("X-Idempotency-Key",
                        "X-Idempotency-Key is required: 1-255 printable ASCII characters without "
                        "spaces.");
    }
    PaymentParams params;
    params.provider = provider;
    if (std::optional<Response> err = ParseBody(req, &params)) co_return *std::move(err);
    if (!currencies->empty() &&
        std::find(currencies->begin(), currencies->end(), params.currency) == currencies->end()) {
      co_return Code(400, "UNSUPPORTED_CURRENCY");
    }
    auto take = [&](IdempotencyStore::Hold* hold) {
      return TakePayment(params, std::string(key), *hold);
    };
    auto replay = [&](const StoredResult& prior) { return Replay(prior, params); };
    co_return co_await TakeOrReplay(config_, store_, req, StoreKey(provider, key),
                                    std::string(key), take, replay);
  }

  // GET /ewallet/v1/{provider}/payments?idempotency_key=K
  asio::awaitable<Response> LookupPayments(Request& req) {
    std::shared_ptr<const StoredResult> prior;
    std::string key;
    if (std::optional<Response> err = co_await LookupKey(req, &key, &prior)) {
      co_return *std::move(err);
    }
    Json payments = Json::array();
    if (const auto* pay = dynamic_cast<const Payment*>(prior.get())) {
      // As it is now: a redirect payment approved or cancelled since. (A
      // refund does not show in the payment object.)
      std::shared_ptr<const Payment> now = payments_.Get(pay->provider, pay->id);
      payments.push_back(PaymentObject(now != nullptr ? *now : *pay));
    }
    co_return ListResponse("payments", std::move(payments), std::move(key));
  }

  // POST /ewallet/v1/{provider}/payments/{payment_id}/refunds: a full refund.
  asio::awaitable<Response> RefundPayment(Request& req) {
    if (std::optional<Response> err = Verify(req)) co_return *std::move(err);
    RefundParams params;
    params.provider = std::string(req.path_params.at(0));
    params.payment_id = std::string(req.path_params.at(1));
    if (!ProviderCurrencies(params.provider)) co_return Code(404, "UNKNOWN_PROVIDER");
    std::string_view key = req.header("X-Idempotency-Key").value_or("");
    if (key.empty() || key.size() > kMaxKeyLen || !IsVisibleAscii(key)) {
      co_return Invalid("X-Idempotency-Key",
                        "X-Idempotency-Key is required: 1-255 printable ASCII characters without "
                        "spaces.");
    }
    if (std::optional<Response> err = ParseRefundBody(req, &params)) co_return *std::move(err);
    std::shared_ptr<const Payment> pay = payments_.Get(params.provider, params.payment_id);
    if (pay == nullptr) co_return Code(404, "PAYMENT_NOT_FOUND");
    if (params.amount && *params.amount != pay->amount) {
      co_return Invalid("amount", "Only full refunds are supported: amount must be the payment's.");
    }
    auto take = [&](IdempotencyStore::Hold* hold) {
      return TakeRefund(params, std::string(key), *hold);
    };
    auto replay = [&](const StoredResult& prior) { return ReplayRefund(prior, params); };
    co_return co_await TakeOrReplay(config_, store_, req, StoreKey(params.provider, key),
                                    std::string(key), take, replay);
  }

  // GET /ewallet/v1/{provider}/refunds?idempotency_key=K
  asio::awaitable<Response> LookupRefunds(Request& req) {
    std::shared_ptr<const StoredResult> prior;
    std::string key;
    if (std::optional<Response> err = co_await LookupKey(req, &key, &prior)) {
      co_return *std::move(err);
    }
    Json refunds = Json::array();
    if (const auto* refund = dynamic_cast<const PaymentRefund*>(prior.get())) {
      refunds.push_back(RefundObject(*refund));
    }
    co_return ListResponse("refunds", std::move(refunds), std::move(key));
  }

  // POST /ewallet/v1/{provider}/payments/{payment_id}/cancel (signed; body
  // empty or {}): cancels a payment pending approval. Idempotent by itself
  // (no key): cancelling a cancelled payment answers it again.
  asio::awaitable<Response> CancelPayment(Request& req) {
    if (std::optional<Response> err = Verify(req)) co_return *std::move(err);
    const std::string provider(req.path_params.at(0));
    const std::string payment_id(req.path_params.at(1));
    if (!ProviderCurrencies(provider)) co_return Code(404, "UNKNOWN_PROVIDER");
    if (!TrimSpace(req.body).empty()) {
      Json body = ValidUtf8(req.body) ? Json::parse(req.body, nullptr, false)
                                      : Json(Json::value_t::discarded);
      if (body.is_discarded() || !body.is_object()) {
        co_return Invalid("body", "The body must be empty or a JSON object.");
      }
      if (!body.empty()) co_return Invalid(Utf8Prefix(body.begin().key(), 100), "Unknown field.");
    }
    if (payments_.Get(provider, payment_id) == nullptr) co_return Code(404, "PAYMENT_NOT_FOUND");
    if (config_.DropMode()) {
      co_await SimulateLatency(config_, req);
      co_return Response::Drop("timeout_mode=drop");
    }
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    if (config_.InjectError()) co_return NotCharged(500, "SYSTEM_ERROR");
    IdempotencyStore::Hold payment_lock =
        co_await payment_locks_.Acquire(StoreKey(provider, payment_id));
    std::shared_ptr<const Payment> pay = payments_.Get(provider, payment_id);
    if (pay->status == kCancelled) co_return Response::FromJson(200, PaymentObject(*pay));
    if (pay->status != kPending) co_return Code(409, "ALREADY_COMPLETED");
    std::shared_ptr<const Payment> next = co_await Decide(*pay, /*approve=*/false);
    if (next == nullptr) co_return NotCharged(500, "SYSTEM_ERROR");
    co_return Response::FromJson(200, PaymentObject(*next));
  }

  // GET /ewallet/approve/{payment_id}?token=T: the account holder's
  // approval page, with an Approve and a Cancel button (forms POSTing to
  // .../complete).
  asio::awaitable<Response> ApprovalPage(Request& req) {
    std::vector<std::string> tokens = QueryValues(req.query, "token");
    std::shared_ptr<const Payment> pay =
        tokens.size() == 1 ? RedirectPayment(req.path_params.at(0), tokens[0]) : nullptr;
    if (pay == nullptr) co_return NotFoundPage();
    std::string html = StrCat(
        kHtmlHead, "<title>Approve payment</title></head><body>\n",
        "<h1>Approve payment (psp-sandbox ", HtmlEscape(pay->provider), ")</h1>\n<dl>\n",
        "<dt>Merchant reference</dt><dd id=\"merchant_ref\">", HtmlEscape(pay->merchant_ref),
        "</dd>\n<dt>Amount (minor units)</dt><dd id=\"amount\">", pay->amount, "</dd>\n",
        "<dt>Currency</dt><dd id=\"currency\">", HtmlEscape(pay->currency), "</dd>\n",
        "<dt>Account</dt><dd id=\"account\">****", HtmlEscape(pay->account_id_last4),
        "</dd>\n</dl>\n");
    if (pay->status == kPending) {
      const std::string action = HtmlEscape(StrCat("/ewallet/approve/", pay->id, "/complete"));
      for (auto [value, label] : {std::pair{"approve", "Approve"}, std::pair{"cancel", "Cancel"}}) {
        StrAppend(&html, "<form method=\"post\" action=\"", action, "\">",
                  "<input type=\"hidden\" name=\"token\" value=\"", HtmlEscape(tokens[0]),
                  "\"><input type=\"hidden\" name=\"action\" value=\"", value,
                  "\"><button type=\"submit\" id=\"", value, "\">", label,
                  "</button></form>\n");
      }
    } else {
      StrAppend(&html, "<p id=\"state\">Already completed (", ApiStatus(pay->status),
                "): this payment cannot be approved any more.</p>\n");
    }
    html += "</body></html>\n";
    co_return Response::Html(200, std::move(html));
  }

  // POST /ewallet/approve/{payment_id}/complete, form token and
  // action=approve|cancel: decides the payment once, under its lock.
  asio::awaitable<Response> CompleteApproval(Request& req) {
    std::optional<FormPairs> form = ParsePageForm(req);
    if (!form) co_return HtmlPage(400, "Bad request", "The body must be a form (token, action).");
    std::vector<std::string_view> tokens, actions;
    for (const auto& [k, v] : *form) {
      if (k == "token") tokens.push_back(v);
      if (k == "action") actions.push_back(v);
    }
    std::string_view id = req.path_params.at(0);
    std::shared_ptr<const Payment> pay =
        tokens.size() == 1 ? RedirectPayment(id, tokens[0]) : nullptr;
    if (pay == nullptr) co_return NotFoundPage();
    if (actions.size() != 1 || (actions[0] != "approve" && actions[0] != "cancel")) {
      co_return HtmlPage(400, "Bad request", "action must be approve or cancel.");
    }
    IdempotencyStore::Hold payment_lock =
        co_await payment_locks_.Acquire(StoreKey(pay->provider, pay->id));
    pay = payments_.Get(pay->provider, pay->id);
    if (pay->status != kPending) {
      co_return HtmlPage(409, "Already completed",
                     StrCat("This payment is already completed (", ApiStatus(pay->status), ")."));
    }
    std::shared_ptr<const Payment> next = co_await Decide(*pay, actions[0] == "approve");
    if (next == nullptr) {
      co_return HtmlPage(500, "Error", "The wallet could not record the decision: try again.");
    }
    co_return HtmlPage(200, StrCat("Payment ", ApiStatus(next->status)),
                   "Done: you may close this page and return to the merchant.");
  }

  // Approves (the money is taken now, or fails by the account's suffix) or
  // cancels a pending payment: journals, applies, then notifies. Null: not
  // journaled, nothing changed. REQUIRES: the payment's lock held, `pay`
  // pending approval.
  asio::awaitable<std::shared_ptr<const Payment>> Decide(const Payment& pay, bool approve) {
    auto next = std::make_shared<Payment>(pay);
    if (approve) {
      next->decline_code = std::string(FailureFor(pay.account_id_last4));
      next->status = next->decline_code.empty() ? kSucceeded : kFailed;
    } else {
      next->status = kCancelled;
    }
    Json rec = Json::object();
    rec["ts"] = NowSeconds();
    rec["api"] = kApiName;
    rec["op"] = approve ? "approve" : "cancel";
    rec["provider"] = pay.provider;
    rec["id"] = pay.id;
    rec["idempotency_key"] = pay.idempotency_key;
    rec["amount"] = pay.amount;
    rec["currency"] = pay.currency;
    rec["status"] = ApiStatus(next->status);
    rec["decline_code"] = next->decline_code;
    if (!co_await journal_.Append(rec)) co_return nullptr;
    payments_.Put(next);
    if (next->notify_url && webhooks_.enabled()) {
      const std::string event_id = UpperHexId("EV-");
      const std::string type = next->status == kSucceeded ? "payment.succeeded"
                               : next->status == kFailed  ? "payment.failed"
                                                          : "payment.cancelled";
      Json event = Json::object();
      event["event_id"] = event_id;
      event["event_type"] = type;
      event["created_at"] = static_cast<int64_t>(NowSeconds());
      event["payment"] = PaymentObject(*next);
      webhooks_.Send(kApiName, event_id, type, *next->notify_url, JsonBytes(event));
    }
    co_return next;
  }

  // The redirect payment with this id and approval token, or null.
  std::shared_ptr<const Payment> RedirectPayment(std::string_view id, std::string_view token) {
    if (!secret_) return nullptr;
    std::shared_ptr<const Payment> pay = payments_.GetRedirect(id);
    if (pay == nullptr || !ConstantTimeEquals(ApprovalToken(pay->provider, pay->id), token)) {
      return nullptr;
    }
    return pay;
  }

  static Response NotFoundPage() {
    return HtmlPage(404, "Not found", "No such payment, or a wrong token.");
  }

  // The shared part of the lookups: signature, provider, latency, the one
  // idempotency_key query parameter, then what is stored under it, waiting
  // for a request in flight under the key so that "not found" is definite.
  asio::awaitable<std::optional<Response>> LookupKey(Request& req, std::string* key,
                                                     std::shared_ptr<const StoredResult>* prior) {
    if (std::optional<Response> err = Verify(req)) co_return err;
    std::string provider(req.path_params.at(0));
    if (!ProviderCurrencies(provider)) co_return Code(404, "UNKNOWN_PROVIDER");
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::vector<std::string> values = QueryValues(req.query, "idempotency_key");
    if (values.size() != 1 || values[0].empty()) {
      co_return Invalid("idempotency_key", "Exactly one idempotency_key query parameter is required.");
    }
    *key = values[0];
    IdempotencyStore::Hold hold = co_await store_.Acquire(StoreKey(provider, *key));
    *prior = hold.prior();
    co_return std::nullopt;
  }

  // {"<name>": [<item>] or []}
  static Response ListResponse(std::string_view name, Json items, std::string key) {
    Json body = Json::object();
    body[std::string(name)] = std::move(items);
    Response resp = Response::FromJson(200, body);
    resp.log_key = std::move(key);
    return resp;
  }

  // An empty body, or a JSON object with `reason` (at most 255 characters)
  // and `amount` (the payment's), both optional.
  static std::optional<Response> ParseRefundBody(const Request& req, RefundParams* out) {
    if (TrimSpace(req.body).empty()) return std::nullopt;
    if (MediaType(req.header("Content-Type")) != "application/json") {
      return Invalid("Content-Type", "Content-Type must be application/json.");
    }
    Json body = ValidUtf8(req.body) ? Json::parse(req.body, nullptr, false)
                                    : Json(Json::value_t::discarded);
    if (body.is_discarded() || !body.is_object()) {
      return Invalid("body", "The body must be a JSON object.");
    }
    for (auto& [k, v] : body.items()) {
      if (k != "reason" && k != "amount") return Invalid(Utf8Prefix(k, 100), "Unknown field.");
    }
    if (body.contains("reason")) {
      if (!body["reason"].is_string() ||
          Utf8Length(body["reason"].get<std::string>()) > kMaxReasonLen) {
        return Invalid("reason", "reason must be a string of at most 255 characters.");
      }
      out->reason = body["reason"].get<std::string>();
    }
    if (body.contains("amount")) {
      if (!body["amount"].is_number_integer()) {
        return Invalid("amount", "amount must be an integer in minor units.");
      }
      out->amount = body["amount"].is_number_unsigned() &&
                            body["amount"].get<uint64_t>() > uint64_t(kMaxAmount)
                        ? -1
                        : body["amount"].get<int64_t>();
    }
    return std::nullopt;
  }

  // Why the payment cannot be refunded now (a code), or empty.
  static std::string_view Refusal(const Payment& pay) {
    if (pay.status != "succeeded") return "PAYMENT_NOT_REFUNDABLE";
    if (!pay.refund_id.empty()) return "ALREADY_REFUNDED";
    return {};
  }

  // Same payment and reason under the same key: the stored answer.
  static Response ReplayRefund(const StoredResult& stored, const RefundParams& params) {
    const auto* prior = dynamic_cast<const PaymentRefund*>(&stored);
    if (prior == nullptr || prior->payment_id != params.payment_id ||
        prior->reason != params.reason) {
      return Code(409, "IDEMPOTENCY_CONFLICT");
    }
    Response resp = Response::FromJson(200, RefundObject(*prior));
    resp.headers.emplace_back("X-Idempotent-Replayed", "true");
    resp.replayed = true;
    return resp;
  }

  // Under the payment's lock: checks the payment as it is now, journals the
  // refund, then applies it. A refusal or error changes, journals and stores
  // nothing.
  asio::awaitable<Response> TakeRefund(const RefundParams& params, std::string key,
                                       IdempotencyStore::Hold& hold) {
    if (config_.InjectError()) co_return NotCharged(500, "SYSTEM_ERROR");
    IdempotencyStore::Hold payment_lock =
        co_await payment_locks_.Acquire(StoreKey(params.provider, params.payment_id));
    std::shared_ptr<const Payment> pay = payments_.Get(params.provider, params.payment_id);
    if (std::string_view refusal = Refusal(*pay); !refusal.empty()) {
      co_return Code(409, refusal);
    }
    auto refund = std::make_shared<PaymentRefund>();
    refund->id = UpperHexId("RF-");
    refund->provider = pay->provider;
    refund->payment_id = pay->id;
    refund->amount = pay->amount;
    refund->currency = pay->currency;
    refund->reason = params.reason;
    refund->idempotency_key = std::move(key);
    refund->ts = NowSeconds();

    Json rec = Json::object();
    rec["ts"] = refund->ts;
    rec["api"] = kApiName;
    rec["op"] = "refund";
    rec["provider"] = refund->provider;
    rec["id"] = refund->id;
    rec["payment_id"] = refund->payment_id;
    rec["idempotency_key"] = refund->idempotency_key;
    rec["amount"] = refund->amount;
    rec["currency"] = refund->currency;
    rec["status"] = "succeeded";
    rec["reason"] = refund->reason ? Json(*refund->reason) : Json(nullptr);
    if (!co_await journal_.Append(rec)) co_return NotCharged(500, "SYSTEM_ERROR");
    auto refunded = std::make_shared<Payment>(*pay);
    refunded->refund_id = refund->id;
    payments_.Put(refunded);
    hold.Put(refund);
    co_return Response::FromJson(200, RefundObject(*refund));
  }

  // The refund (the refund call's answer and the lookup's item): a pure
  // function of the journaled record.
  static Json RefundObject(const PaymentRefund& refund) {
    Json obj = Json::object();
    obj["refund_id"] = refund.id;
    obj["payment_id"] = refund.payment_id;
    obj["provider"] = refund.provider;
    obj["status"] = "REFUNDED";
    obj["amount"] = refund.amount;
    obj["currency"] = refund.currency;
    obj["reason"] = refund.reason ? Json(*refund.reason) : Json(nullptr);
    obj["idempotency_key"] = refund.idempotency_key;
    obj["created"] = static_cast<int64_t>(refund.ts);
    return obj;
  }

  std::optional<Response> Verify(const Request& req) const {
    if (!secret_) {
      Json body = Json::object();
      body["code"] = "NOT_ENABLED";
      body["message"] =
          "The e-wallet API is not enabled: start the sandbox with --ewallet-secret-file.";
      return Response::FromJson(404, body);
    }
    std::string_view ts = req.header("X-Timestamp").value_or("");
    std::string_view sig = req.header("X-Signature").value_or("");
    if (ts.empty() || ts.size() > 12 || !AllIn(ts, '0', '9') || sig.size() != 64 ||
        !std::all_of(sig.begin(), sig.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); })) {
      return Code(401, "INVALID_SIGNATURE");
    }
    const std::string expected =
        HexEncode(HmacSha256(*secret_, StrCat(ts, "\n", req.method, "\n", req.target, "\n", req.body)));
    if (!ConstantTimeEquals(expected, sig)) return Code(401, "INVALID_SIGNATURE");
    int64_t t = 0;
    for (char c : ts) t = t * 10 + (c - '0');
    if (std::fabs(NowSeconds() - static_cast<double>(t)) > kMaxSkewS) {
      return Code(401, "STALE_TIMESTAMP");
    }
    return std::nullopt;
  }

  static std::optional<Response> ParseBody(const Request& req, PaymentParams* out) {
    if (MediaType(req.header("Content-Type")) != "application/json") {
      return Invalid("Content-Type", "Content-Type must be application/json.");
    }
    Json body = ValidUtf8(req.body) ? Json::parse(req.body, nullptr, false)
                                    : Json(Json::value_t::discarded);
    if (body.is_discarded() || !body.is_object()) {
      return Invalid("body", "The body must be a JSON object.");
    }
    for (auto& [k, v] : body.items()) {
      if (k != "merchant_ref" && k != "account_id" && k != "amount" && k != "currency" &&
          k != "flow" && k != "notify_url" && k != "return_url") {
        return Invalid(Utf8Prefix(k, 100), "Unknown field.");
      }
    }
    auto string_field = [&body](const char* name) -> std::optional<std::string> {
      if (!body.contains(name) || !body[name].is_string()) return std::nullopt;
      return body[name].get<std::string>();
    };
    std::optional<std::string> ref = string_field("merchant_ref");
    if (!ref || ref->empty() || ref->size() > 255 || !AllIn(*ref, 0x20, 0x7e)) {
      return Invalid("merchant_ref", "merchant_ref must be 1-255 printable ASCII characters.");
    }
    std::optional<std::string> account = string_field("account_id");
    if (!account || account->size() < 4 || account->size() > 64 || !AllIn(*account, 0x21, 0x7e)) {
      return Invalid("account_id",
                     "account_id must be 4-64 printable ASCII characters without spaces.");
    }
    const Json* amount = body.contains("amount") ? &body["amount"] : nullptr;
    if (amount == nullptr || !amount->is_number_integer() ||
        (amount->is_number_unsigned() ? amount->get<uint64_t>() > uint64_t(kMaxAmount)
                                      : (amount->get<int64_t>() <= 0 ||
                                         amount->get<int64_t>() > kMaxAmount))) {
      return Invalid("amount", "amount must be a positive integer in minor units.");
    }
    std::optional<std::string> currency = string_field("currency");
    if (!currency || currency->size() != 3 ||
        !std::all_of(currency->begin(), currency->end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        })) {
      return Invalid("currency", "currency must be a 3-letter ISO 4217 code.");
    }
    out->merchant_ref = *std::move(ref);
    out->account_id = *std::move(account);
    out->amount = amount->get<int64_t>();
    if (out->amount <= 0) return Invalid("amount", "amount must be a positive integer in minor units.");
    out->currency = *std::move(currency);
    for (char& c : out->currency) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (body.contains("flow")) {
      if (body["flow"] != "redirect" && body["flow"] != "direct") {
        return Invalid("flow", "flow must be \"direct\" or \"redirect\".");
      }
      out->redirect = body["flow"] == "redirect";
    }
    if (body.contains("notify_url")) {
      absl::StatusOr<WebhookUrl> url = body["notify_url"].is_string()
                                           ? ParseWebhookUrl(body["notify_url"].get<std::string>())
                                           : absl::InvalidArgumentError("must be a string");
      if (!url.ok()) {
        return Invalid("notify_url", StrCat("notify_url ", url.status().message(), "."));
      }
      out->notify_url = body["notify_url"].get<std::string>();
    }
    if (body.contains("return_url")) {
      std::optional<std::string> url = string_field("return_url");
      if (!url || url->empty() || url->size() > kMaxReturnUrlLen || !AllIn(*url, 0x21, 0x7e)) {
        return Invalid("return_url",
                       "return_url must be 1-2048 printable ASCII characters without spaces.");
      }
      out->return_url = *std::move(url);
    }
    // In memory only. An absent URL hashes apart from any given one.
    auto opt = [](const std::optional<std::string>& v) { return v ? StrCat("+", *v) : "-"; };
    out->fingerprint =
        Sha256(StrCat(out->provider, "\n", out->merchant_ref, "\n", out->account_id, "\n",
                      out->amount, "\n", out->currency, "\n", out->redirect, "\n",
                      opt(out->notify_url), "\n", opt(out->return_url)));
    return std::nullopt;
  }

  // A key used for a refund is not reusable for a payment.
  Response Replay(const StoredResult& stored, const PaymentParams& params) {
    const auto* payment = dynamic_cast<const Payment*>(&stored);
    if (payment == nullptr) return Code(409, "IDEMPOTENCY_CONFLICT");
    const Payment& prior = *payment;
    bool same;
    if (!prior.fingerprint.empty()) {
      same = ConstantTimeEquals(prior.fingerprint, params.fingerprint);
    } else {  // rebuilt from the journal: compare what the journal knows
      std::string_view acct = params.account_id;
      same = prior.provider == params.provider && prior.merchant_ref == params.merchant_ref &&
             prior.amount == params.amount && prior.currency == params.currency &&
             prior.account_id_last4 == acct.substr(acct.size() - 4) &&
             prior.redirect == params.redirect && prior.notify_url == params.notify_url &&
             prior.return_url == params.return_url;
    }
    if (!same) return Code(409, "IDEMPOTENCY_CONFLICT");
    Response resp = Render(prior);
    resp.headers.emplace_back("X-Idempotent-Replayed", "true");
    resp.replayed = true;
    return resp;
  }

  // Injected errors and SYSTEM_BUSY happen before anything is charged,
  // journaled or stored under the key: a retry may succeed.
  asio::awaitable<Response> TakePayment(const PaymentParams& params, std::string key,
                                        IdempotencyStore::Hold& hold) {
    if (config_.InjectError()) co_return NotCharged(500, "SYSTEM_ERROR");
    if (params.account_id.ends_with(kBusySuffix)) co_return NotCharged(503, "SYSTEM_BUSY");
    const std::string_view last4 = std::string_view(params.account_id).substr(params.account_id.size() - 4);
    auto pay = std::make_shared<Payment>();
    pay->id = UpperHexId("EW-");
    pay->provider = params.provider;
    pay->amount = params.amount;
    pay->currency = params.currency;
    pay->redirect = params.redirect;
    pay->notify_url = params.notify_url;
    pay->return_url = params.return_url;
    if (params.redirect) {  // nothing is taken until the account holder approves
      pay->status = kPending;
    } else {
      pay->decline_code = std::string(FailureFor(last4));
      pay->status = pay->decline_code.empty() ? kSucceeded : kFailed;
    }
    pay->account_id = params.account_id;
    pay->account_id_last4 = std::string(last4);
    pay->merchant_ref = params.merchant_ref;
    pay->idempotency_key = std::move(key);
    pay->ts = NowSeconds();
    pay->fingerprint = params.fingerprint;

    Json rec = Json::object();
    rec["ts"] = pay->ts;
    rec["api"] = kApiName;
    rec["provider"] = pay->provider;
    rec["id"] = pay->id;
    rec["idempotency_key"] = pay->idempotency_key;
    rec["amount"] = pay->amount;
    rec["currency"] = pay->currency;
    rec["status"] = pay->redirect ? Json(ApiStatus(pay->status)) : Json(pay->status);
    rec["decline_code"] = pay->decline_code;
    rec["account_id_last4"] = pay->account_id_last4;
    rec["merchant_ref"] = pay->merchant_ref;
    if (pay->redirect) rec["flow"] = "redirect";
    if (pay->notify_url) rec["notify_url"] = *pay->notify_url;
    if (pay->return_url) rec["return_url"] = *pay->return_url;
    if (!co_await journal_.Append(rec)) co_return NotCharged(500, "SYSTEM_ERROR");
    payments_.Put(pay);
    hold.Put(pay);
    co_return Render(*pay);
  }

  // The payment object. A redirect payment adds "flow":"redirect" and,
  // while pending approval, where the account holder approves it.
  Json PaymentObject(const Payment& pay) const {
    Json obj = Json::object();
    obj["payment_id"] = pay.id;
    obj["provider"] = pay.provider;
    obj["status"] = ApiStatus(pay.status);
    if (pay.status == kFailed) obj["failure_code"] = pay.decline_code;
    obj["amount"] = pay.amount;
    obj["currency"] = pay.currency;
    obj["account_id"] = pay.account_id;
    obj["merchant_ref"] = pay.merchant_ref;
    if (pay.redirect) obj["flow"] = "redirect";
    if (pay.status == kPending) {
      const std::string approval_url = StrCat(self_url_.get(), "/ewallet/approve/", pay.id,
                                              "?token=", ApprovalToken(pay.provider, pay.id));
      obj["approval_url"] = approval_url;
      obj["deep_link"] = StrCat(pay.provider, "://pay?payment_id=", pay.id);
      obj["qr_payload"] = approval_url;
    }
    return obj;
  }

  // The approval page's token: unguessable without the API secret, and
  // derived (not stored) so that it survives a restart.
  std::string ApprovalToken(std::string_view provider, std::string_view payment_id) const {
    return HexEncode(HmacSha256(*secret_, StrCat("approve\n", provider, "\n", payment_id)))
        .substr(0, 32);
  }

  // The create call's answer (a function of the record).
  Response Render(const Payment& pay) const { return Response::FromJson(200, PaymentObject(pay)); }

  const std::optional<Secret> secret_;
  Journal& journal_;
  const ApiConfig& config_;
  WebhookSender& webhooks_;
  const SelfUrl& self_url_;
  IdempotencyStore store_;  // payments and refunds share the (per-provider) keys
  // Used only for its per-key lock: one refund of a payment at a time (keyed
  // by provider and payment id; nothing is stored).
  IdempotencyStore payment_locks_;
  PaymentIndex payments_;
};

}  // namespace

std::unique_ptr<SandboxApi> MakeEwalletApi(std::optional<Secret> secret, Journal& journal,
                                           const ApiConfig& config, WebhookSender& webhooks,
                                           const SelfUrl& self_url) {
  return std::make_unique<EwalletApi>(std::move(secret), journal, config, webhooks, self_url);
}

}  // namespace recharge::sandbox
