#include "ledger/lifecycle.h"

#include "io/strings.h"

namespace recharge {

using recharge::v1::RechargeEventType;
using recharge::v1::RechargeStatus;
namespace v1 = recharge::v1;

absl::StatusOr<RechargeEventType> EventOf(RechargeStatus from, RechargeStatus to) {
  switch (from) {
    case v1::RECHARGE_STATUS_UNSPECIFIED:
      if (to != v1::RECHARGE_STATUS_UNSPECIFIED && to != v1::RECHARGE_STATUS_REFUNDED &&
          to != v1::RECHARGE_STATUS_CHARGED_BACK) {
        return v1::RECHARGE_EVENT_DECIDED;
      }
      break;
    case v1::RECHARGE_STATUS_PENDING:
    case v1::RECHARGE_STATUS_REQUIRES_ACTION:
      if (to == v1::RECHARGE_STATUS_APPROVED || to == v1::RECHARGE_STATUS_DECLINED ||
          to == v1::RECHARGE_STATUS_FAILED) {
        return v1::RECHARGE_EVENT_SETTLED;
      }
      if (from == v1::RECHARGE_STATUS_REQUIRES_ACTION && to == v1::RECHARGE_STATUS_PENDING_REVIEW) {
        return v1::RECHARGE_EVENT_ACTION_COMPLETED;
      }
      break;
    case v1::RECHARGE_STATUS_PENDING_REVIEW:
      if (to == v1::RECHARGE_STATUS_APPROVED || to == v1::RECHARGE_STATUS_DECLINED ||
          to == v1::RECHARGE_STATUS_PENDING) {
        return v1::RECHARGE_EVENT_REVIEW_RESOLVED;
      }
      break;
    case v1::RECHARGE_STATUS_APPROVED:
      if (to == v1::RECHARGE_STATUS_REFUNDED) return v1::RECHARGE_EVENT_REFUNDED;
      if (to == v1::RECHARGE_STATUS_CHARGED_BACK) return v1::RECHARGE_EVENT_CHARGED_BACK;
      break;
    default:  // final
      break;
  }
  return absl::FailedPreconditionError(StrCat("a recharge cannot go from ",
                                              v1::RechargeStatus_Name(from), " to ",
                                              v1::RechargeStatus_Name(to)));
}

int64_t CoinsDelta(RechargeEventType type, const recharge::v1::Recharge& after) {
  switch (type) {
    case v1::RECHARGE_EVENT_DECIDED:
    case v1::RECHARGE_EVENT_SETTLED:
    case v1::RECHARGE_EVENT_REVIEW_RESOLVED:
      return after.status() == v1::RECHARGE_STATUS_APPROVED ? after.coins() : 0;
    case v1::RECHARGE_EVENT_REFUNDED:
    case v1::RECHARGE_EVENT_CHARGED_BACK:
      return -after.coins();
    default:
      return 0;
  }
}

bool IsFinal(RechargeStatus status) {
  return status == v1::RECHARGE_STATUS_DECLINED || status == v1::RECHARGE_STATUS_BLOCKED ||
         status == v1::RECHARGE_STATUS_FAILED || status == v1::RECHARGE_STATUS_REFUNDED ||
         status == v1::RECHARGE_STATUS_CHARGED_BACK;
}

}  // namespace recharge
