#include "gateway/reconciler.h"

#include <boost/asio/redirect_error.hpp>
#include <google/protobuf/util/time_util.h>

#include "gateway/provider_actions.h"
#include "gateway/recharge_flow.h"
#include "io/gateway_metrics.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

using google::protobuf::util::TimeUtil;

// How long the background rounds give one recharge's lookups.
constexpr std::chrono::seconds kLookupTimeout(10);

std::string MethodOf(const Recharge& r, std::string* provider) {
  const std::string& label = r.payment_method();
  if (label.rfind("ewallet:", 0) == 0) {
    *provider = label.substr(8);
    return "ewallet";
  }
  return label;
}

}  // namespace

Reconciler::Reconciler(LedgerStore& ledger, const Router& router, FraudFilter& fraud,
                       std::chrono::milliseconds settle_after, std::chrono::milliseconds hold_expiry)
    : ledger_(ledger),
      router_(router),
      fraud_(fraud),
      settle_after_(settle_after),
      hold_expiry_(hold_expiry) {}

asio::awaitable<Reconciler::Report> Reconciler::RunOnce() {
  Report report;
  const auto cutoff = std::chrono::system_clock::now() - settle_after_;
  absl::StatusOr<std::vector<UnresolvedRecharge>> list = co_await ledger_.ListUnresolved(cutoff);
  if (!list.ok()) {
    LogWarn("reconcile_list_failed", {{"error", std::string(list.status().message())}});
    co_return report;
  }
  const auto now = std::chrono::system_clock::now();
  size_t backlog = list->size();
  for (const UnresolvedRecharge& u : *list) {
    // A buyer's action is settled by the provider's notification; only one
    // past its expiry is looked up here (then cancelled if still waiting).
    if (!u.started && u.recharge.status() == recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION &&
        !ActionPastExpiry(u.recharge, now)) {
      continue;
    }
    ++report.examined;
    const auto deadline = std::chrono::steady_clock::now() + kLookupTimeout;
    std::optional<RecordRechargeResponse> settled = co_await Resolve(u, deadline);
    if (settled) ++report.resolved;
  }
  co_await ExpireHolds(&report);
  absl::StatusOr<std::vector<StartedRefund>> refunds = co_await ledger_.ListStartedRefunds(cutoff);
  if (!refunds.ok()) {
    LogWarn("reconcile_refunds_failed", {{"error", std::string(refunds.status().message())}});
    co_return report;
  }
  backlog += refunds->size();
  Metrics().reconciler_backlog.With({}).Set(static_cast<double>(backlog));
  for (StartedRefund& started : *refunds) {
    ++report.examined;
    const auto deadline = std::chrono::steady_clock::now() + kLookupTimeout;
    if (co_await SettleRefund(std::move(started), deadline)) ++report.resolved;
  }
  co_return report;
}

asio::awaitable<std::optional<Recharge>> Reconciler::SettleRefund(
    StartedRefund started, std::chrono::steady_clock::time_point deadline) {
  absl::StatusOr<Recharge> r = co_await ledger_.GetRecharge(started.recharge_id);
  if (!r.ok()) co_return std::nullopt;
  PaymentAdapter* adapter = router_.Find(r->payment().adapter());
  if (adapter == nullptr) {
    LogWarn("refund_settle_no_adapter", {{"recharge_id", started.recharge_id},
                                         {"adapter", r->payment().adapter()}});
    co_return std::nullopt;
  }
  const PaymentOperation op = OperationOn(*r, "refund", deadline);
  ChargeOutcome found = co_await adapter->LookupRefund(op.idempotency_key, deadline);
  const bool old_enough = std::chrono::system_clock::now() - started.started_at >= settle_after_;
  if (found.result == ChargeResult::kApproved) {
    Recharge refunded = RefundedRecharge(*std::move(r), started.info, found.provider_reference);
    absl::StatusOr<bool> stored = co_await ledger_.CompleteRefund(started.idempotency_key, refunded);
    if (!stored.ok() || !*stored) co_return std::nullopt;
    LogInfo("refund_reconciled", {{"recharge_id", started.recharge_id}, {"status", "REFUNDED"}});
    co_return refunded;
  }
  if (found.result == ChargeResult::kDeclined ||
      (found.result == ChargeResult::kNotFound && old_enough)) {
    // No refund was made: forget the claim (a new attempt may be made).
    if ((co_await ledger_.ReleaseRefund(started.idempotency_key)).ok()) {
      LogInfo("refund_reconciled", {{"recharge_id", started.recharge_id},
                                    {"status", "not refunded"},
                                    {"decline_code", found.decline_code}});
    }
  }
  co_return std::nullopt;
}

