#include "sandbox/card_api.h"

#include <algorithm>
#include <cctype>
#include <array>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "io/crypto.h"
#include "io/strings.h"
#include "sandbox/idempotency.h"
#include "sandbox/webhooks.h"

namespace recharge::sandbox {

namespace {

constexpr std::string_view kApiName = "card";
constexpr std::string_view kDeclinePrefix = "4000000000";
constexpr size_t kMaxIdempotencyKeyLen = 255;
constexpr size_t kMaxDescriptionLen = 1000;
constexpr size_t kMaxMetadataKeys = 50;
constexpr size_t kMaxMetadataKeyLen = 40;
constexpr size_t kMaxMetadataValueLen = 500;
constexpr size_t kMaxFormFields = 200;
constexpr size_t kMaxReasonLen = 500;
constexpr int64_t kMaxAmount = 99'999'999'999;
constexpr size_t kMaxReturnUrlLen = 2048;
constexpr std::string_view kMerchantName = "Coin Recharge (sandbox merchant)";

// 3-D Secure test cards (README.md, "3-D Secure").
constexpr std::string_view kChallengeCard = "4000002760003184";
constexpr std::string_view kChallengeFailsCard = "4000008400001629";
constexpr std::string_view kFrictionlessCard = "4000000000003055";

// Whether a charge needs the cardholder's authentication, as journaled in
// its "three_d_secure" field.
constexpr std::string_view kChallenge = "challenge";             // the button decides
constexpr std::string_view kChallengeFails = "challenge_fails";  // fails whatever is pressed

bool RegionRequiresAuthentication(std::string_view region) {
  return region == "DE" || region == "GB" || region == "IN";
}

// kChallenge, kChallengeFails, or empty (no challenge: approve at once) for
// an approving card. REQUIRES: the card does not decline.
std::string_view ChallengeFor(std::string_view number, const std::optional<std::string>& region) {
  if (number == kFrictionlessCard) return {};
  if (number == kChallengeFailsCard) return kChallengeFails;
  if (number == kChallengeCard) return kChallenge;
  if (region && RegionRequiresAuthentication(*region)) return kChallenge;
  return {};
}

// One charge taken (or rebuilt from the journal); also what is stored under
// its idempotency key.
struct Charge final : StoredResult {
  std::string id;
  int64_t amount = 0;
  std::string currency;
  // "succeeded" | "failed" | "requires_action" (waiting for 3-D Secure) |
  // "canceled" (voided while requires_action)
  std::string status;
  std::string decline_code;
  std::string last4;
  std::optional<std::string> idempotency_key;
  double ts = 0;
  // The create call's optional 3-D Secure parameters, journaled when given.
  std::optional<std::string> region, notify_url, return_url;
  // kChallenge / kChallengeFails: the charge was created requires_action
  // (empty: no challenge). Stays set after the challenge is completed.
  std::string three_d_secure;
  // SHA-256 over every request parameter (in memory only); empty for a
  // charge rebuilt from the journal, compared on amount/currency/last4.
  std::string fingerprint;
  // The lifecycle. `capture` is the create call's parameter (false: an
  // authorisation hold). A state change makes a new Charge (copy on write):
  // the one stored under the create call's key stays as it was answered.
  bool capture = true;
  bool captured = false;  // succeeded and captured (at once or later)
  bool voided = false;
  bool refunded = false;  // in full (the only kind of refund)
};

struct ChargeParams {
  int64_t amount = 0;
  std::string currency;  // upper case
  Secret number;
  bool capture = true;
  std::optional<std::string> region;  // upper case
  std::optional<std::string> notify_url, return_url;
  std::string fingerprint;
};

// A capture, void or refund of a charge: what the request asks for.
struct OperationParams {
  std::string op;  // "capture" | "void" | "refund"
  std::string charge_id;
  std::optional<std::string> reason;  // refunds only
};

// A capture, void or refund taken (or rebuilt from the journal); what is
// stored under its idempotency key. `body` is the 200 answer as sent, so a
// replay is byte-identical; for a refund it is the refund object.
struct ChargeOperation final : StoredResult {
  OperationParams params;
  std::string body;
};

// One refund, as journaled.
struct RefundRecord {
  std::string id;
  std::string charge_id;
  int64_t amount = 0;
  std::string currency;
  std::optional<std::string> reason;
  std::optional<std::string> idempotency_key;
  double ts = 0;
};

Response Invalid(std::string_view param, std::string_view message) {
  Json extra = Json::object();
  extra["param"] = param;
  return ErrorResponse(400, "invalid_request_error", "parameter_invalid", message, std::move(extra));
}


// Digits-only amount in (0, kMaxAmount], leading zeros allowed.
std::optional<int64_t> ParseAmount(std::string_view s) {
  if (!IsAsciiDigits(s)) return std::nullopt;
  while (s.size() > 1 && s.front() == '0') s.remove_prefix(1);
  if (s.size() > 11) return std::nullopt;
  int64_t v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  if (v <= 0 || v > kMaxAmount) return std::nullopt;
  return v;
}

int SmallInt(std::string_view digits) {  // REQUIRES: 1..4 ASCII digits
  int v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

class ShardedChargeIndex {
 public:
  void Put(std::shared_ptr<const Charge> charge) {
    Shard& s = ShardFor(charge->id);
    std::lock_guard lock(s.mu);
    s.by_id[charge->id] = std::move(charge);
  }
  std::shared_ptr<const Charge> Get(std::string_view id) {
    Shard& s = ShardFor(id);
    std::lock_guard lock(s.mu);
    auto it = s.by_id.find(std::string(id));
    return it == s.by_id.end() ? nullptr : it->second;
  }

 private:
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::shared_ptr<const Charge>> by_id;
  };
  Shard& ShardFor(std::string_view id) { return shards_[std::hash<std::string_view>{}(id) % 64]; }
  std::array<Shard, 64> shards_;
};

class CardApi final : public SandboxApi {
 public:
  CardApi(Secret secret, Journal& journal, const ApiConfig& config, WebhookSender& webhooks,
          const SelfUrl& self_url)
      : secret_(std::move(secret)),
        journal_(journal),
        config_(config),
        webhooks_(webhooks),
        self_url_(self_url) {}

