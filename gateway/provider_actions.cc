#include "gateway/provider_actions.h"

#include <google/protobuf/util/time_util.h>

#include "gateway/recharge_flow.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {

using google::protobuf::util::TimeUtil;

asio::awaitable<std::optional<Recharge>> SettleAction(const Recharge& waiting,
                                                      const ChargeOutcome& outcome,
                                                      PaymentAdapter& adapter,
                                                      std::chrono::milliseconds hold_expiry,
                                                      std::chrono::steady_clock::time_point deadline) {
  Recharge next = waiting;
  recharge::v1::PaymentResult* payment = next.mutable_payment();
  if (!outcome.provider_reference.empty()) payment->set_provider_reference(outcome.provider_reference);
  switch (outcome.result) {
    case ChargeResult::kApproved:
      if (outcome.captured) {
        next.set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
        payment->set_message("the buyer completed the action; the payment was taken");
        co_return next;
      }
      if (waiting.fraud().decision() == recharge::v1::FRAUD_ACTION_REVIEW) {
        // Authenticated and held: the review decides, as for any card hold.
        PlaceOnHold(hold_expiry, &next);
        co_return next;
      }
      {
        // Authenticated (a hold): capture it, once per recharge.
        ChargeOutcome captured = co_await adapter.Capture(OperationOn(next, "capture", deadline));
        if (captured.result == ChargeResult::kApproved) {
          next.set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
          payment->set_message("authenticated by the buyer and captured");
          co_return next;
        }
        if (captured.result == ChargeResult::kDeclined) {
          next.set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
          payment->set_decline_code(captured.decline_code);
          payment->set_message(StrCat("the provider refused the capture: ", captured.message));
          co_return next;
        }
        LogWarn("action_capture_unknown", {{"recharge_id", waiting.recharge_id()},
                                           {"result", std::string(ChargeResultName(captured.result))},
                                           {"message", captured.message}});
        co_return std::nullopt;
      }
    case ChargeResult::kDeclined:
      next.set_status(recharge::v1::RECHARGE_STATUS_DECLINED);
      payment->set_decline_code(outcome.decline_code);
      payment->set_message(outcome.message);
      co_return next;
    case ChargeResult::kFailed:
      // A cancelled payment: nothing was taken.
      if (outcome.decline_code.empty()) co_return std::nullopt;  // could not be asked
      next.set_status(recharge::v1::RECHARGE_STATUS_FAILED);
      payment->set_decline_code(outcome.decline_code);
      payment->set_message(outcome.message);
      co_return next;
    case ChargeResult::kRequiresAction:
    case ChargeResult::kUnknown:
    case ChargeResult::kNotFound:
      break;
  }
  co_return std::nullopt;
}

asio::awaitable<void> CountLateDecline(LedgerStore& ledger, FraudFilter& fraud,
                                       std::string recharge_id) {
  absl::StatusOr<std::string> inputs = co_await ledger.GetDecisionInputs(recharge_id);
  std::optional<FraudInput> input =
      inputs.ok() ? FraudInput::FromJson(*inputs) : std::optional<FraudInput>();
  if (!input) {
    LogWarn("late_decline_not_counted", {{"recharge_id", recharge_id}});
    co_return;
  }
  fraud.OnDeclined(*input, co_await asio::this_coro::executor);
}

Recharge ActionExpired(Recharge waiting) {
  waiting.set_status(recharge::v1::RECHARGE_STATUS_FAILED);
  waiting.mutable_payment()->set_decline_code("action_expired");
  waiting.mutable_payment()->set_message(
      "the buyer did not complete the action before it expired; the payment was cancelled");
  return waiting;
}

bool ActionPastExpiry(const Recharge& r, std::chrono::system_clock::time_point now) {
  if (!r.has_next_action() || !r.next_action().has_expires_at()) return true;
  return TimeUtil::TimestampToMicroseconds(r.next_action().expires_at()) <=
         std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
}

}  // namespace recharge