asio::awaitable<void> Reconciler::ExpireHolds(Report* report) {
  const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
  std::optional<RechargeCursor> cursor;
  size_t queued = 0;
  do {
    absl::StatusOr<RechargePage> page =
        co_await ledger_.ListByStatus(recharge::v1::RECHARGE_STATUS_PENDING_REVIEW, 200, cursor);
    if (!page.ok()) {
      LogWarn("reconcile_reviews_failed", {{"error", std::string(page.status().message())}});
      co_return;
    }
    queued += page->recharges.size();
    for (const Recharge& r : page->recharges) {
      if (!r.has_hold_expires_at() || TimeUtil::TimestampToMicroseconds(r.hold_expires_at()) > now_us) {
        continue;
      }
      ++report->examined;
      if (co_await ExpireHold(r)) ++report->resolved;
    }
    cursor = page->next_cursor;
  } while (cursor);
  Metrics().review_queue.With({}).Set(static_cast<double>(queued));
}

asio::awaitable<bool> Reconciler::ExpireHold(Recharge held) {
  PaymentAdapter* adapter = router_.Find(held.payment().adapter());
  if (adapter == nullptr) {
    LogWarn("hold_expiry_no_adapter", {{"recharge_id", held.recharge_id()},
                                       {"adapter", held.payment().adapter()}});
    co_return false;
  }
  // The same void key as a rejection's: a void that landed is replayed.
  ChargeOutcome voided = co_await adapter->Void(
      OperationOn(held, "void", std::chrono::steady_clock::now() + kLookupTimeout));
  if (voided.result != ChargeResult::kApproved) {
    LogWarn("hold_void_failed", {{"recharge_id", held.recharge_id()},
                                 {"result", std::string(ChargeResultName(voided.result))},
                                 {"decline_code", voided.decline_code},
                                 {"message", voided.message}});
    co_return false;
  }
  Recharge next = held;
  next.set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
  next.set_reviewed_by("reconciler");
  *next.mutable_reviewed_at() = TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch()).count());
  next.mutable_payment()->set_decline_code("review_expired");
  next.mutable_payment()->set_message(
      "the review was not resolved before the hold expired; the hold was voided");
  absl::StatusOr<bool> moved = co_await ledger_.Transition(
      next, ResponseOf(next), recharge::v1::RECHARGE_STATUS_PENDING_REVIEW);
  if (!moved.ok() || !*moved) co_return false;
  LogInfo("hold_expired", {{"recharge_id", held.recharge_id()}});
  co_return true;
}

asio::awaitable<void> Reconciler::Run(std::chrono::milliseconds interval) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    Report r = co_await RunOnce();
    if (r.examined > 0) {
      LogInfo("reconcile", {{"examined", std::to_string(r.examined)},
                            {"resolved", std::to_string(r.resolved)}});
    }
    timer.expires_after(interval);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