  std::string_view name() const override { return kApiName; }

  void AddRoutes(Router& router, int api_index) override {
    router.Add("POST", "/v1/charges", [this](Request& r) { return CreateCharge(r); }, api_index);
    router.Add("GET", "/v1/charges", [this](Request& r) { return ListCharges(r); }, api_index);
    router.Add("GET", "/v1/charges/*", [this](Request& r) { return RetrieveCharge(r); }, api_index);
    router.Add("POST", "/v1/charges/*/capture",
               [this](Request& r) { return CaptureOrVoid(r, "capture"); }, api_index);
    router.Add("POST", "/v1/charges/*/void",
               [this](Request& r) { return CaptureOrVoid(r, "void"); }, api_index);
    router.Add("POST", "/v1/refunds", [this](Request& r) { return CreateRefund(r); }, api_index);
    router.Add("GET", "/v1/refunds", [this](Request& r) { return ListRefunds(r); }, api_index);
    router.Add("GET", "/3ds/*", [this](Request& r) { return ChallengePage(r); }, api_index);
    router.Add("POST", "/3ds/*/complete", [this](Request& r) { return CompleteChallenge(r); },
               api_index);
  }

  // Journal lines come in the order they were taken: a charge line, then
  // the authenticate / capture / void / refund lines ("op") of that charge.
  absl::Status Restore(const Json& rec) override {
    if (!rec.contains("op")) return RestoreCharge(rec);
    if (!rec["op"].is_string()) return absl::DataLossError("card journal record: bad op");
    if (rec["op"] == "authenticate") return RestoreAuthentication(rec);
    return RestoreOperation(rec);
  }

 private:
  absl::Status RestoreCharge(const Json& rec) {
    auto charge = std::make_shared<Charge>();
    try {
      charge->id = rec.at("id").get<std::string>();
      charge->amount = rec.at("amount").get<int64_t>();
      charge->currency = rec.at("currency").get<std::string>();
      charge->status = rec.at("status").get<std::string>();
      if (rec.contains("decline_code") && rec["decline_code"].is_string()) {
        charge->decline_code = rec["decline_code"].get<std::string>();
      }
      charge->last4 = rec.at("last4").get<std::string>();
      if (rec.contains("idempotency_key") && rec["idempotency_key"].is_string()) {
        charge->idempotency_key = rec["idempotency_key"].get<std::string>();
      }
      charge->ts = rec.at("ts").get<double>();
      if (rec.contains("captured")) charge->capture = rec["captured"].get<bool>();
      for (auto [name, field] : {std::pair{"region", &charge->region},
                                 std::pair{"notify_url", &charge->notify_url},
                                 std::pair{"return_url", &charge->return_url}}) {
        if (rec.contains(name) && rec[name].is_string()) *field = rec[name].get<std::string>();
      }
      if (rec.contains("three_d_secure")) {
        charge->three_d_secure = rec["three_d_secure"].get<std::string>();
      }
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("card journal record: ", e.what()));
    }
    const bool challenged = charge->status == "requires_action";
    if ((charge->status != "succeeded" && charge->status != "failed" && !challenged) ||
        challenged != (charge->three_d_secure == kChallenge ||
                       charge->three_d_secure == kChallengeFails)) {
      return absl::DataLossError(StrCat("card journal record ", charge->id, ": bad status"));
    }
    charge->captured = charge->status == "succeeded" && charge->capture;
    charges_.Put(charge);
    if (charge->idempotency_key && !charge->idempotency_key->empty()) {
      store_.Put(*charge->idempotency_key, charge);
    }
    return absl::OkStatus();
  }

  // Replays a capture / void / refund line onto its charge, which must allow
  // it (the line was journaled under the charge's lock, after its checks).
  absl::Status RestoreOperation(const Json& rec) {
    OperationParams params;
    RefundRecord refund;
    std::optional<std::string> key;
    try {
      params.op = rec.at("op").get<std::string>();
      if (rec.contains("idempotency_key") && rec["idempotency_key"].is_string()) {
        key = rec["idempotency_key"].get<std::string>();
      }
      if (params.op == "refund") {
        refund.id = rec.at("id").get<std::string>();
        params.charge_id = rec.at("charge").get<std::string>();
        refund.amount = rec.at("amount").get<int64_t>();
        refund.currency = rec.at("currency").get<std::string>();
        if (rec.contains("reason") && rec["reason"].is_string()) {
          params.reason = rec["reason"].get<std::string>();
        }
        refund.ts = rec.at("ts").get<double>();
      } else {
        params.charge_id = rec.at("id").get<std::string>();
      }
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("card journal record: ", e.what()));
    }
    if (params.op != "capture" && params.op != "void" && params.op != "refund") {
      return absl::DataLossError(StrCat("card journal record ", params.charge_id, ": bad op"));
    }
    std::shared_ptr<const Charge> charge = charges_.Get(params.charge_id);
    if (charge == nullptr) {
      return absl::DataLossError(
          StrCat("card journal record: ", params.op, " of unknown charge ", params.charge_id));
    }
    if (!Refusal(params.op, *charge).empty()) {
      return absl::DataLossError(StrCat("card journal record: ", params.op, " of charge ",
                                        params.charge_id, ": ", Refusal(params.op, *charge)));
    }
    if (params.op == "refund" &&
        (refund.amount != charge->amount || refund.currency != charge->currency)) {
      return absl::DataLossError(StrCat("card journal record ", refund.id, ": not a full refund"));
    }
    auto next = std::make_shared<Charge>(*charge);
    Apply(params.op, *next);
    auto done = std::make_shared<ChargeOperation>();
    if (params.op == "refund") {
      refund.charge_id = params.charge_id;
      refund.reason = params.reason;
      refund.idempotency_key = key;
      done->body = RefundJson(refund);
    } else {
      done->body = ChargeJson(*next);
    }
    done->params = std::move(params);
    charges_.Put(next);
    if (key && !key->empty()) store_.Put(*key, done);
    return absl::OkStatus();
  }

