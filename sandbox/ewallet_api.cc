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

namespace recharge::sandbox {
namespace {

constexpr std::string_view kApiName = "ewallet";
constexpr int64_t kMaxSkewS = 300;
constexpr size_t kMaxKeyLen = 255;
constexpr int64_t kMaxAmount = 99'999'999'999;
constexpr size_t kMaxReasonLen = 255;
constexpr std::string_view kBusySuffix = "0005";

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
  std::string status;  // "succeeded" | "failed"
  std::string decline_code;
  std::string account_id;  // "****" + last 4 when rebuilt from the journal
  std::string account_id_last4;
  std::string merchant_ref;
  std::string idempotency_key;
  double ts = 0;
  std::string fingerprint;  // empty when rebuilt: compare on the summary
  // Set once refunded (in full). A refund makes a new Payment (copy on
  // write): the one stored under the payment's key stays as it was answered.
  std::string refund_id;
};

struct PaymentParams {
  std::string provider, merchant_ref, account_id, currency;
  int64_t amount = 0;
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
    payments_[std::move(id)] = std::move(pay);
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
};

class EwalletApi final : public SandboxApi {
 public:
  EwalletApi(std::optional<Secret> secret, Journal& journal, const ApiConfig& config)
      : secret_(std::move(secret)), journal_(journal), config_(config) {}

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
  }

  // Journal lines come in the order they were taken: a payment line, then
  // the refund line ("op":"refund") of that payment, if any.
  absl::Status Restore(const Json& rec) override {
    if (!rec.contains("op")) return RestorePayment(rec);
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
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("ewallet journal record: ", e.what()));
    }
    if (pay->status != "succeeded" && pay->status != "failed") {
      return absl::DataLossError(StrCat("ewallet journal record ", pay->id, ": bad status"));
    }
    pay->account_id = StrCat("****", pay->account_id_last4);
    if (!pay->idempotency_key.empty()) store_.Put(StoreKey(pay->provider, pay->idempotency_key), pay);
    payments_.Put(pay);
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
      payments.push_back(PaymentObject(*pay));
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
    refund->id = StrCat("RF-", RandomHex(12));
    for (char& c : refund->id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
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
      if (k != "merchant_ref" && k != "account_id" && k != "amount" && k != "currency") {
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
    out->fingerprint = Sha256(StrCat(out->provider, "\n", out->merchant_ref, "\n", out->account_id,
                                     "\n", out->amount, "\n", out->currency));
    return std::nullopt;
  }

  // A key used for a refund is not reusable for a payment.
  static Response Replay(const StoredResult& stored, const PaymentParams& params) {
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
             prior.account_id_last4 == acct.substr(acct.size() - 4);
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
    pay->id = StrCat("EW-", RandomHex(12));
    for (char& c : pay->id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    pay->provider = params.provider;
    pay->amount = params.amount;
    pay->currency = params.currency;
    pay->decline_code = std::string(FailureFor(last4));
    pay->status = pay->decline_code.empty() ? "succeeded" : "failed";
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
    rec["status"] = pay->status;
    rec["decline_code"] = pay->decline_code;
    rec["account_id_last4"] = pay->account_id_last4;
    rec["merchant_ref"] = pay->merchant_ref;
    if (!co_await journal_.Append(rec)) co_return NotCharged(500, "SYSTEM_ERROR");
    payments_.Put(pay);
    hold.Put(pay);
    co_return Render(*pay);
  }

  static Json PaymentObject(const Payment& pay) {
    Json obj = Json::object();
    obj["payment_id"] = pay.id;
    obj["provider"] = pay.provider;
    if (pay.status == "succeeded") {
      obj["status"] = "SUCCESS";
    } else {
      obj["status"] = "FAILED";
      obj["failure_code"] = pay.decline_code;
    }
    obj["amount"] = pay.amount;
    obj["currency"] = pay.currency;
    obj["account_id"] = pay.account_id;
    obj["merchant_ref"] = pay.merchant_ref;
    return obj;
  }

  // The create call's answer (a function of the record).
  static Response Render(const Payment& pay) { return Response::FromJson(200, PaymentObject(pay)); }

  const std::optional<Secret> secret_;
  Journal& journal_;
  const ApiConfig& config_;
  IdempotencyStore store_;  // payments and refunds share the (per-provider) keys
  // Used only for its per-key lock: one refund of a payment at a time (keyed
  // by provider and payment id; nothing is stored).
  IdempotencyStore payment_locks_;
  PaymentIndex payments_;
};

}  // namespace

std::unique_ptr<SandboxApi> MakeEwalletApi(std::optional<Secret> secret, Journal& journal,
                                           const ApiConfig& config) {
  return std::make_unique<EwalletApi>(std::move(secret), journal, config);
}

}  // namespace recharge::sandbox
