// Reconciler: resolves recharges whose outcome the ledger does not know —
// keys left `started` by a process that died between claim and record, and
// PENDING recharges whose provider call timed out — by asking the provider
// with the adapter's Lookup(idempotency key). It never charges anew; it
// finishes what a decision started: the capture of a card hold whose review
// was approved (the answer lost), and the void of a hold whose review was
// not resolved within review.hold_expiry (DECLINED review_expired), and the
// end of a buyer's action (REQUIRES_ACTION) that was never notified: past
// its expires_at it asks the provider, and cancels the payment if it is
// still waiting (FAILED action_expired).
//
// A key is only resolved once it is older than `settle_after` (longer than
// any adapter timeout), so a request still travelling to the provider cannot
// land after the reconciler decided "no charge".
//
// Thread-safety: RunOnce may be called from any thread; Run loops until the
// executor stops.
#pragma once

#include <chrono>
#include <optional>

#include "adapters/router.h"
#include "fraud/fraud_filter.h"
#include "ledger/ledger_store.h"

namespace recharge {

class Reconciler {
 public:
  // `hold_expiry`: how long a card authorisation hold waits for its review
  // (review.hold_expiry); then RunOnce voids it and declines the recharge
  // (review_expired).
  // A late decline it records (a failed challenge) is counted by `fraud`.
  Reconciler(LedgerStore& ledger, const Router& router, FraudFilter& fraud,
             std::chrono::milliseconds settle_after, std::chrono::milliseconds hold_expiry);

  struct Report {
    int examined = 0;
    int resolved = 0;
  };
  asio::awaitable<Report> RunOnce();
  // Settles one recharge now if the provider can tell (a retry of a PENDING
  // key calls this, with the retry's deadline). Returns the response now
  // stored, or nullopt if it stays unsettled.
  asio::awaitable<std::optional<RecordRechargeResponse>> Resolve(
      const UnresolvedRecharge& u, std::chrono::steady_clock::time_point deadline);
  // Settles a refund whose outcome is unknown with the adapter's
  // LookupRefund: records it (REFUNDED) if the provider made it, forgets
  // the claim if it refused or (once older than settle_after) has none.
  // Returns the refunded recharge, or nullopt if it is not refunded (yet).
  asio::awaitable<std::optional<Recharge>> SettleRefund(
      StartedRefund started, std::chrono::steady_clock::time_point deadline);
  // RunOnce now, then every `interval`, until the executor is stopped.
  asio::awaitable<void> Run(std::chrono::milliseconds interval);

 private:
  // Voids the holds of reviews past hold_expires_at (DECLINED review_expired).
  asio::awaitable<void> ExpireHolds(Report* report);
  asio::awaitable<bool> ExpireHold(Recharge held);
  // A REQUIRES_ACTION recharge: settled by the provider's lookup, or past
  // its expires_at cancelled and FAILED action_expired.
  asio::awaitable<std::optional<RecordRechargeResponse>> SettleWaiting(
      const Recharge& waiting, std::chrono::steady_clock::time_point deadline);

  LedgerStore& ledger_;
  const Router& router_;
  FraudFilter& fraud_;
  std::chrono::milliseconds settle_after_;
  std::chrono::milliseconds hold_expiry_;
};

}  // namespace recharge