  // An authenticate line: the 3-D Secure challenge of a requires_action
  // charge was completed (approved or failed).
  absl::Status RestoreAuthentication(const Json& rec) {
    std::string id, result;
    try {
      id = rec.at("id").get<std::string>();
      result = rec.at("result").get<std::string>();
    } catch (const Json::exception& e) {
      return absl::DataLossError(StrCat("card journal record: ", e.what()));
    }
    std::shared_ptr<const Charge> charge = charges_.Get(id);
    if (charge == nullptr || charge->status != "requires_action" || charge->voided ||
        (result != "approved" && result != "failed")) {
      return absl::DataLossError(
          StrCat("card journal record: authenticate of charge ", id, ": not awaiting it"));
    }
    charges_.Put(Authenticated(*charge, result == "approved"));
    return absl::OkStatus();
  }

  // The charge once its challenge is completed: approved, an authorisation
  // hold (to be captured); failed, a failed charge (authentication_failed).
  static std::shared_ptr<Charge> Authenticated(const Charge& charge, bool approved) {
    auto next = std::make_shared<Charge>(charge);
    if (approved) {
      next->status = "succeeded";
      next->captured = false;
    } else {
      next->status = "failed";
      next->decline_code = "authentication_failed";
    }
    return next;
  }

  // POST /v1/charges: validate, then charge under the key's lock (or replay).
  asio::awaitable<Response> CreateCharge(Request& req) {
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    std::optional<std::string> key;
    if (std::optional<Response> err = IdempotencyKey(req, &key)) co_return *std::move(err);
    ChargeParams params;
    if (std::optional<Response> err = ParseParams(req, key.has_value(), &params)) {
      co_return *std::move(err);
    }
    // Named lambdas (not written inside co_await: io/asio.h, GCC 12).
    auto take = [&](IdempotencyStore::Hold* hold) { return TakeCharge(params, key, hold); };
    auto replay = [&](const StoredResult& prior) { return Replay(prior, params); };
    co_return co_await TakeOrReplay(config_, store_, req, key, key.value_or(""), take, replay);
  }

  // GET /v1/charges?idempotency_key=K: the crash-recovery Lookup. The charge
  // created under K, as it is now (captured, voided, refunded).
  asio::awaitable<Response> ListCharges(Request& req) {
    std::shared_ptr<const StoredResult> prior;
    std::string key;
    if (std::optional<Response> err = co_await LookupKey(req, &key, &prior)) {
      co_return *std::move(err);
    }
    std::string data;
    if (const auto* created = dynamic_cast<const Charge*>(prior.get())) {
      std::shared_ptr<const Charge> now = charges_.Get(created->id);
      data = ChargeJson(now != nullptr ? *now : *created);
    }
    co_return ListResponse("/v1/charges", data, std::move(key));
  }

  // GET /v1/refunds?idempotency_key=K: the refund made under K, if any.
  asio::awaitable<Response> ListRefunds(Request& req) {
    std::shared_ptr<const StoredResult> prior;
    std::string key;
    if (std::optional<Response> err = co_await LookupKey(req, &key, &prior)) {
      co_return *std::move(err);
    }
    std::string data;
    if (const auto* done = dynamic_cast<const ChargeOperation*>(prior.get());
        done != nullptr && done->params.op == "refund") {
      data = done->body;
    }
    co_return ListResponse("/v1/refunds", data, std::move(key));
  }

  // The shared part of the lookups: auth, latency, the one idempotency_key
  // query parameter, then what is stored under it, waiting for a request in
  // flight under the key so that "not found" is definite.
  asio::awaitable<std::optional<Response>> LookupKey(Request& req, std::string* key,
                                                     std::shared_ptr<const StoredResult>* prior) {
    if (std::optional<Response> err = Authenticate(req)) co_return err;
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::vector<std::string> values = QueryValues(req.query, "idempotency_key");
    if (values.size() != 1 || values[0].empty()) {
      co_return Invalid("idempotency_key", "Exactly one idempotency_key query parameter is required.");
    }
    *key = values[0];
    IdempotencyStore::Hold hold = co_await store_.Acquire(*key);
    *prior = hold.prior();
    co_return std::nullopt;
  }

  // {"object":"list","data":[<item>] or [],"has_more":false,"url":<url>}
  static Response ListResponse(std::string_view url, std::string_view item, std::string key) {
    Response resp;
    JsonWriter w(&resp.body);
    w.BeginObject();
    w.Key("object").String("list");
    w.Key("data").BeginArray();
    if (!item.empty()) w.Raw(item);
    w.EndArray();
    w.Key("has_more").Bool(false);
    w.Key("url").String(url);
    w.EndObject();
    resp.log_key = std::move(key);
    return resp;
  }

  // GET /v1/charges/<id>
  asio::awaitable<Response> RetrieveCharge(Request& req) {
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    if (!co_await SimulateLatency(config_, req)) co_return Response::Drop("shutting down");
    std::shared_ptr<const Charge> charge = charges_.Get(req.path_params.at(0));
    if (charge == nullptr) co_return NoSuchCharge("id");
    Response resp;
    resp.body = ChargeJson(*charge);
    co_return resp;
  }