asio::awaitable<std::optional<RecordRechargeResponse>> Reconciler::SettleWaiting(
    const Recharge& waiting, std::chrono::steady_clock::time_point deadline) {
  PaymentAdapter* adapter = router_.Find(waiting.payment().adapter());
  if (adapter == nullptr) {
    LogWarn("action_settle_no_adapter", {{"recharge_id", waiting.recharge_id()},
                                         {"adapter", waiting.payment().adapter()}});
    co_return std::nullopt;
  }
  ChargeOutcome found = co_await adapter->Lookup(waiting.idempotency_key(), deadline);
  std::optional<Recharge> next =
      co_await SettleAction(waiting, found, *adapter, hold_expiry_, deadline);
  if (!next && ActionPastExpiry(waiting, std::chrono::system_clock::now())) {
    if (found.result == ChargeResult::kNotFound) {
      next = ActionExpired(waiting);  // nothing to cancel
    } else if (found.result == ChargeResult::kRequiresAction) {
      // Still waiting for the buyer: cancel it (a 3-D Secure charge is
      // voided, a wallet payment cancelled), under the recharge's one void key.
      ChargeOutcome cancelled = co_await adapter->Void(OperationOn(waiting, "void", deadline));
      if (cancelled.result == ChargeResult::kApproved) {
        next = ActionExpired(waiting);
      } else {
        // Completed meanwhile (kDeclined: the next round's lookup settles
        // it), or the provider could not be asked: try again later.
        LogInfo("action_cancel_refused", {{"recharge_id", waiting.recharge_id()},
                                          {"result", std::string(ChargeResultName(cancelled.result))},
                                          {"decline_code", cancelled.decline_code}});
      }
    }
  }
  if (!next) co_return std::nullopt;
  RecordRechargeResponse response = ResponseOf(*next);
  absl::StatusOr<bool> moved =
      co_await ledger_.Transition(*next, response, recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION);
  if (!moved.ok() || !*moved) co_return std::nullopt;
  LogInfo("reconciled", {{"recharge_id", next->recharge_id()},
                         {"status", recharge::v1::RechargeStatus_Name(next->status())},
                         {"was", "requires_action"}});
  if (next->status() == recharge::v1::RECHARGE_STATUS_DECLINED) {
    co_await CountLateDecline(ledger_, fraud_, next->recharge_id());
  }
  co_return response;
}

