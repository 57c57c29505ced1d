#include "gateway/webhook_intake.h"

#include <nlohmann/json.hpp>

#include "gateway/provider_actions.h"
#include "gateway/recharge_flow.h"
#include "io/gateway_metrics.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

// What a notification may take: a ledger read, a capture, a ledger write.
constexpr std::chrono::seconds kHandleTimeout(10);
constexpr std::string_view kPrefix = "/webhooks/";

HttpAnswer Answer(int status, nlohmann::json body) {
  HttpAnswer a;
  a.status = status;
  a.body = body.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  return a;
}

// One log line about a notification (never its body or signature).
void Note(void (*log)(std::string_view, LogFields), std::string_view event,
          const std::string& instance, const ProviderNotification& n,
          const std::string& recharge_id, std::string detail = {}) {
  log(event, {{"instance", instance},
              {"event_id", n.event_id},
              {"event_type", n.event_type},
              {"recharge_id", recharge_id},
              {"detail", std::move(detail)}});
}

// A refusal; its label follows from the status.
WebhookIntake::Handled Error(int status, std::string_view message) {
  const std::string_view result = status == 401  ? "unauthenticated"
                                  : status >= 500 ? "retry_later"
                                                  : "refused";
  return {Answer(status, {{"error", message}}), result};
}

// An acknowledgement: `result` is applied, duplicate or ignored.
WebhookIntake::Handled Result(std::string_view result, std::string_view reason = {}) {
  nlohmann::json body = {{"result", result}};
  if (!reason.empty()) body["reason"] = reason;
  return {Answer(200, std::move(body)), result};
}

}  // namespace

asio::awaitable<HttpAnswer> WebhookIntake::Handle(const HttpRequestView& request) {
  Handled handled = co_await HandleOne(request);
  // Only configured instances are labels (the cap bounds the rest).
  const std::string_view path = request.path;
  std::string_view instance = path.starts_with(kPrefix) ? path.substr(kPrefix.size()) : "";
  if (instance.empty() || router_.Find(std::string(instance)) == nullptr) instance = "unknown";
  Metrics().webhooks.With({instance, handled.result}).Inc();
  co_return std::move(handled.answer);
}

asio::awaitable<WebhookIntake::Handled> WebhookIntake::HandleOne(const HttpRequestView& request) {
  if (!request.path.starts_with(kPrefix)) co_return Error(404, "no such route");
  const std::string instance(request.path.substr(kPrefix.size()));
  PaymentAdapter* adapter = instance.empty() || instance.find('/') != std::string::npos
                                ? nullptr
                                : router_.Find(instance);
  if (adapter == nullptr) co_return Error(404, "no such adapter instance");
  if (request.method != "POST") co_return Error(405, "notifications are POSTed");

  InboundNotification inbound{request.body, request.header, std::chrono::system_clock::now()};
  absl::StatusOr<ProviderNotification> read = adapter->ReadNotification(inbound);
  if (!read.ok()) {
    const int status = absl::IsUnauthenticated(read.status()) ? 401
                       : absl::IsNotFound(read.status())      ? 404
                                                              : 400;
    LogWarn("webhook_refused", {{"instance", instance},
                                {"status", std::to_string(status)},
                                {"error", std::string(read.status().message())}});
    co_return Error(status, std::string(read.status().message()));
  }
  const ProviderNotification& n = *read;

  // (Not a conditional expression: GCC 12 miscompiles co_await inside one.)
  absl::StatusOr<Recharge> found;
  if (!n.recharge_id.empty()) {
    found = co_await ledger_.GetRecharge(n.recharge_id);
  } else {
    found = co_await ledger_.GetRechargeByKey(n.idempotency_key);
  }
  if (absl::IsNotFound(found.status())) {
    Note(LogWarn, "webhook_unknown_recharge", instance, n, n.recharge_id, n.idempotency_key.empty() ? "" : "by idempotency key");
    co_return Result("ignored", "no recharge for this payment");
  }
  if (!found.ok()) {
    // The ledger, or a recharge whose outcome is not recorded yet: the
    // provider sends it again.
    Note(LogWarn, "webhook_not_yet", instance, n, n.recharge_id,
         std::string(found.status().message()));
    co_return Error(503, "the recharge cannot be read yet; send again later");
  }
  const Recharge& waiting = *found;
  const std::string& id = waiting.recharge_id();
  if (waiting.payment().adapter() != instance ||
      (!waiting.payment().provider_reference().empty() &&
       waiting.payment().provider_reference() != n.outcome.provider_reference)) {
    Note(LogWarn, "webhook_other_payment", instance, n, id, waiting.payment().adapter());
    co_return Result("ignored", "the recharge was paid through another instance or payment");
  }
  const NotificationRef ref{instance, n.event_id};
  absl::StatusOr<bool> seen = co_await ledger_.NotificationSeen(ref);
  if (seen.ok() && *seen) {
    Note(LogInfo, "webhook_duplicate", instance, n, id);
    co_return Result("duplicate");
  }
  if (waiting.status() != recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION) {
    Note(LogInfo, "webhook_recharge_final", instance, n, id,
         recharge::v1::RechargeStatus_Name(waiting.status()));
    co_return Result("ignored", StrCat("the recharge is ",
                                       recharge::v1::RechargeStatus_Name(waiting.status())));
  }

  const auto deadline = std::chrono::steady_clock::now() + kHandleTimeout;
  std::optional<Recharge> next =
      co_await SettleAction(waiting, n.outcome, *adapter, hold_expiry_, deadline);
  if (!next) {
    if (n.outcome.result == ChargeResult::kRequiresAction) {
      co_return Result("ignored", "the payment still waits for the buyer");
    }
    Note(LogWarn, "webhook_not_settled", instance, n, id);
    co_return Error(503, "the outcome could not be made final yet; send again later");
  }
  absl::StatusOr<NotificationApplied> applied = co_await ledger_.TransitionOnNotification(
      ref, *next, ResponseOf(*next), recharge::v1::RECHARGE_STATUS_REQUIRES_ACTION);
  if (!applied.ok()) {
    Note(LogError, "webhook_ledger_failed", instance, n, id,
         std::string(applied.status().message()));
    co_return Error(503, "the change could not be recorded; send again later");
  }
  switch (*applied) {
    case NotificationApplied::kApplied:
      Note(LogInfo, "webhook_applied", instance, n, id,
           recharge::v1::RechargeStatus_Name(next->status()));
      if (next->status() == recharge::v1::RECHARGE_STATUS_DECLINED) {
        co_await CountLateDecline(ledger_, fraud_, id);
      }
      co_return Result("applied");
    case NotificationApplied::kReplay:
      Note(LogInfo, "webhook_duplicate", instance, n, id);
      co_return Result("duplicate");
    case NotificationApplied::kNoChange:
      break;
  }
  Note(LogInfo, "webhook_recharge_moved", instance, n, id);
  co_return Result("ignored", "the recharge changed meanwhile");
}

}  // namespace recharge