  // GET /3ds/{charge_id}?token=T: the cardholder's challenge page, with an
  // Approve and a Fail button (each a form POSTing to .../complete).
  asio::awaitable<Response> ChallengePage(Request& req) {
    std::vector<std::string> tokens = QueryValues(req.query, "token");
    std::string_view id = req.path_params.at(0);
    std::shared_ptr<const Charge> charge =
        tokens.size() == 1 ? ChallengedCharge(id, tokens[0]) : nullptr;
    if (charge == nullptr) co_return NotFoundPage();
    std::string html = StrCat(
        kHtmlHead, "<title>3-D Secure authentication</title></head><body>\n",
        "<h1>3-D Secure authentication (psp-sandbox)</h1>\n<dl>\n",
        "<dt>Merchant</dt><dd id=\"merchant\">", HtmlEscape(kMerchantName), "</dd>\n",
        "<dt>Amount (minor units)</dt><dd id=\"amount\">", charge->amount, "</dd>\n",
        "<dt>Currency</dt><dd id=\"currency\">", HtmlEscape(charge->currency), "</dd>\n",
        "<dt>Card</dt><dd id=\"last4\">**** ", HtmlEscape(charge->last4), "</dd>\n</dl>\n");
    if (charge->status == "requires_action") {
      const std::string action = HtmlEscape(StrCat("/3ds/", charge->id, "/complete"));
      for (auto [result, label] : {std::pair{"approve", "Approve"}, std::pair{"fail", "Fail"}}) {
        StrAppend(&html, "<form method=\"post\" action=\"", action, "\">",
                  "<input type=\"hidden\" name=\"token\" value=\"", HtmlEscape(tokens[0]),
                  "\"><input type=\"hidden\" name=\"result\" value=\"", result,
                  "\"><button type=\"submit\" id=\"", result, "\">", label,
                  "</button></form>\n");
      }
    } else {
      StrAppend(&html, "<p id=\"state\">", charge->voided ? "Expired" : "Already completed",
                ": this authentication cannot be completed any more.</p>\n");
    }
    html += "</body></html>\n";
    co_return Response::Html(200, std::move(html));
  }

  // POST /3ds/{charge_id}/complete, form token and result=approve|fail:
  // completes the challenge once, under the charge's lock (racing a void).
  asio::awaitable<Response> CompleteChallenge(Request& req) {
    std::optional<FormPairs> form = ParsePageForm(req);
    if (!form) co_return HtmlPage(400, "Bad request", "The body must be a form (token, result).");
    std::vector<std::string_view> tokens, results;
    for (const auto& [k, v] : *form) {
      if (k == "token") tokens.push_back(v);
      if (k == "result") results.push_back(v);
    }
    const std::string id(req.path_params.at(0));
    if (tokens.size() != 1 || ChallengedCharge(id, tokens[0]) == nullptr) co_return NotFoundPage();
    if (results.size() != 1 || (results[0] != "approve" && results[0] != "fail")) {
      co_return HtmlPage(400, "Bad request", "result must be approve or fail.");
    }

    IdempotencyStore::Hold charge_lock = co_await charge_locks_.Acquire(id);
    std::shared_ptr<const Charge> charge = charges_.Get(id);
    if (charge->voided) {
      co_return HtmlPage(409, "Expired", "The payment was canceled: this authentication expired.");
    }
    if (charge->status != "requires_action") {
      co_return HtmlPage(409, "Already completed", "This authentication is already completed.");
    }
    const bool approved = results[0] == "approve" && charge->three_d_secure != kChallengeFails;
    std::string line;
    JsonWriter rec(&line);
    rec.BeginObject();
    rec.Key("ts").Double(NowSeconds());
    rec.Key("api").String(kApiName);
    rec.Key("op").String("authenticate");
    rec.Key("id").String(charge->id);
    rec.Key("idempotency_key");
    if (charge->idempotency_key) {
      rec.String(*charge->idempotency_key);
    } else {
      rec.Null();
    }
    rec.Key("result").String(approved ? "approved" : "failed");
    rec.EndObject();
    if (!co_await journal_.AppendLine(std::move(line))) {
      co_return HtmlPage(500, "Error", "The sandbox could not record the result: try again.");
    }
    std::shared_ptr<const Charge> next = Authenticated(*charge, approved);
    charges_.Put(next);
    charge_lock.Release();

    if (next->notify_url && webhooks_.enabled()) {
      const std::string event_id = StrCat("evt_", RandomHex(12));
      const std::string_view type =
          approved ? "charge.authenticated" : "charge.authentication_failed";
      std::string body;
      JsonWriter w(&body);
      w.BeginObject();
      w.Key("id").String(event_id);
      w.Key("type").String(type);
      w.Key("created").Int(static_cast<int64_t>(NowSeconds()));
      w.Key("data").BeginObject().Key("object").Raw(ChargeJson(*next)).EndObject();
      w.EndObject();
      webhooks_.Send(kApiName, event_id, std::string(type), *next->notify_url, std::move(body));
    }
    co_return HtmlPage(200, approved ? "Authentication approved" : "Authentication failed",
                   "Done: you may close this page and return to the merchant.");
  }

  // The charge awaiting (or having had) a challenge with this id and token.
  std::shared_ptr<const Charge> ChallengedCharge(std::string_view id, std::string_view token) {
    std::shared_ptr<const Charge> charge = charges_.Get(id);
    if (charge == nullptr || charge->three_d_secure.empty() ||
        !ConstantTimeEquals(ChallengeToken(id), token)) {
      return nullptr;
    }
    return charge;
  }

  static Response NotFoundPage() {
    return HtmlPage(404, "Not found", "No such authentication, or a wrong token.");
  }

  // POST /v1/charges/{id}/capture and /void (`op`): no parameters.
  asio::awaitable<Response> CaptureOrVoid(Request& req, std::string_view op) {
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    std::optional<std::string> key;
    if (std::optional<Response> err = IdempotencyKey(req, &key)) co_return *std::move(err);
    std::optional<FormPairs> pairs;
    if (std::optional<Response> err = ParseOperationForm(req, {}, &pairs)) {
      co_return *std::move(err);
    }
    OperationParams params;
    params.op = std::string(op);
    params.charge_id = std::string(req.path_params.at(0));
    if (charges_.Get(params.charge_id) == nullptr) co_return NoSuchCharge("id");
    co_return co_await TakeOrReplayOperation(req, std::move(params), std::move(key));
  }

