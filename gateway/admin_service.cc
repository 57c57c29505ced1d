#include "gateway/admin_service.h"

#include <google/protobuf/util/time_util.h>

#include "fraud/backtest.h"
#include "gateway/call_gate.h"
#include "gateway/recharge_flow.h"
#include "gateway/service.h"
#include "gateway/validation.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

using namespace recharge::v1;
using google::protobuf::util::TimeUtil;

constexpr int kDefaultPageSize = 20;
constexpr int kMaxPageSize = 100;
// Page tokens of the review queue are bound to this scope name.
constexpr const char* kReviewScope = "review-queue";
constexpr const char* kAuditScope = "audit-log";

absl::Status NoRules() {
  return absl::FailedPreconditionError(
      "fraud rules are not configured (gateway.yaml fraud.rules is empty: allow-all policy)");
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

void ToProto(const SellerFlag& f, FlaggedSeller* out) {
  out->set_seller_id(f.seller_id);
  out->set_rule_id(f.rule_id);
  out->set_reason(f.reason);
  *out->mutable_flagged_at() = TimeUtil::MillisecondsToTimestamp(f.flagged_at_ms);
  *out->mutable_expires_at() = TimeUtil::MillisecondsToTimestamp(f.expires_at_ms);
}

}  // namespace

FraudAdminService::FraudAdminService(CallGate& gate, RuleEngine* engine, LedgerStore& ledger,
                                     const Router& router, RulesSync* sync)
    : gate_(gate), engine_(engine), sync_(sync), ledger_(ledger), router_(router) {}

