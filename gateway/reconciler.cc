#include "gateway/reconciler.h"

#include <boost/asio/redirect_error.hpp>
#include <google/protobuf/util/time_util.h>

#include "io/strings.h"
#include "io/log.h"

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

Reconciler::Reconciler(LedgerStore& ledger, const Router& router,
                       std::chrono::milliseconds settle_after)
    : ledger_(ledger), router_(router), settle_after_(settle_after) {}

asio::awaitable<Reconciler::Report> Reconciler::RunOnce() {
  Report report;
  const auto cutoff = std::chrono::system_clock::now() - settle_after_;
  absl::StatusOr<std::vector<UnresolvedRecharge>> list = co_await ledger_.ListUnresolved(cutoff);
  if (!list.ok()) {
    LogWarn("reconcile_list_failed", {{"error", std::string(list.status().message())}});
    co_return report;
  }
  for (const UnresolvedRecharge& u : *list) {
    ++report.examined;
    const auto deadline = std::chrono::steady_clock::now() + kLookupTimeout;
    std::optional<RecordRechargeResponse> settled = co_await Resolve(u, deadline);
    if (settled) ++report.resolved;
  }
  co_return report;
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

asio::awaitable<std::optional<RecordRechargeResponse>> Reconciler::Resolve(
    const UnresolvedRecharge& u, std::chrono::steady_clock::time_point deadline) {
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
  const int64_t age_us =
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch()).count() -
      TimeUtil::TimestampToMicroseconds(u.recharge.created_at());
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
  RecordRechargeResponse response;
  response.set_recharge_id(r.recharge_id());
  recharge::v1::PaymentResult* payment = r.mutable_payment();
  if (where != nullptr) payment->set_adapter(std::string(where->name()));
  payment->set_provider_reference(found.provider_reference);
  payment->set_decline_code(found.decline_code);
  if (found.result == ChargeResult::kApproved) {
    r.set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
    response.set_coins_credited(r.coins());
    payment->set_message("reconciled: the provider holds the charge");
  } else if (found.result == ChargeResult::kDeclined) {
    r.set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
    payment->set_message("reconciled: the provider declined the charge");
  } else {
    r.set_status(recharge::v1::RECHARGE_STATUS_FAILED);
    payment->set_message("reconciled: the provider holds no charge under this key");
  }
  if (!r.has_fraud() && u.started) {
    // The process died before the decision was recorded; say so.
    r.mutable_fraud()->set_rules_version("unknown (recovered)");
  }
  response.set_status(r.status());
  *response.mutable_fraud() = r.fraud();
  *response.mutable_payment() = r.payment();

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
