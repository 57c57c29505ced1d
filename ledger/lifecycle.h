// The recharge state machine (docs/lifecycle.md, DESIGN §8a). A recharge is
// born with its first answer and changes status only along these arrows,
// each emitting one event of the feed (WatchRecharges):
//
//   (new)          -> any first status               DECIDED
//   PENDING        -> APPROVED | DECLINED | FAILED   SETTLED
//   REQUIRES_ACTION-> APPROVED | DECLINED | FAILED   SETTLED (the buyer acted,
//                     or the action expired)
//   REQUIRES_ACTION-> PENDING_REVIEW                 ACTION_COMPLETED (a card the
//                     rules sent to review, authenticated and now held)
//   PENDING_REVIEW -> APPROVED | DECLINED            REVIEW_RESOLVED
//   PENDING_REVIEW -> PENDING                        REVIEW_RESOLVED (approved;
//                     the payment's outcome follows as SETTLED)
//   APPROVED       -> REFUNDED                       REFUNDED
//   APPROVED       -> CHARGED_BACK                   CHARGED_BACK
//
// DECLINED, BLOCKED, FAILED, REFUNDED and CHARGED_BACK are final. No
// recharge has two events of one type: an app server may apply events once
// per (recharge_id, type).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

// The event the change `from` -> `to` emits; `from` UNSPECIFIED is a new
// recharge's first answer. FAILED_PRECONDITION, naming both statuses, when
// the machine has no such arrow.
absl::StatusOr<recharge::v1::RechargeEventType> EventOf(recharge::v1::RechargeStatus from,
                                                        recharge::v1::RechargeStatus to);

// Coins an app server credits (> 0) or takes back (< 0) on `type`, which
// left the recharge as `after`.
int64_t CoinsDelta(recharge::v1::RechargeEventType type, const recharge::v1::Recharge& after);

// True for a status no arrow leaves.
bool IsFinal(recharge::v1::RechargeStatus status);

}  // namespace recharge
