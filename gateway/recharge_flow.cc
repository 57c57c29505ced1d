#include "gateway/recharge_flow.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "io/strings.h"
#include "gateway/validation.h"
#include "io/crypto.h"
#include "io/gateway_metrics.h"
#include "io/log.h"

namespace recharge {
namespace {

using recharge::v1::FraudAssessment;
using recharge::v1::RecordRechargeRequest;
using recharge::v1::RecordRechargeResponse;

// Time kept back from the caller's deadline to record the outcome.
constexpr std::chrono::milliseconds kRecordMargin(100);
// A call waits for admission until this long before its deadline: less
// than that left is too little to decide, charge and record.
constexpr std::chrono::milliseconds kAdmissionMargin(200);

// A slot among the recharges deciding, given back by Leave() or when the
// call ends.
class AdmissionSlot {
 public:
  explicit AdmissionSlot(AsyncSemaphore& slots) : slots_(&slots) {}
  AdmissionSlot(const AdmissionSlot&) = delete;
  AdmissionSlot& operator=(const AdmissionSlot&) = delete;
  ~AdmissionSlot() { Leave(); }
  void Leave() {
    if (slots_ != nullptr) slots_->Release();
    slots_ = nullptr;
  }

 private:
  AsyncSemaphore* slots_;
};

std::string FormatMillis(std::chrono::steady_clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::chrono::duration<double, std::milli>(d).count());
  return buf;
}

void AppendField(std::string* out, std::string_view name, std::string_view value) {
  StrAppend(out, name, "=", value.size(), ":", value, ";");
}

ChargeRequest MakeChargeRequest(const RecordRechargeRequest& req, const std::string& recharge_id,
                                std::chrono::steady_clock::time_point deadline) {
  ChargeRequest c;
  c.idempotency_key = req.idempotency_key();
  c.recharge_id = recharge_id;
  c.currency = req.amount().currency();
  c.minor_units = req.amount().minor_units();
  c.region = req.region();
  c.description = StrCat(req.package_id(), " for ", req.user_id());
  c.deadline = deadline;
  switch (req.payment_method_case()) {
    case RecordRechargeRequest::kCard:
      c.card = CardDetails{Secret(req.card().number()), req.card().exp_month(),
                           req.card().exp_year(), Secret(req.card().cvc()),
                           req.card().holder_name()};
      break;
    case RecordRechargeRequest::kPaypal:
      c.paypal_order_id = req.paypal().order_id();
      c.paypal_payer_id = req.paypal().payer_id();
      break;
    case RecordRechargeRequest::kEwallet:
      c.wallet_provider = req.ewallet().provider();
      c.wallet_account = req.ewallet().account_id();
      break;
    case RecordRechargeRequest::PAYMENT_METHOD_NOT_SET:
      break;
  }
  return c;
}

}  // namespace

std::string RequestFingerprint(const RecordRechargeRequest& req, std::string_view card_fingerprint) {
  std::string canon;
  AppendField(&canon, "user_id", req.user_id());
  AppendField(&canon, "package_id", req.package_id());
  AppendField(&canon, "currency", req.amount().currency());
  AppendField(&canon, "minor_units", StrCat(req.amount().minor_units()));
  AppendField(&canon, "region", req.region());
  AppendField(&canon, "seller_id", req.seller_id());
  switch (req.payment_method_case()) {
    case RecordRechargeRequest::kCard:
      AppendField(&canon, "card", card_fingerprint);
      AppendField(&canon, "exp", StrCat(req.card().exp_month(), "/", req.card().exp_year()));
      break;
    case RecordRechargeRequest::kPaypal:
      AppendField(&canon, "paypal", StrCat(req.paypal().order_id(), "/", req.paypal().payer_id()));
      break;
    case RecordRechargeRequest::kEwallet:
      AppendField(&canon, "ewallet", StrCat(req.ewallet().provider(), "/", req.ewallet().account_id()));
      break;
    case RecordRechargeRequest::PAYMENT_METHOD_NOT_SET:
      break;
  }
  std::map<std::string, std::string> metadata(req.metadata().begin(), req.metadata().end());
  for (const auto& [k, v] : metadata) AppendField(&canon, StrCat("metadata.", k), v);
  return Sha256(canon);
}

// rch_ + 12 hex digits of the creation time (µs) + 12 random hex digits:
// ids made later sort later, so the ledger's id indexes are appended to
// rather than written at random pages (ledger_bench: up to +59% commits/s).
std::string NewRechargeId() {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
  char time_hex[13];
  std::snprintf(time_hex, sizeof time_hex, "%012llx",
                static_cast<unsigned long long>(us) & 0xffffffffffffULL);
  return StrCat("rch_", time_hex, RandomHex(6));
}