  // POST /v1/refunds: charge (required), reason, amount (the charge's).
  asio::awaitable<Response> CreateRefund(Request& req) {
    if (std::optional<Response> err = Authenticate(req)) co_return *std::move(err);
    std::optional<std::string> key;
    if (std::optional<Response> err = IdempotencyKey(req, &key)) co_return *std::move(err);
    std::optional<FormPairs> pairs;
    if (std::optional<Response> err =
            ParseOperationForm(req, {"charge", "reason", "amount"}, &pairs)) {
      co_return *std::move(err);
    }
    auto get = [&pairs](std::string_view name) -> std::optional<std::string_view> {
      for (const auto& [k, v] : *pairs) {
        if (k == name) return v;
      }
      return std::nullopt;
    };
    OperationParams params;
    params.op = "refund";
    params.charge_id = std::string(get("charge").value_or(""));
    if (params.charge_id.empty()) co_return Invalid("charge", "charge is required.");
    if (std::optional<std::string_view> reason = get("reason")) {
      if (Utf8Length(*reason) > kMaxReasonLen) {
        co_return Invalid("reason", "reason can be at most 500 characters.");
      }
      params.reason = std::string(*reason);
    }
    std::shared_ptr<const Charge> charge = charges_.Get(params.charge_id);
    if (charge == nullptr) co_return NoSuchCharge("charge");
    if (std::optional<std::string_view> amount = get("amount")) {
      if (ParseAmount(*amount) != charge->amount) {
        co_return Invalid("amount", StrCat("Only full refunds are supported: amount must be ",
                                           charge->amount, "."));
      }
    }
    co_return co_await TakeOrReplayOperation(req, std::move(params), std::move(key));
  }

  asio::awaitable<Response> TakeOrReplayOperation(Request& req, OperationParams params,
                                                  std::optional<std::string> key) {
    auto take = [&](IdempotencyStore::Hold* hold) { return TakeOperation(params, key, hold); };
    auto replay = [&](const StoredResult& prior) { return ReplayOperation(prior, params); };
    co_return co_await TakeOrReplay(config_, store_, req, key, key.value_or(""), take, replay);
  }

