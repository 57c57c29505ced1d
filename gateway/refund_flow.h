// RefundFlow: RefundRecharge (docs/lifecycle.md). Refunds an APPROVED
// recharge in full through the adapter instance that took its payment.
//
// Idempotent by the request's own key, as RecordRecharge: the key is claimed
// in the ledger before the provider is asked; the same key answers the same
// recharge again (`replayed`), another request under it is ALREADY_EXISTS.
// A recharge has one refund claim at a time and is refunded once; every
// attempt sends the provider the one key "<recharge_id>:refund", so the
// provider refunds at most once whatever is retried. Not APPROVED (never
// approved, refunded, charged back): FAILED_PRECONDITION. An ambiguous
// provider answer keeps the claim; the reconciler settles it with the
// provider's refund lookup, or a retry with the key does.
//
// Thread-safety: Refund may run concurrently from any thread.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"
#include "adapters/router.h"
#include "gateway/reconciler.h"
#include "ledger/ledger_store.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

class RefundFlow {
 public:
  // References must outlive the flow.
  RefundFlow(LedgerStore& ledger, const Router& router, Reconciler& reconciler);

  // `caller`: the authenticated caller's name, kept with the refund.
  asio::awaitable<absl::StatusOr<recharge::v1::Recharge>> Refund(
      const recharge::v1::RefundRechargeRequest& request, std::string caller,
      std::chrono::steady_clock::time_point deadline);

 private:
  LedgerStore& ledger_;
  const Router& router_;
  Reconciler& reconciler_;
};

}  // namespace recharge