asio::awaitable<std::optional<RecordRechargeResponse>> Reconciler::Resolve(
    const UnresolvedRecharge& u, std::chrono::steady_clock::time_point deadline) {
  if (!u.started && u.recharge.status() == recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION) {
    co_return co_await SettleWaiting(u.recharge, deadline);
  }
  std::string provider;
  const std::string method = MethodOf(u.recharge, &provider);
  absl::StatusOr<const Router::Route*> route =
      router_.Select(method, provider, u.recharge.region(), u.recharge.amount().currency());
  if (!route.ok()) {
    LogWarn("reconcile_no_route", {{"recharge_id", u.recharge.recharge_id()}});
    co_return std::nullopt;
  }
  // A PENDING recharge is only declared FAILED once it is old enough that
  // no request can still be on its way to the provider.
  // A review approved later took its payment then: age from the approval.
  const int64_t age_us =
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch()).count() -
      TimeUtil::TimestampToMicroseconds(u.recharge.has_reviewed_at() ? u.recharge.reviewed_at()
                                                                     : u.recharge.created_at());
  const bool settled = age_us >= std::chrono::duration_cast<std::chrono::microseconds>(settle_after_).count();

  // Ask the instance that handled the charge first, then the route's others
  // (a crash can leave a key before any instance was recorded). "No charge"
  // needs every instance to say so; one that cannot be asked leaves the
  // recharge unsettled until the next round.
  std::vector<PaymentAdapter*> order;
  if (PaymentAdapter* used = router_.Find(u.recharge.payment().adapter())) order.push_back(used);
  for (Router::Instance* instance : (*route)->instances) {
    if (order.empty() || instance->adapter.get() != order.front()) {
      order.push_back(instance->adapter.get());
    }
  }
  ChargeOutcome found;
  found.result = ChargeResult::kNotFound;
  PaymentAdapter* where = nullptr;
  bool incomplete = false;
  for (PaymentAdapter* adapter : order) {
    ChargeOutcome o = co_await adapter->Lookup(u.idempotency_key, deadline);
    if (o.result == ChargeResult::kNotFound) continue;
    if (o.result == ChargeResult::kRequiresAction) {
      // The caller never saw the action (the answer timed out, or the
      // process died before recording it): nobody will complete it. Cancel
      // it; the recharge FAILS (action_lost) below.
      Recharge lost = u.recharge;
      lost.mutable_payment()->set_provider_reference(o.provider_reference);
      ChargeOutcome cancelled = co_await adapter->Void(OperationOn(lost, "void", deadline));
      if (cancelled.result != ChargeResult::kApproved) {
        incomplete = true;
        continue;
      }
      found.result = ChargeResult::kFailed;
      found.provider_reference = o.provider_reference;
      found.decline_code = "action_lost";
      where = adapter;
      break;
    }
    if (o.result != ChargeResult::kApproved && o.result != ChargeResult::kDeclined) {
      incomplete = true;
      continue;
    }
    found = o;
    where = adapter;
    break;
  }
  if (found.result == ChargeResult::kNotFound && incomplete) co_return std::nullopt;
  if (found.result == ChargeResult::kNotFound && !settled) co_return std::nullopt;

  Recharge r = u.recharge;
  recharge::v1::PaymentResult* payment = r.mutable_payment();
  if (where != nullptr) payment->set_adapter(std::string(where->name()));
  payment->set_provider_reference(found.provider_reference);
  payment->set_decline_code(found.decline_code);
  const bool approved_on_review = !u.started && r.has_reviewed_at();
  if (found.result == ChargeResult::kApproved && !found.captured && approved_on_review) {
    // A review approved, its capture's answer lost: capture again, under
    // the recharge's one capture key (a capture that landed is replayed).
    ChargeOutcome captured = co_await where->Capture(OperationOn(r, "capture", deadline));
    if (!ApplyCaptureOutcome(captured, &r)) co_return std::nullopt;
  } else if (found.result == ChargeResult::kApproved && !found.captured) {
    // An authorisation hold for a review whose answer was lost: released,
    // and the recharge FAILED (the buyer pays again). Putting it in review
    // now would give it a second SETTLED event (PENDING -> PENDING_REVIEW,
    // then the approval's), and app servers apply one per type.
    ChargeOutcome voided = co_await where->Void(OperationOn(r, "void", deadline));
    if (voided.result != ChargeResult::kApproved) co_return std::nullopt;
    r.set_status(recharge::v1::RECHARGE_STATUS_FAILED);
    payment->set_decline_code("authorisation_lost");
    payment->set_message("reconciled: the authorisation's answer was lost; its hold was voided");
  } else if (found.result == ChargeResult::kApproved) {
    r.set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
    payment->set_message("reconciled: the provider holds the charge");
  } else if (found.result == ChargeResult::kDeclined) {
    r.set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
    payment->set_message("reconciled: the provider declined the charge");
  } else if (found.result == ChargeResult::kFailed) {
    r.set_status(recharge::v1::RECHARGE_STATUS_FAILED);
    payment->set_message(
        "reconciled: the buyer's action was never shown (its answer was lost); it was cancelled");
  } else {
    r.set_status(recharge::v1::RECHARGE_STATUS_FAILED);
    payment->set_message("reconciled: the provider holds no charge under this key");
  }
  if (!r.has_fraud() && u.started) {
    // The process died before the decision was recorded; say so.
    r.mutable_fraud()->set_rules_version("unknown (recovered)");
  }
  RecordRechargeResponse response = ResponseOf(r);

  if (u.started) {
    Completion done;
    done.idempotency_key = u.idempotency_key;
    done.recharge = r;
    done.response = response;
    absl::StatusOr<RecordRechargeResponse> stored = co_await ledger_.Complete(std::move(done));
    if (!stored.ok()) co_return std::nullopt;
    response = *std::move(stored);
  } else {
    absl::StatusOr<bool> ok =
        co_await ledger_.Transition(r, response, recharge::v1::RECHARGE_STATUS_PENDING);
    if (!ok.ok() || !*ok) co_return std::nullopt;
  }
  LogInfo("reconciled", {{"recharge_id", r.recharge_id()},
                         {"status", recharge::v1::RechargeStatus_Name(r.status())},
                         {"was", u.started ? "started" : "pending"}});
  co_return response;
}

}  // namespace recharge
