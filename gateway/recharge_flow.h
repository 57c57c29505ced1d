// RechargeFlow: RecordRecharge from validated request to durable outcome
// (DESIGN §1): validate, price, claim the idempotency key, assess fraud,
// charge through the routed adapters with failover, record.
//
// Nothing is stored for a request that fails validation, and nothing is
// charged before the key is durably claimed. A valid request first waits for
// room among the recharges deciding (claiming and fraud; admission): one
// that gets none in time is refused before its key is claimed. A decline, a block or a review
// is an OK result with a status; errors mean a bad request or a failed system.
//
// Thread-safety: Record may run concurrently from any thread; the flow holds
// no mutable state of its own.
#pragma once

#include <chrono>

#include "absl/status/statusor.h"
#include "adapters/router.h"
#include "fraud/fraud_filter.h"
#include "gateway/catalogue.h"
#include "gateway/reconciler.h"
#include "io/async_semaphore.h"
#include "io/secret.h"
#include "ledger/ledger_store.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

class RechargeFlow {
 public:
  // All references must outlive the flow. `reconciler` settles a PENDING
  // recharge when its key is retried. `deciding` bounds the recharges
  // claiming their key and deciding fraud at once (configs/gateway.yaml,
  // limits). A card recharge sent to review is authorised and its hold
  // voided `hold_expiry` after creation if not resolved (review.hold_expiry).
  RechargeFlow(const Catalogue& catalogue, LedgerStore& ledger, const Router& router,
               FraudFilter& fraud, Reconciler& reconciler, Secret fingerprint_key,
               std::shared_ptr<AsyncSemaphore> deciding, std::chrono::milliseconds hold_expiry);

  // `deadline`: when the caller stops waiting; outgoing calls end before it.
  asio::awaitable<absl::StatusOr<recharge::v1::RecordRechargeResponse>> Record(
      const recharge::v1::RecordRechargeRequest& request,
      std::chrono::steady_clock::time_point deadline);

  // Hex HMAC-SHA256 of `value` under the fingerprint key.
  std::string Fingerprint(std::string_view value) const;

 private:
  const Catalogue& catalogue_;
  LedgerStore& ledger_;
  const Router& router_;
  FraudFilter& fraud_;
  Reconciler& reconciler_;
  Secret fingerprint_key_;
  const std::shared_ptr<AsyncSemaphore> deciding_;
  const std::chrono::milliseconds hold_expiry_;
};

// The fingerprint an idempotency key is bound to: a hash of the request's
// canonical fields, with the card represented by its HMAC fingerprint.
std::string RequestFingerprint(const recharge::v1::RecordRechargeRequest& request,
                               std::string_view card_fingerprint);

// A new recharge id, "rch_" and 24 random hex digits.
std::string NewRechargeId();

// Writes a charge's outcome into the recharge (status, payment, coins; the
// next action of one that requires the buyer's).
void ApplyChargeOutcome(const ChargeOutcome& outcome, const std::string& adapter,
                        Recharge* recharge);
recharge::v1::NextAction ToProto(const NextActionInfo& action);
// Makes an authorised (uncaptured) card recharge a review on hold:
// PENDING_REVIEW, hold_expires_at = created_at + `hold_expiry`.
void PlaceOnHold(std::chrono::milliseconds hold_expiry, Recharge* recharge);
// A later operation on the recharge's payment (`operation`: "capture",
// "void", "refund"), under the provider idempotency key
// "<recharge_id>:<operation>": one effect per recharge, whoever retries.
PaymentOperation OperationOn(const Recharge& recharge, std::string_view operation,
                             std::chrono::steady_clock::time_point deadline);
// Writes a capture's outcome into a recharge approved on review (PENDING):
// APPROVED when captured, DECLINED when the provider refused (the hold
// voided or lapsed). Returns false, changing nothing, when the outcome is
// not known (the capture is tried again under the same key).
bool ApplyCaptureOutcome(const ChargeOutcome& outcome, Recharge* recharge);
// `approved` refunded in full: status REFUNDED, refund = `info` with the
// provider's refund reference and the time now.
Recharge RefundedRecharge(Recharge approved, recharge::v1::RefundInfo info,
                          std::string provider_reference);
// The response that stands for a stored recharge (what a replay returns).
RecordRechargeResponse ResponseOf(const Recharge& recharge);
// The charge request that pays for a stored recharge (no card: a review
// approval pays with the PayPal order or wallet account kept with it).
ChargeRequest ChargeRequestOf(const Recharge& recharge,
                              std::chrono::steady_clock::time_point deadline);

}  // namespace recharge
