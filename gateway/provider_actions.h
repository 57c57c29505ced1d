// Recharges waiting for the buyer (REQUIRES_ACTION: a 3-D Secure challenge,
// a wallet approval) and how they end. Two callers learn what the provider
// says about such a payment: the webhook intake (a signed notification) and
// the reconciler (a Lookup, and cancelling an action past its expires_at).
// Both turn it into the recharge's next state here, so they cannot disagree.
//
//   the provider says                 the recharge becomes
//   charged (captured)                APPROVED (coins credited)
//   authenticated, held (card)        the hold captured under
//                                     "<recharge_id>:capture" (once, whoever
//                                     asks) -> APPROVED; or, if the fraud
//                                     rules sent it to review, PENDING_REVIEW
//                                     on hold (captured on approval)
//   declined / authentication failed  DECLINED with the provider's code
//   cancelled (buyer or expiry)       FAILED with the provider's code
//   still waiting, or unknown         unchanged (nullopt)
//
// Thread-safety: stateless functions; run on any executor.
#pragma once

#include <chrono>
#include <optional>

#include "adapters/payment_adapter.h"
#include "fraud/fraud_filter.h"
#include "io/asio.h"
#include "ledger/ledger_store.h"

namespace recharge {

// The next state of `waiting` (REQUIRES_ACTION) given the provider's
// `outcome` for its payment at `adapter`, or nullopt while that is not known
// (still waiting; a capture whose answer was lost: asked again later under
// the same key). `hold_expiry`: review.hold_expiry, for a held review.
asio::awaitable<std::optional<Recharge>> SettleAction(
    const Recharge& waiting, const ChargeOutcome& outcome, PaymentAdapter& adapter,
    std::chrono::milliseconds hold_expiry, std::chrono::steady_clock::time_point deadline);

// `waiting` after its action expired and its payment was cancelled:
// FAILED action_expired.
Recharge ActionExpired(Recharge waiting);

// Counts a decline the provider gave later (a failed 3-D Secure challenge)
// against the fraud counters declared `on: decline`, as RecordRecharge does
// for a decline it answers at once, from the inputs recorded with the
// recharge's decision. Nothing when they cannot be read.
asio::awaitable<void> CountLateDecline(LedgerStore& ledger, FraudFilter& fraud,
                                       std::string recharge_id);

// True once `r`'s next action is past its expires_at.
bool ActionPastExpiry(const Recharge& r, std::chrono::system_clock::time_point now);

}  // namespace recharge