  // The body of a capture, void or refund: empty, or form-encoded UTF-8 with
  // only `allowed` parameters, each at most once.
  static std::optional<Response> ParseOperationForm(const Request& req,
                                                    std::initializer_list<std::string_view> allowed,
                                                    std::optional<FormPairs>* out) {
    if (req.body.empty()) {
      *out = FormPairs{};
      return std::nullopt;
    }
    if (MediaType(req.header("Content-Type")) != "application/x-www-form-urlencoded") {
      return ErrorResponse(400, "invalid_request_error", "parameter_invalid",
                           "Content-Type must be application/x-www-form-urlencoded.");
    }
    if (ValidUtf8(req.body) &&
        static_cast<size_t>(std::count(req.body.begin(), req.body.end(), '&')) < kMaxFormFields) {
      *out = ParseForm(req.body, /*strict_utf8=*/true);
    }
    if (!*out) {
      return ErrorResponse(400, "invalid_request_error", "parameter_invalid",
                           "Request body is not valid form-encoded UTF-8.");
    }
    std::vector<std::string_view> seen;
    for (const auto& [k, v] : **out) {
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
        Json extra = Json::object();
        extra["param"] = std::string(Utf8Prefix(k, 100));
        return ErrorResponse(400, "invalid_request_error", "parameter_unknown",
                             "Received unknown parameter.", std::move(extra));
      }
      if (std::find(seen.begin(), seen.end(), k) != seen.end()) {
        return Invalid(k, "Parameter specified more than once.");
      }
      seen.push_back(k);
    }
    return std::nullopt;
  }

  static Response NoSuchCharge(std::string_view param) {
    Json extra = Json::object();
    extra["param"] = param;
    return ErrorResponse(404, "invalid_request_error", "resource_missing", "No such charge.",
                         std::move(extra));
  }

  // Why `op` cannot be done to the charge as it is now (an error code), or
  // empty if it can. Capture and void need a hold; a refund a captured
  // charge; a charge awaiting 3-D Secure can only be voided.
  static std::string_view Refusal(std::string_view op, const Charge& c) {
    if (c.voided) return op == "void" ? "charge_already_voided" : "charge_voided";
    if (c.status == "requires_action") return op == "void" ? "" : "charge_not_authenticated";
    if (c.status != "succeeded") return "charge_not_authorized";
    if (c.refunded) return op == "refund" ? "charge_already_refunded" : "charge_already_captured";
    if (op == "refund") return c.captured ? "" : "charge_not_captured";
    return c.captured ? "charge_already_captured" : "";
  }

  static std::string_view RefusalMessage(std::string_view code) {
    if (code == "charge_not_authorized") return "The charge failed: there is nothing to act on.";
    if (code == "charge_already_refunded") return "The charge has already been refunded.";
    if (code == "charge_already_voided") return "The charge's authorisation was already voided.";
    if (code == "charge_voided") return "The charge's authorisation was voided.";
    if (code == "charge_not_captured") return "The charge is an uncaptured hold: void it instead.";
    if (code == "charge_not_authenticated") {
      return "The charge is waiting for the cardholder's 3-D Secure authentication.";
    }
    return "The charge has already been captured.";
  }

  static void Apply(std::string_view op, Charge& c) {
    if (op == "capture") {
      c.captured = true;
    } else if (op == "void") {
      c.voided = true;
      if (c.status == "requires_action") c.status = "canceled";  // the challenge expires
    } else {
      c.refunded = true;
    }
  }

  // Under the charge's lock: checks the charge as it is now, journals the
  // operation, then applies it. A refusal or error changes, journals and
  // stores nothing, so a retry under the key is judged anew.
  asio::awaitable<Response> TakeOperation(const OperationParams& params,
                                          const std::optional<std::string>& key,
                                          IdempotencyStore::Hold* hold) {
    if (config_.InjectError()) co_return InternalError();
    IdempotencyStore::Hold charge_lock = co_await charge_locks_.Acquire(params.charge_id);
    std::shared_ptr<const Charge> charge = charges_.Get(params.charge_id);
    if (std::string_view refusal = Refusal(params.op, *charge); !refusal.empty()) {
      Json extra = Json::object();
      extra["charge"] = charge->id;
      co_return ErrorResponse(400, "invalid_request_error", refusal, RefusalMessage(refusal),
                              std::move(extra));
    }
    auto next = std::make_shared<Charge>(*charge);
    Apply(params.op, *next);
    auto done = std::make_shared<ChargeOperation>();
    done->params = params;

    const double ts = NowSeconds();
    std::string line;
    JsonWriter rec(&line);
    rec.BeginObject();
    rec.Key("ts").Double(ts);
    rec.Key("api").String(kApiName);
    rec.Key("op").String(params.op);
    if (params.op == "refund") {
      RefundRecord refund;
      refund.id = StrCat("re_", RandomHex(12));
      refund.charge_id = charge->id;
      refund.amount = charge->amount;
      refund.currency = charge->currency;
      refund.reason = params.reason;
      refund.idempotency_key = key;
      refund.ts = ts;
      done->body = RefundJson(refund);
      rec.Key("id").String(refund.id);
      rec.Key("charge").String(charge->id);
    } else {
      done->body = ChargeJson(*next);
      rec.Key("id").String(charge->id);
    }
    rec.Key("idempotency_key");
    if (key) {
      rec.String(*key);
    } else {
      rec.Null();
    }
    rec.Key("amount").Int(charge->amount);
    rec.Key("currency").String(charge->currency);
    if (params.op == "refund") {
      rec.Key("status").String("succeeded");
      rec.Key("reason");
      if (params.reason) {
        rec.String(*params.reason);
      } else {
        rec.Null();
      }
    }
    rec.EndObject();
    if (!co_await journal_.AppendLine(std::move(line))) co_return InternalError();

    charges_.Put(next);
    if (hold != nullptr) hold->Put(done);
    Response resp;
    resp.body = done->body;
    co_return resp;
  }

  // Same operation on the same charge (and reason): the stored answer.
  static Response ReplayOperation(const StoredResult& prior, const OperationParams& params) {
    const auto* done = dynamic_cast<const ChargeOperation*>(&prior);
    if (done == nullptr || done->params.op != params.op ||
        done->params.charge_id != params.charge_id || done->params.reason != params.reason) {
      return KeyReused();
    }
    Response resp;
    resp.body = done->body;
    resp.headers.emplace_back("Idempotent-Replayed", "true");
    resp.replayed = true;
    return resp;
  }

  static Response KeyReused() {
    return ErrorResponse(400, "idempotency_error", "idempotency_key_reused",
                         "Keys for idempotent requests can only be used with the same "
                         "parameters they were first used with.");
  }

  std::optional<Response> Authenticate(const Request& req) const {
    auto [scheme, token] = SplitAuthorization(req.header("Authorization"));
    if (EqualsIgnoreCase(scheme, "bearer") && ConstantTimeEquals(token, secret_.Reveal())) {
      return std::nullopt;
    }
    return ErrorResponse(401, "invalid_request_error", "unauthorized", "Invalid API key provided.",
                         Json::object(), {{"WWW-Authenticate", "Bearer realm=\"psp-sandbox\""}});
  }

  static std::optional<Response> IdempotencyKey(const Request& req, std::optional<std::string>* key) {
    std::optional<std::string_view> value = req.header("Idempotency-Key");
    if (!value) return std::nullopt;
    if (value->empty() || value->size() > kMaxIdempotencyKeyLen || !IsVisibleAscii(*value)) {
      return Invalid("Idempotency-Key",
                     "Idempotency-Key must be 1-255 printable ASCII characters without spaces.");
    }
    *key = std::string(*value);
    return std::nullopt;
  }

  static std::optional<Response> ParseParams(const Request& req, bool want_fingerprint,
                                             ChargeParams* out) {
    if (MediaType(req.header("Content-Type")) != "application/x-www-form-urlencoded") {
      return ErrorResponse(400, "invalid_request_error", "parameter_invalid",
                           "Content-Type must be application/x-www-form-urlencoded.");
    }
    std::optional<FormPairs> pairs;
    if (ValidUtf8(req.body) &&
        static_cast<size_t>(std::count(req.body.begin(), req.body.end(), '&')) + 1 <=
            kMaxFormFields) {
      pairs = ParseForm(req.body, /*strict_utf8=*/true);
    }
    if (!pairs) {
      return ErrorResponse(400, "invalid_request_error", "parameter_invalid",
                           "Request body is not valid form-encoded UTF-8.");
    }
    static const std::array<std::string_view, 11> kAllowed = {
        "amount", "currency", "card[number]", "card[exp_month]", "card[exp_year]", "card[cvc]",
        "description", "capture", "region", "notify_url", "return_url"};
    std::array<std::optional<std::string_view>, kAllowed.size()> raw;  // by kAllowed index
    auto allowed_index = [](std::string_view k) -> int {
      for (size_t i = 0; i < kAllowed.size(); ++i) {
        if (kAllowed[i] == k) return static_cast<int>(i);
      }
      return -1;
    };
    std::map<std::string_view, std::string_view> metadata;
    for (const auto& [k, v] : *pairs) {
      const bool is_meta = k.starts_with("metadata[");
      const int index = allowed_index(k);
      if ((index >= 0 && raw[static_cast<size_t>(index)]) || (is_meta && metadata.count(k))) {
        return Invalid(k, "Parameter specified more than once.");
      }
      if (index >= 0) {
        raw[static_cast<size_t>(index)] = v;
      } else if (is_meta && k.ends_with("]") && k.size() >= 10) {
        std::string_view mk = std::string_view(k).substr(9, k.size() - 10);
        if (mk.empty() || Utf8Length(mk) > kMaxMetadataKeyLen ||
            mk.find_first_of("[]") != std::string_view::npos) {
          return Invalid(k, "Invalid metadata key.");
        }
        if (Utf8Length(v) > kMaxMetadataValueLen) {
          return Invalid(k, "Metadata values can be at most 500 characters.");
        }
        metadata[k] = v;
        if (metadata.size() > kMaxMetadataKeys) {
          return Invalid(k, "At most 50 metadata keys are allowed.");
        }
      } else {
        Json extra = Json::object();
        extra["param"] = std::string(Utf8Prefix(k, 100));
        return ErrorResponse(400, "invalid_request_error", "parameter_unknown",
                             "Received unknown parameter.", std::move(extra));
      }
    }
    auto get = [&](std::string_view name) -> std::string_view {
      return raw[static_cast<size_t>(allowed_index(name))].value_or(std::string_view());
    };

    std::optional<int64_t> amount = ParseAmount(get("amount"));
    if (!amount) return Invalid("amount", "amount must be a positive integer in minor units.");
    std::string_view currency = get("currency");
    if (currency.size() != 3 || !std::all_of(currency.begin(), currency.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        })) {
      return Invalid("currency", "currency must be a 3-letter ISO code.");
    }
    std::string_view number = get("card[number]");
    if (!IsAsciiDigits(number) || number.size() < 12 || number.size() > 19 || !LuhnValid(number)) {
      return Invalid("card[number]", "Your card number is incorrect.");
    }
    std::string_view month_s = get("card[exp_month]");
    if (!IsAsciiDigits(month_s) || month_s.size() > 2 || SmallInt(month_s) < 1 ||
        SmallInt(month_s) > 12) {
      return Invalid("card[exp_month]", "Your card's expiration month is invalid.");
    }
    std::string_view year_s = get("card[exp_year]");
    if (!IsAsciiDigits(year_s) || (year_s.size() != 2 && year_s.size() != 4)) {
      return Invalid("card[exp_year]", "Your card's expiration year is invalid.");
    }
    const int year = SmallInt(year_s) + (year_s.size() == 2 ? 2000 : 0);
    const int month = SmallInt(month_s);
    std::time_t now_t = static_cast<std::time_t>(NowSeconds());
    std::tm now{};
    gmtime_r(&now_t, &now);
    const int now_year = now.tm_year + 1900;
    const int now_month = now.tm_mon + 1;
    if (year < now_year || (year == now_year && month < now_month) || year > now_year + 50) {
      return Invalid("card[exp_year]", "Your card's expiration date is invalid or in the past.");
    }
    std::string_view cvc = get("card[cvc]");
    if (!IsAsciiDigits(cvc) || (cvc.size() != 3 && cvc.size() != 4)) {
      return Invalid("card[cvc]", "Your card's security code is invalid.");
    }
    if (Utf8Length(get("description")) > kMaxDescriptionLen) {
      return Invalid("description", "description can be at most 1000 characters.");
    }
    std::string_view capture = get("capture");
    if (!capture.empty() && capture != "true" && capture != "false") {
      return Invalid("capture", "capture must be true or false.");
    }
    auto given = [&](std::string_view name) {
      return raw[static_cast<size_t>(allowed_index(name))].has_value();
    };
    if (given("region")) {
      std::string_view region = get("region");
      if (region.size() != 2 || !std::all_of(region.begin(), region.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
          })) {
        return Invalid("region", "region must be a 2-letter ISO 3166 country code.");
      }
      out->region = std::string(region);
      for (char& c : *out->region) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      }
    }
    if (given("notify_url")) {
      absl::StatusOr<WebhookUrl> url = ParseWebhookUrl(get("notify_url"));
      if (!url.ok()) {
        return Invalid("notify_url", StrCat("notify_url ", url.status().message(), "."));
      }
      out->notify_url = std::string(get("notify_url"));
    }
    if (given("return_url")) {
      std::string_view url = get("return_url");
      if (url.empty() || url.size() > kMaxReturnUrlLen || !IsVisibleAscii(url)) {
        return Invalid("return_url",
                       "return_url must be 1-2048 printable ASCII characters without spaces.");
      }
      out->return_url = std::string(url);
    }

    out->amount = *amount;
    out->currency = std::string(currency);
    for (char& c : out->currency) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out->number = Secret(std::string(number));
    out->capture = capture != "false";
    if (want_fingerprint) {
      // Over every raw parameter (the whole request is compared on reuse);
      // kept in memory only, never journaled.
      std::vector<std::pair<std::string_view, std::string_view>> sorted(pairs->begin(),
                                                                         pairs->end());
      std::sort(sorted.begin(), sorted.end());
      std::string canonical;
      for (const auto& [k, v] : sorted) StrAppend(&canonical, k.size(), ":", k, v.size(), ":", v);
      out->fingerprint = Sha256(canonical);
    }
    return std::nullopt;
  }

  // A create call under a key already used: the stored answer if the key was
  // used for the same charge request (not for a capture, void or refund).
  Response Replay(const StoredResult& stored, const ChargeParams& params) const {
    const auto* created = dynamic_cast<const Charge*>(&stored);
    if (created == nullptr) return KeyReused();
    const Charge& prior = *created;
    bool same;
    if (!prior.fingerprint.empty()) {
      same = ConstantTimeEquals(prior.fingerprint, params.fingerprint);
    } else {  // rebuilt from the journal: compare what the journal knows
      std::string_view number = params.number.Reveal();
      // (A challenged charge's line has "captured":false whatever `capture`
      // said: it takes money only once approved and captured.)
      same = prior.amount == params.amount && prior.currency == params.currency &&
             prior.last4 == number.substr(number.size() - 4) &&
             (prior.status == "failed" || !prior.three_d_secure.empty() ||
              prior.capture == params.capture) &&
             prior.region == params.region && prior.notify_url == params.notify_url &&
             prior.return_url == params.return_url;
    }
    if (!same) return KeyReused();
    Response resp = Render(prior);
    resp.headers.emplace_back("Idempotent-Replayed", "true");
    resp.replayed = true;
    return resp;
  }

  // Charges (or declines) per the test instruments; journals before
  // answering. Errors happen before anything is charged, journaled or
  // stored under the key, so a retry with the key may succeed.
  asio::awaitable<Response> TakeCharge(const ChargeParams& params,
                                       const std::optional<std::string>& key,
                                       IdempotencyStore::Hold* hold) {
    if (config_.InjectError()) co_return InternalError();
    std::string_view number = params.number.Reveal();
    std::string decline;
    if (number == "4000000000000002") {
      decline = "card_declined";
    } else if (number == "4000000000009995") {
      decline = "insufficient_funds";
    } else if (number.starts_with(kDeclinePrefix) && number != kFrictionlessCard) {
      decline = "card_declined";
    }
    auto charge = std::make_shared<Charge>();
    charge->id = StrCat("ch_", RandomHex(12));
    charge->amount = params.amount;
    charge->currency = params.currency;
    charge->decline_code = decline;
    charge->last4 = std::string(number.substr(number.size() - 4));
    charge->idempotency_key = key;
    charge->ts = NowSeconds();
    charge->fingerprint = params.fingerprint;
    charge->capture = params.capture;
    charge->region = params.region;
    charge->notify_url = params.notify_url;
    charge->return_url = params.return_url;
    if (decline.empty()) charge->three_d_secure = std::string(ChallengeFor(number, params.region));
    if (!decline.empty()) {
      charge->status = "failed";
    } else if (!charge->three_d_secure.empty()) {
      charge->status = "requires_action";
    } else {
      charge->status = "succeeded";
    }
    charge->captured = charge->status == "succeeded" && params.capture;

    std::string line;
    JsonWriter rec(&line);
    rec.BeginObject();
    rec.Key("ts").Double(charge->ts);
    rec.Key("api").String(kApiName);
    rec.Key("id").String(charge->id);
    rec.Key("idempotency_key");
    if (key) {
      rec.String(*key);
    } else {
      rec.Null();
    }
    rec.Key("amount").Int(charge->amount);
    rec.Key("currency").String(charge->currency);
    rec.Key("status").String(charge->status);
    rec.Key("decline_code").String(charge->decline_code);
    rec.Key("last4").String(charge->last4);
    // A challenged charge takes money only once approved and captured: its
    // line reads as a hold ("captured":false) whatever `capture` said.
    if ((charge->status == "succeeded" && !charge->capture) ||
        charge->status == "requires_action") {
      rec.Key("captured").Bool(false);
    }
    for (auto [name, field] : {std::pair{"region", &charge->region},
                               std::pair{"notify_url", &charge->notify_url},
                               std::pair{"return_url", &charge->return_url}}) {
      if (*field) rec.Key(name).String(**field);
    }
    if (!charge->three_d_secure.empty()) rec.Key("three_d_secure").String(charge->three_d_secure);
    rec.EndObject();
    // Not journaled means not taken: tell the client truthfully.
    if (!co_await journal_.AppendLine(std::move(line))) co_return InternalError();

    charges_.Put(charge);
    if (hold != nullptr) hold->Put(charge);
    co_return Render(*charge);
  }

  // The challenge page's token: unguessable without the API secret, and
  // derived (not stored) so that it survives a restart.
  std::string ChallengeToken(std::string_view charge_id) const {
    return HexEncode(HmacSha256(secret_, StrCat("3ds\n", charge_id))).substr(0, 32);
  }

  // The charge object of the API (create, retrieve and list answers).
  std::string ChargeJson(const Charge& c) const {
    std::string out;
    JsonWriter w(&out);
    w.BeginObject();
    w.Key("id").String(c.id);
    w.Key("object").String("charge");
    w.Key("amount").Int(c.amount);
    w.Key("currency").String(c.currency);
    w.Key("status").String(c.status);
    w.Key("paid").Bool(c.status == "succeeded");
    w.Key("captured").Bool(c.captured);
    w.Key("voided").Bool(c.voided);
    w.Key("refunded").Bool(c.refunded);
    w.Key("amount_refunded").Int(c.refunded ? c.amount : 0);
    w.Key("card_last4").String(c.last4);
    w.Key("idempotency_key");
    if (c.idempotency_key) {
      w.String(*c.idempotency_key);
    } else {
      w.Null();
    }
    w.Key("created").Int(static_cast<int64_t>(c.ts));
    if (c.status == "failed") w.Key("failure_code").String(c.decline_code);
    if (c.status == "requires_action") {
      w.Key("next_action").BeginObject();
      w.Key("type").String("redirect_to_url");
      w.Key("redirect_to_url").BeginObject();
      w.Key("url").String(
          StrCat(self_url_.get(), "/3ds/", c.id, "?token=", ChallengeToken(c.id)));
      w.Key("return_url");
      if (c.return_url) {
        w.String(*c.return_url);
      } else {
        w.Null();
      }
      w.EndObject().EndObject();
    }
    w.EndObject();
    return out;
  }

  // The refund object (the refund call's answer and the refunds list item).
  static std::string RefundJson(const RefundRecord& r) {
    std::string out;
    JsonWriter w(&out);
    w.BeginObject();
    w.Key("id").String(r.id);
    w.Key("object").String("refund");
    w.Key("charge").String(r.charge_id);
    w.Key("amount").Int(r.amount);
    w.Key("currency").String(r.currency);
    w.Key("status").String("succeeded");
    w.Key("reason");
    if (r.reason) {
      w.String(*r.reason);
    } else {
      w.Null();
    }
    w.Key("idempotency_key");
    if (r.idempotency_key) {
      w.String(*r.idempotency_key);
    } else {
      w.Null();
    }
    w.Key("created").Int(static_cast<int64_t>(r.ts));
    w.EndObject();
    return out;
  }

  // The create call's answer: a pure function of the record, so replays
  // (also after a restart on the same address) are byte-identical.
  Response Render(const Charge& c) const {
    Response resp;
    if (c.status == "succeeded" || c.status == "requires_action") {
      resp.body = ChargeJson(c);
      return resp;
    }
    resp.status = 402;
    JsonWriter w(&resp.body);
    w.BeginObject().Key("error").BeginObject();
    w.Key("type").String("card_error");
    w.Key("code").String("card_declined");
    w.Key("decline_code").String(c.decline_code);
    w.Key("message").String("Your card was declined.");
    w.Key("charge").String(c.id);
    w.EndObject().EndObject();
    return resp;
  }

  const Secret secret_;
  Journal& journal_;
  const ApiConfig& config_;
  WebhookSender& webhooks_;
  const SelfUrl& self_url_;
  IdempotencyStore store_;  // charges, captures, voids and refunds share the keys
  // Used only for its per-key lock: one capture / void / refund of a charge
  // at a time (keyed by charge id; nothing is stored).
  IdempotencyStore charge_locks_;
  ShardedChargeIndex charges_;
};

}  // namespace

std::unique_ptr<SandboxApi> MakeCardApi(Secret secret, Journal& journal, const ApiConfig& config,
                                        WebhookSender& webhooks, const SelfUrl& self_url) {
  return std::make_unique<CardApi>(std::move(secret), journal, config, webhooks, self_url);
}

}  // namespace recharge::sandbox