void ApplyChargeOutcome(const ChargeOutcome& outcome, const std::string& adapter,
                        Recharge* recharge) {
  recharge::v1::PaymentResult* payment = recharge->mutable_payment();
  payment->set_adapter(adapter);
  payment->set_provider_reference(outcome.provider_reference);
  payment->set_decline_code(outcome.decline_code);
  payment->set_message(outcome.message);
  switch (outcome.result) {
    case ChargeResult::kApproved:
      recharge->set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
      break;
    case ChargeResult::kDeclined:
      recharge->set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
      break;
    case ChargeResult::kFailed:
    case ChargeResult::kNotFound:
      recharge->set_status(recharge::v1::RECHARGE_STATUS_FAILED);
      break;
    case ChargeResult::kUnknown:
      recharge->set_status(recharge::v1::RECHARGE_STATUS_PENDING);
      break;
    case ChargeResult::kRequiresAction:
      recharge->set_status(recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION);
      if (outcome.next_action) *recharge->mutable_next_action() = ToProto(*outcome.next_action);
      break;
  }
}

recharge::v1::NextAction ToProto(const NextActionInfo& action) {
  recharge::v1::NextAction out;
  switch (action.type) {
    case NextActionInfo::Type::kRedirect:
      out.set_type(recharge::v1::NEXT_ACTION_TYPE_REDIRECT);
      break;
    case NextActionInfo::Type::kDeepLink:
      out.set_type(recharge::v1::NEXT_ACTION_TYPE_DEEP_LINK);
      break;
    case NextActionInfo::Type::kQr:
      out.set_type(recharge::v1::NEXT_ACTION_TYPE_QR);
      break;
  }
  out.set_url(action.url);
  *out.mutable_expires_at() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(action.expires_at.time_since_epoch())
          .count());
  return out;
}

void PlaceOnHold(std::chrono::milliseconds hold_expiry, Recharge* recharge) {
  recharge->set_status(recharge::v1::RECHARGE_STATUS_PENDING_REVIEW);
  recharge->mutable_payment()->set_message("authorised (held, not captured) for review");
  *recharge->mutable_hold_expires_at() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
      google::protobuf::util::TimeUtil::TimestampToMicroseconds(recharge->created_at()) +
      std::chrono::duration_cast<std::chrono::microseconds>(hold_expiry).count());
}

bool ApplyCaptureOutcome(const ChargeOutcome& outcome, Recharge* recharge) {
  recharge::v1::PaymentResult* payment = recharge->mutable_payment();
  if (outcome.result == ChargeResult::kApproved) {
    recharge->set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
    payment->set_message("captured on review approval");
    return true;
  }
  if (outcome.result == ChargeResult::kDeclined) {
    recharge->set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
    payment->set_decline_code(outcome.decline_code);
    payment->set_message(StrCat("the provider refused the capture: ", outcome.message));
    return true;
  }
  return false;
}

Recharge RefundedRecharge(Recharge approved, recharge::v1::RefundInfo info,
                          std::string provider_reference) {
  approved.set_status(recharge::v1::RECHARGE_STATUS_REFUNDED);
  info.set_provider_reference(std::move(provider_reference));
  *info.mutable_refunded_at() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  *approved.mutable_refund() = std::move(info);
  return approved;
}

PaymentOperation OperationOn(const Recharge& recharge, std::string_view operation,
                             std::chrono::steady_clock::time_point deadline) {
  PaymentOperation op;
  op.idempotency_key = StrCat(recharge.recharge_id(), ":", operation);
  op.provider_reference = recharge.payment().provider_reference();
  op.currency = recharge.amount().currency();
  op.minor_units = recharge.amount().minor_units();
  op.deadline = deadline;
  return op;
}

RecordRechargeResponse ResponseOf(const Recharge& recharge) {
  RecordRechargeResponse r;
  r.set_recharge_id(recharge.recharge_id());
  r.set_status(recharge.status());
  if (recharge.status() == recharge::v1::RECHARGE_STATUS_APPROVED) r.set_coins_credited(recharge.coins());
  *r.mutable_fraud() = recharge.fraud();
  *r.mutable_payment() = recharge.payment();
  if (recharge.status() == recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION) {
    *r.mutable_next_action() = recharge.next_action();
  }
  return r;
}