grpc::ServerUnaryReactor* FraudAdminService::ListFlaggedSellers(
    grpc::CallbackServerContext* ctx, const ListFlaggedSellersRequest* request,
    ListFlaggedSellersResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ListFlaggedSellers", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    absl::StatusOr<std::vector<SellerFlag>> flags = co_await engine_->store().ListFlags(NowMs());
    if (!flags.ok()) co_return absl::UnavailableError(StrCat("redis: ", flags.status().message()));
    for (const SellerFlag& f : *flags) ToProto(f, response->add_sellers());
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::GetSellerRisk(grpc::CallbackServerContext* ctx,
                                                           const GetSellerRiskRequest* request,
                                                           SellerRisk* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/GetSellerRisk", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    if (absl::Status s = ValidateId("seller_id", request->seller_id(), true); !s.ok()) co_return s;
    absl::StatusOr<std::optional<SellerFlag>> flag =
        co_await engine_->store().GetFlag(request->seller_id());
    if (!flag.ok()) co_return absl::UnavailableError(StrCat("redis: ", flag.status().message()));
    response->set_seller_id(request->seller_id());
    if (*flag && (*flag)->expires_at_ms > NowMs()) {
      response->set_flagged(true);
      ToProto(**flag, response->mutable_flag());
    }
    // The seller's own counters (those counted per seller_id), read only.
    std::shared_ptr<const rules::RuleSet> rs = engine_->rules();
    FraudInput input;
    input.seller_id = request->seller_id();
    std::vector<int> index;
    std::vector<CounterUpdate> reads =
        engine_->CounterUpdates(*rs, input, rules::CounterEvent::kRequest, &index);
    absl::StatusOr<std::vector<double>> values =
        co_await engine_->store().Read(reads, std::chrono::system_clock::now());
    if (!values.ok()) co_return absl::UnavailableError(StrCat("redis: ", values.status().message()));
    for (size_t i = 0; i < rs->counters().size(); ++i) {
      if (index[i] >= 0) (*response->mutable_counters())[rs->counters()[i].name] = (*values)[index[i]];
    }
    if (rs->links().enabled()) {
      absl::StatusOr<std::vector<::recharge::LinkedSeller>> linked = co_await engine_->store().LinkedSellers(
          request->seller_id(), rs->links().window, std::chrono::system_clock::now());
      if (!linked.ok()) co_return absl::UnavailableError(StrCat("redis: ", linked.status().message()));
      for (const ::recharge::LinkedSeller& l : *linked) {
        recharge::v1::LinkedSeller* out = response->add_linked();
        out->set_seller_id(l.seller_id);
        for (const std::string& by : l.by) out->add_by(by);
        out->set_shared_instruments(l.shared);
      }
    }
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::ClearSellerFlag(grpc::CallbackServerContext* ctx,
                                                             const ClearSellerFlagRequest* request,
                                                             ClearSellerFlagResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ClearSellerFlag", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    if (absl::Status s = ValidateId("seller_id", request->seller_id(), true); !s.ok()) co_return s;
    if (absl::Status s = ValidateNote("note", request->note()); !s.ok()) co_return s;
    absl::StatusOr<bool> was = co_await engine_->store().ClearFlag(request->seller_id());
    if (!was.ok()) co_return absl::UnavailableError(StrCat("redis: ", was.status().message()));
    response->set_was_flagged(*was);
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::ReloadRules(grpc::CallbackServerContext* ctx,
                                                         const ReloadRulesRequest* request,
                                                         ReloadRulesResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ReloadRules", request, response,
                     [this, request, response](const CallInfo& call) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    absl::StatusOr<std::string> version = engine_->Reload(call.caller->name);
    if (!version.ok()) {
      co_return absl::InvalidArgumentError(
          StrCat(version.status().message(), " (the rules loaded before stay live)"));
    }
    response->set_rules_version(*version);
    if (sync_ != nullptr) co_await sync_->Announce();  // the other replicas follow
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::BacktestRules(grpc::CallbackServerContext* ctx,
                                                           const BacktestRulesRequest* request,
                                                           BacktestRulesResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/BacktestRules", request, response,
                     [this, request, response](const CallInfo& call) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    // The candidate is checked like a reload; nothing live changes.
    const std::string name = request->file_name().empty() ? "candidate.yaml" : request->file_name();
    absl::StatusOr<std::shared_ptr<const rules::RuleSet>> candidate =
        rules::RuleSet::Parse(request->rules_yaml(), name);
    if (!candidate.ok()) co_return absl::InvalidArgumentError(candidate.status().message());
    const int examples = request->examples_per_change() == 0
                             ? 3
                             : std::clamp(request->examples_per_change(), 1, 50);
    if (request->examples_per_change() < 0) {
      co_return absl::InvalidArgumentError("examples_per_change: must not be negative");
    }
    const auto from = request->has_from()
                          ? std::chrono::system_clock::time_point(std::chrono::microseconds(
                                TimeUtil::TimestampToMicroseconds(request->from())))
                          : std::chrono::system_clock::time_point();
    const auto to = request->has_to()
                        ? std::chrono::system_clock::time_point(std::chrono::microseconds(
                              TimeUtil::TimestampToMicroseconds(request->to())))
                        : std::chrono::system_clock::now();
    if (to < from) co_return absl::InvalidArgumentError("to: is before from");
    constexpr size_t kMaxDecisions = 1'000'000;
    absl::StatusOr<BacktestTraffic> traffic =
        co_await ledger_.ReadBacktestTraffic(from, to, kMaxDecisions);
    if (!traffic.ok()) co_return traffic.status();

    std::vector<RecordedDecision> decisions;
    decisions.reserve(traffic->decisions.size());
    for (BacktestTraffic::Decision& d : traffic->decisions) {
      std::optional<FraudInput> input = FraudInput::FromJson(d.inputs_json);
      if (!input) continue;  // unreadable inputs: nothing to replay (never written so)
      RecordedDecision& r = decisions.emplace_back();
      r.recharge_id = std::move(d.recharge_id);
      // Decided at the instant recorded with the inputs; older records: when written.
      r.at_ms = input->at_ms != 0 ? input->at_ms : d.recorded_at_us / 1000;
      r.input = *std::move(input);
      r.assessment = std::move(d.assessment);
      r.declined = d.declined;
    }
    std::vector<RecordedChargeback> chargebacks;
    for (BacktestTraffic::Chargeback& c : traffic->chargebacks) {
      std::optional<FraudInput> input = FraudInput::FromJson(c.inputs_json);
      if (input) chargebacks.push_back({std::move(c.recharge_id), c.at_us / 1000, *std::move(input)});
    }
    // The replay: on the backtest thread, then back.
    const asio::any_io_executor home = co_await asio::this_coro::executor;
    co_await asio::post(backtests_.get_executor(), asio::use_awaitable);
    Backtest backtest(*std::move(candidate), engine_->rules()->version(), examples);
    *response = backtest.Run(std::move(decisions), std::move(chargebacks));
    co_await asio::post(home, asio::use_awaitable);
    LogInfo("rules_backtest", {{"caller", call.caller->name},
                               {"candidate_version", response->candidate_version()},
                               {"replayed", std::to_string(response->replayed())},
                               {"changed", std::to_string(response->changed())}});
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::GetRuleStats(grpc::CallbackServerContext* ctx,
                                                          const GetRuleStatsRequest* request,
                                                          GetRuleStatsResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/GetRuleStats", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    for (const RuleStatsSnapshot& s : engine_->Stats()) {
      RuleStats* r = response->add_rules();
      r->set_rule_id(s.rule_id);
      r->set_evaluated(s.evaluated);
      r->set_hits(s.hits);
      r->set_shadow(s.shadow);
    }
    response->set_rules_version(engine_->rules()->version());
    response->set_degraded_decisions(engine_->degraded_decisions());
    response->set_demoted_rules(engine_->demotions());
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::ListReviews(grpc::CallbackServerContext* ctx,
                                                         const ListReviewsRequest* request,
                                                         ListReviewsResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ListReviews", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (request->page_size() < 0) co_return absl::InvalidArgumentError("page_size: must not be negative");
    const int page_size = request->page_size() == 0 ? kDefaultPageSize
                                                    : std::min(request->page_size(), kMaxPageSize);
    std::optional<RechargeCursor> cursor;
    if (!request->page_token().empty()) {
      absl::StatusOr<RechargeCursor> c = DecodePageToken(request->page_token(), kReviewScope);
      if (!c.ok()) co_return c.status();
      cursor = *c;
    }
    absl::StatusOr<RechargePage> page =
        co_await ledger_.ListByStatus(RECHARGE_STATUS_PENDING_REVIEW, page_size, cursor);
    if (!page.ok()) co_return page.status();
    for (Recharge& r : page->recharges) *response->add_recharges() = std::move(r);
    if (page->next_cursor) response->set_next_page_token(EncodePageToken(*page->next_cursor, kReviewScope));
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FraudAdminService::ResolveReview(grpc::CallbackServerContext* ctx,
                                                           const ResolveReviewRequest* request,
                                                           Recharge* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ResolveReview", request, response,
                     [this, request, response](const CallInfo& call) -> asio::awaitable<absl::Status> {
    if (absl::Status s = ValidateId("recharge_id", request->recharge_id(), true); !s.ok()) co_return s;
    if (absl::Status s = ValidateNote("note", request->note()); !s.ok()) co_return s;
    absl::StatusOr<Recharge> r = co_await ledger_.GetRecharge(request->recharge_id());
    if (!r.ok()) co_return r.status();
    if (r->status() != RECHARGE_STATUS_PENDING_REVIEW) {
      co_return absl::FailedPreconditionError(StrCat("recharge_id: not in review (status ",
                                                     RechargeStatus_Name(r->status()), ")"));
    }
    Recharge next = *r;
    next.set_review_note(RedactCardNumbers(request->note()));
    next.set_reviewed_by(call.caller->name);
    *next.mutable_reviewed_at() = TimeUtil::MicrosecondsToTimestamp(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    if (r->has_hold_expires_at()) {
      co_return co_await ResolveHeld(*std::move(r), std::move(next), request->approve(),
                                     call.deadline, response);
    }
    if (!request->approve()) {
      next.set_status(RECHARGE_STATUS_DECLINED);
      next.mutable_payment()->set_decline_code("review_rejected");
      next.mutable_payment()->set_message("rejected by fraud review");
      absl::StatusOr<bool> moved = co_await ledger_.Transition(next, ResponseOf(next), RECHARGE_STATUS_PENDING_REVIEW);
      if (!moved.ok()) co_return moved.status();
      if (!*moved) co_return absl::FailedPreconditionError("recharge_id: the review was resolved meanwhile");
      *response = std::move(next);
      co_return absl::OkStatus();
    }
    if (r->payment_method() == "card") {
      // No hold (a review recorded before holds, or whose authorisation
      // was not kept): the card number is never stored, so it cannot be
      // charged now; the buyer has to pay again.
      co_return absl::FailedPreconditionError(
          "recharge_id: this card recharge has no authorisation hold to capture (card data is "
          "never stored); reject it and let the buyer pay again");
    }
    std::string provider;
    std::string method = r->payment_method();
    if (method.rfind("ewallet:", 0) == 0) {
      provider = method.substr(8);
      method = "ewallet";
    }
    absl::StatusOr<const Router::Route*> route =
        router_.Select(method, provider, r->region(), r->amount().currency());
    if (!route.ok()) co_return route.status();
    // Claim the review (exactly once): PENDING_REVIEW -> PENDING. From here a
    // crash is recovered like any PENDING recharge, through Lookup.
    next.set_status(RECHARGE_STATUS_PENDING);
    absl::StatusOr<bool> claimed = co_await ledger_.Transition(next, ResponseOf(next), RECHARGE_STATUS_PENDING_REVIEW);
    if (!claimed.ok()) co_return claimed.status();
    if (!*claimed) co_return absl::FailedPreconditionError("recharge_id: the review was resolved meanwhile");
    ChargeRequest charge = ChargeRequestOf(*r, call.deadline - std::chrono::milliseconds(100));
    Router::Routed routed = co_await router_.Charge(**route, charge);
    Recharge done = next;
    ApplyChargeOutcome(routed.outcome, routed.adapter, &done);
    if (done.status() != RECHARGE_STATUS_PENDING) {
      absl::StatusOr<bool> moved = co_await ledger_.Transition(done, ResponseOf(done), RECHARGE_STATUS_PENDING);
      if (!moved.ok()) co_return moved.status();
    }
    *response = std::move(done);
    co_return absl::OkStatus();
  });
}

asio::awaitable<absl::Status> FraudAdminService::ResolveHeld(
    Recharge held, Recharge next, bool approve, std::chrono::steady_clock::time_point deadline,
    Recharge* response) {
  PaymentAdapter* adapter = router_.Find(held.payment().adapter());
  if (adapter == nullptr) {
    co_return absl::FailedPreconditionError(
        StrCat("recharge_id: the adapter instance \"", held.payment().adapter(),
               "\" that holds its authorisation is not configured"));
  }
  const auto op_deadline = deadline - std::chrono::milliseconds(100);
  if (!approve) {
    // Void first: the review stays open (and retryable) until the provider
    // confirms the buyer's money is released. Every void of a recharge
    // shares one provider key, so a retry or the reconciler's expiry
    // replays it rather than failing.
    ChargeOutcome voided = co_await adapter->Void(OperationOn(held, "void", op_deadline));
    if (voided.result == ChargeResult::kDeclined) {
      co_return absl::FailedPreconditionError(StrCat(
          "recharge_id: the provider refused to void the hold (", voided.decline_code, ")"));
    }
    if (voided.result != ChargeResult::kApproved) {
      co_return absl::UnavailableError(StrCat("the provider did not confirm the void (",
                                              voided.message,
                                              "); the review is still open, retry"));
    }
    next.set_status(RECHARGE_STATUS_DECLINED);
    next.mutable_payment()->set_decline_code("review_rejected");
    next.mutable_payment()->set_message("rejected by fraud review; the hold was voided");
    absl::StatusOr<bool> moved = co_await ledger_.Transition(next, ResponseOf(next), RECHARGE_STATUS_PENDING_REVIEW);
    if (!moved.ok()) co_return moved.status();
    if (!*moved) co_return absl::FailedPreconditionError("recharge_id: the review was resolved meanwhile");
    *response = std::move(next);
    co_return absl::OkStatus();
  }
  // Claim the approval (exactly once): PENDING_REVIEW -> PENDING; then
  // capture under the recharge's one capture key. An unknown answer leaves
  // it PENDING for the reconciler, which captures again (the same key).
  next.set_status(RECHARGE_STATUS_PENDING);
  next.mutable_payment()->set_message("approved by fraud review; capturing the hold");
  absl::StatusOr<bool> claimed = co_await ledger_.Transition(next, ResponseOf(next), RECHARGE_STATUS_PENDING_REVIEW);
  if (!claimed.ok()) co_return claimed.status();
  if (!*claimed) co_return absl::FailedPreconditionError("recharge_id: the review was resolved meanwhile");
  ChargeOutcome captured = co_await adapter->Capture(OperationOn(held, "capture", op_deadline));
  Recharge done = next;
  if (ApplyCaptureOutcome(captured, &done)) {
    absl::StatusOr<bool> moved = co_await ledger_.Transition(done, ResponseOf(done), RECHARGE_STATUS_PENDING);
    if (!moved.ok()) co_return moved.status();
    if (!*moved) {
      // The reconciler settled it meanwhile (the same capture): answer that.
      absl::StatusOr<Recharge> now = co_await ledger_.GetRecharge(done.recharge_id());
      if (!now.ok()) co_return now.status();
      done = *std::move(now);
    }
  }
  *response = std::move(done);
  co_return absl::OkStatus();
}

grpc::ServerUnaryReactor* FraudAdminService::ReportChargeback(grpc::CallbackServerContext* ctx,
                                                              const ReportChargebackRequest* request,
                                                              ReportChargebackResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ReportChargeback", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (engine_ == nullptr) co_return NoRules();
    if (absl::Status s = ValidateId("recharge_id", request->recharge_id(), true); !s.ok()) co_return s;
    if (absl::Status s = ValidateNote("reason", request->reason()); !s.ok()) co_return s;
    absl::StatusOr<Recharge> r = co_await ledger_.GetRecharge(request->recharge_id());
    if (!r.ok()) co_return r.status();
    // CHARGED_BACK: a repeated report (a retried call, a notice delivered
    // twice), answered again but counted once.
    if (r->status() != RECHARGE_STATUS_APPROVED && r->status() != RECHARGE_STATUS_CHARGED_BACK) {
      co_return absl::FailedPreconditionError(StrCat("recharge_id: only an APPROVED recharge can be charged back (status ",
                                                     RechargeStatus_Name(r->status()), ")"));
    }
    absl::StatusOr<std::string> inputs = co_await ledger_.GetDecisionInputs(request->recharge_id());
    if (!inputs.ok()) co_return inputs.status();
    std::optional<FraudInput> input = FraudInput::FromJson(*inputs);
    if (!input) co_return absl::DataLossError("ledger: the decision inputs do not parse");
    // Move the recharge first (APPROVED -> CHARGED_BACK, with its event):
    // only the report that moves it counts the chargeback, so a retried or
    // duplicated report never counts twice.
    bool first_report = false;
    if (r->status() == RECHARGE_STATUS_APPROVED) {
      Recharge next = *r;
      next.set_charged_back(true);
      next.set_status(RECHARGE_STATUS_CHARGED_BACK);
      absl::StatusOr<bool> moved =
          co_await ledger_.Transition(next, ResponseOf(next), RECHARGE_STATUS_APPROVED);
      if (!moved.ok()) co_return moved.status();
      first_report = *moved;
    }
    absl::StatusOr<RuleEngine::ChargebackResult> result =
        co_await engine_->RecordChargeback(*input, first_report);
    if (!result.ok()) co_return absl::UnavailableError(StrCat("redis: ", result.status().message()));
    response->set_seller_flagged(result->seller_flagged);
    for (const std::string& b : result->blocked) response->add_blocked(b);
    co_return absl::OkStatus();
  });
}


grpc::ServerUnaryReactor* FraudAdminService::ListAuditEvents(grpc::CallbackServerContext* ctx,
                                                             const ListAuditEventsRequest* request,
                                                             ListAuditEventsResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.FraudAdmin/ListAuditEvents", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (request->page_size() < 0) co_return absl::InvalidArgumentError("page_size: must not be negative");
    const int page_size = request->page_size() == 0 ? kDefaultPageSize
                                                    : std::min(request->page_size(), kMaxPageSize);
    std::optional<int64_t> before;
    if (!request->page_token().empty()) {
      absl::StatusOr<RechargeCursor> c = DecodePageToken(request->page_token(), kAuditScope);
      if (!c.ok()) co_return c.status();
      before = c->seq;
    }
    absl::StatusOr<AuditPage> page = co_await ledger_.ListAudit(page_size, before);
    if (!page.ok()) co_return page.status();
    for (AuditEvent& e : page->events) *response->add_events() = std::move(e);
    if (page->next_before_seq) {
      response->set_next_page_token(
          EncodePageToken(RechargeCursor{*page->next_before_seq, *page->next_before_seq}, kAuditScope));
    }
    co_return absl::OkStatus();
  });
}

}  // namespace recharge