ChargeRequest ChargeRequestOf(const Recharge& recharge,
                              std::chrono::steady_clock::time_point deadline) {
  ChargeRequest c;
  c.idempotency_key = recharge.idempotency_key();
  c.recharge_id = recharge.recharge_id();
  c.currency = recharge.amount().currency();
  c.minor_units = recharge.amount().minor_units();
  c.region = recharge.region();
  c.description = StrCat(recharge.package_id(), " for ", recharge.user_id());
  c.paypal_order_id = recharge.paypal().order_id();
  c.paypal_payer_id = recharge.paypal().payer_id();
  c.wallet_provider = recharge.ewallet().provider();
  c.wallet_account = recharge.ewallet().account_id();
  c.deadline = deadline;
  return c;
}

RechargeFlow::RechargeFlow(const Catalogue& catalogue, LedgerStore& ledger, const Router& router,
                           FraudFilter& fraud, Reconciler& reconciler, Secret fingerprint_key,
                           std::shared_ptr<AsyncSemaphore> deciding,
                           std::chrono::milliseconds hold_expiry)
    : catalogue_(catalogue),
      ledger_(ledger),
      router_(router),
      fraud_(fraud),
      reconciler_(reconciler),
      fingerprint_key_(std::move(fingerprint_key)),
      deciding_(std::move(deciding)),
      hold_expiry_(hold_expiry) {}

std::string RechargeFlow::Fingerprint(std::string_view value) const {
  return HexEncode(HmacSha256(fingerprint_key_, value));
}

asio::awaitable<absl::StatusOr<RecordRechargeResponse>> RechargeFlow::Record(
    const RecordRechargeRequest& req, std::chrono::steady_clock::time_point deadline) {
  const auto started = std::chrono::steady_clock::now();
  // 1. Validate and price. Nothing is stored for a bad request.
  absl::StatusOr<ValidatedRecharge> v = ValidateRecharge(req, catalogue_, CurrentYearMonth());
  if (!v.ok()) {
    LogDebug("recharge_invalid", {{"error", std::string(v.status().message())}});
    co_return v.status();
  }
  absl::StatusOr<const Router::Route*> route =
      router_.Select(v->method, v->wallet_provider, req.region(), req.amount().currency());
  if (!route.ok()) co_return route.status();

  FraudInput input;
  input.user_id = req.user_id();
  input.seller_id = req.seller_id();
  input.ip = req.client().ip();
  input.device_id = req.client().device_id();
  input.payment_method = v->method;
  input.wallet_provider = v->wallet_provider;
  input.region = req.region();
  input.currency = req.amount().currency();
  input.package_id = req.package_id();
  input.coins = v->package->coins;
  input.amount_usd_cents = v->package->usd_cents;
  switch (req.payment_method_case()) {
    case RecordRechargeRequest::kCard:
      input.card_fingerprint = Fingerprint(req.card().number());
      input.instrument_fingerprint = input.card_fingerprint;
      break;
    case RecordRechargeRequest::kPaypal:
      input.instrument_fingerprint = Fingerprint(StrCat("paypal:", req.paypal().payer_id()));
      break;
    case RecordRechargeRequest::kEwallet:
      input.instrument_fingerprint = Fingerprint(
          StrCat("ewallet:", req.ewallet().provider(), ":", req.ewallet().account_id()));
      break;
    case RecordRechargeRequest::PAYMENT_METHOD_NOT_SET:
      break;
  }

  // 2. Admission: room among the recharges deciding (claiming their key and
  //    deciding fraud: the ledger's and Redis's work), or a refusal that
  //    leaves the key unclaimed (a retry with it is a new attempt). A call
  //    leaves the stage once decided: waiting on a provider costs neither.
  switch (co_await deciding_->Acquire(deadline - kAdmissionMargin)) {
    case AsyncSemaphore::Wait::kGranted:
      break;
    case AsyncSemaphore::Wait::kTimedOut:
      co_return absl::DeadlineExceededError(StrCat(
          "gateway busy: no room among the ", deciding_->capacity(),
          " recharges deciding before the deadline; nothing was charged or stored, "
          "retry with the same idempotency_key"));
    case AsyncSemaphore::Wait::kQueueFull:
      co_return absl::ResourceExhaustedError(
          "gateway busy: too many recharges waiting; nothing was charged or stored, "
          "retry with the same idempotency_key");
    case AsyncSemaphore::Wait::kClosed:
      co_return absl::UnavailableError("gateway shutting down; nothing was charged or stored");
  }
  AdmissionSlot slot(*deciding_);

  // 3. Claim the idempotency key, durably, before anything else happens.
  KeyClaim claim;
  claim.idempotency_key = req.idempotency_key();
  claim.fingerprint = RequestFingerprint(req, input.card_fingerprint);
  Recharge& draft = claim.draft;
  draft.set_recharge_id(NewRechargeId());
  draft.set_idempotency_key(req.idempotency_key());
  draft.set_user_id(req.user_id());
  draft.set_package_id(req.package_id());
  draft.set_coins(v->package->coins);
  *draft.mutable_amount() = req.amount();
  draft.set_region(req.region());
  draft.set_payment_method(v->method_label);
  draft.set_card_masked(v->card_masked);
  draft.set_seller_id(req.seller_id());
  // The references a later charge (a review approval) pays with; no secret.
  if (req.has_paypal()) *draft.mutable_paypal() = req.paypal();
  if (req.has_ewallet()) *draft.mutable_ewallet() = req.ewallet();
  // TimeUtil::GetCurrentTime() has whole seconds in this protobuf: use micros.
  *draft.mutable_created_at() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());

  absl::StatusOr<BeginResult> begun = co_await ledger_.Begin(claim);
  if (!begun.ok()) {
    co_return absl::UnavailableError(StrCat("ledger unavailable; nothing was charged (",
                                                  begun.status().message(), ")"));
  }
  if (DebugLogging()) {
    LogDebug("recharge_begin", {{"recharge_id", begun->recharge_id},
                                {"idempotency_key", req.idempotency_key()},
                                {"user_id", req.user_id()},
                                {"seller_id", req.seller_id()},
                                {"package_id", req.package_id()},
                                {"method", v->method_label},
                                {"card_masked", v->card_masked},
                                {"card_fingerprint", input.card_fingerprint},
                                {"key_state", begun->kind == BeginResult::Kind::kClaimed ? "claimed" : "existing"}});
  }
  switch (begun->kind) {
    case BeginResult::Kind::kReplay: {
      RecordRechargeResponse stored = std::move(begun->stored);
      if (stored.status() == recharge::v1::RECHARGE_STATUS_PENDING) {
        // The outcome was unknown: ask the provider again before answering.
        slot.Leave();
        absl::StatusOr<Recharge> pending = co_await ledger_.GetRecharge(begun->recharge_id);
        if (pending.ok() && pending->status() == recharge::v1::RECHARGE_STATUS_PENDING) {
          UnresolvedRecharge u{req.idempotency_key(), *std::move(pending), /*started=*/false};
          const auto lookup_deadline = deadline - kRecordMargin;
          std::optional<RecordRechargeResponse> settled =
              co_await reconciler_.Resolve(u, lookup_deadline);
          if (settled) stored = *std::move(settled);
        }
      }
      stored.set_replayed(true);
      co_return stored;
    }
    case BeginResult::Kind::kMismatch:
      co_return absl::AlreadyExistsError(
          "idempotency_key: already used for a different request");
    case BeginResult::Kind::kInFlight:
      co_return absl::AbortedError(
          "idempotency_key: a request with this key is still in progress; retry later");
    case BeginResult::Kind::kClaimed:
      break;
  }

  // 4. Fraud decision, before anything is charged (at a time the decision
  //    log keeps, so that a backtest replays it at the same instant).
  input.at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  FraudAssessment assessment = co_await fraud_.Assess(input);
  slot.Leave();

  Recharge recharge = std::move(claim.draft);  // Begin() had its own copy
  RecordRechargeResponse response;
  response.set_recharge_id(recharge.recharge_id());
  if (assessment.decision() == recharge::v1::FRAUD_ACTION_BLOCK) {
    recharge.set_status(recharge::v1::RECHARGE_STATUS_BLOCKED);
  } else if (assessment.decision() == recharge::v1::FRAUD_ACTION_REVIEW && !req.has_card()) {
    // PayPal and e-wallet: nothing is taken before the review (charged on approval).
    recharge.set_status(recharge::v1::RECHARGE_STATUS_PENDING_REVIEW);
  } else if (assessment.decision() == recharge::v1::FRAUD_ACTION_REVIEW) {
    // A card: authorise now (a hold, no capture), capture on approval. The
    // card is never stored, only the hold's reference. A declined
    // authorisation is an ordinary decline; an ambiguous one is PENDING,
    // and the reconciler finds the hold (PENDING_REVIEW) or none (FAILED).
    ChargeRequest hold = MakeChargeRequest(req, recharge.recharge_id(), deadline - kRecordMargin);
    hold.capture = false;
    Router::Routed routed = co_await router_.Charge(**route, hold);
    ApplyChargeOutcome(routed.outcome, routed.adapter, &recharge);
    if (recharge.status() == recharge::v1::RECHARGE_STATUS_APPROVED && !routed.outcome.captured) {
      PlaceOnHold(hold_expiry_, &recharge);
    } else if (recharge.status() == recharge::v1::RECHARGE_STATUS_APPROVED) {
      // The provider captured although asked not to: the money moved, say so.
      LogError("hold_captured_at_once", {{"recharge_id", recharge.recharge_id()},
                                         {"adapter", routed.adapter}});
      response.set_coins_credited(recharge.coins());
    } else if (recharge.status() == recharge::v1::RECHARGE_STATUS_DECLINED) {
      fraud_.OnDeclined(input, co_await asio::this_coro::executor);
    }
  } else {
    // 5. Charge through the route: breakers, failover on definite failures.
    const auto charge_deadline = deadline - kRecordMargin;
    ChargeRequest charge = MakeChargeRequest(req, recharge.recharge_id(), charge_deadline);
    Router::Routed routed = co_await router_.Charge(**route, charge);
    ApplyChargeOutcome(routed.outcome, routed.adapter, &recharge);
    if (recharge.status() == recharge::v1::RECHARGE_STATUS_APPROVED) {
      response.set_coins_credited(recharge.coins());
    } else if (recharge.status() == recharge::v1::RECHARGE_STATUS_DECLINED) {
      fraud_.OnDeclined(input, co_await asio::this_coro::executor);
    }
  }
  *recharge.mutable_fraud() = assessment;
  response.set_status(recharge.status());
  *response.mutable_fraud() = assessment;
  *response.mutable_payment() = recharge.payment();
  if (recharge.has_next_action()) *response.mutable_next_action() = recharge.next_action();

  if (DebugLogging()) {
    std::string hits;
    for (const auto& h : assessment.hits()) StrAppend(&hits, hits.empty() ? "" : ",", h.rule_id());
    LogDebug("recharge_decided", {{"recharge_id", recharge.recharge_id()},
                                  {"status", recharge::v1::RechargeStatus_Name(recharge.status())},
                                  {"fraud_decision", recharge::v1::FraudAction_Name(assessment.decision())},
                                  {"rules_hit", hits},
                                  {"adapter", recharge.payment().adapter()},
                                  {"decline_code", recharge.payment().decline_code()}});
  }

  // 6. Record the outcome with the decision and its inputs.
  const std::string recharge_id = recharge.recharge_id();
  const std::string status_name = recharge::v1::RechargeStatus_Name(recharge.status()).substr(
      std::string_view("RECHARGE_STATUS_").size());
  const std::string method_label = recharge.payment_method();
  const std::string adapter = recharge.payment().adapter();
  const std::string fraud_decision =
      recharge::v1::FraudAction_Name(assessment.decision()).substr(std::string_view("FRAUD_ACTION_").size());
  std::string rules_hit;
  for (const auto& h : assessment.hits()) {
    StrAppend(&rules_hit, rules_hit.empty() ? "" : ",", h.rule_id(), h.shadow() ? "(shadow)" : "");
  }
  Completion done;
  done.idempotency_key = req.idempotency_key();
  done.decision = DecisionRecord{recharge_id, input.ToJson(), std::move(assessment)};
  done.recharge = std::move(recharge);
  done.response = std::move(response);
  absl::StatusOr<RecordRechargeResponse> stored = co_await ledger_.Complete(std::move(done));
  if (!stored.ok()) {
    // The key stays `started`: the reconciler resolves it through Lookup.
    LogError("ledger_complete_failed", {{"recharge_id", recharge_id},
                                        {"error", std::string(stored.status().message())}});
    co_return absl::UnavailableError(
        "the outcome could not be recorded yet; retry with the same idempotency key");
  }
  // Labels from small fixed sets (the catalogue's regions, the configured
  // instances): never a user, seller or card.
  Metrics().recharges.With({status_name, method_label, adapter, req.region()}).Inc();
  // The one decision line of the recharge (docs/operations.md): who, what,
  // the answer, the rules that hit, the provider and the time taken. No card
  // number or CVC: the card appears as its mask only.
  LogInfo("recharge", {{"recharge_id", recharge_id},
                       {"user_id", req.user_id()},
                       {"seller_id", req.seller_id()},
                       {"method", method_label},
                       {"region", req.region()},
                       {"status", status_name},
                       {"fraud_decision", fraud_decision},
                       {"rules_hit", rules_hit},
                       {"adapter", adapter},
                       {"ms", FormatMillis(std::chrono::steady_clock::now() - started)}});
  co_return *stored;
}

}  // namespace recharge
