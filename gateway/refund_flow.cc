#include "gateway/refund_flow.h"

#include "gateway/call_gate.h"
#include "gateway/recharge_flow.h"
#include "gateway/validation.h"
#include "io/crypto.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

using recharge::v1::RefundRechargeRequest;

// Time kept back from the caller's deadline to record the outcome.
constexpr std::chrono::milliseconds kRecordMargin(100);
constexpr size_t kMaxReasonBytes = 255;

}  // namespace

RefundFlow::RefundFlow(LedgerStore& ledger, const Router& router, Reconciler& reconciler)
    : ledger_(ledger), router_(router), reconciler_(reconciler) {}

asio::awaitable<absl::StatusOr<Recharge>> RefundFlow::Refund(const RefundRechargeRequest& req,
                                                             std::string caller,
                                                             std::chrono::steady_clock::time_point deadline) {
  if (absl::Status s = ValidateId("recharge_id", req.recharge_id(), true); !s.ok()) co_return s;
  if (absl::Status s = ValidateIdempotencyKey(req.idempotency_key()); !s.ok()) co_return s;
  if (absl::Status s = ValidateNote("reason", req.reason()); !s.ok()) co_return s;
  // What the providers keep with a refund (PayPal's note_to_payer: 255).
  if (req.reason().size() > kMaxReasonBytes) {
    co_return absl::InvalidArgumentError(StrCat("reason: at most ", kMaxReasonBytes, " bytes"));
  }

  // The reason is kept (and fingerprinted) with card numbers masked.
  RefundClaim claim;
  claim.idempotency_key = req.idempotency_key();
  claim.recharge_id = req.recharge_id();
  claim.info.set_reason(RedactCardNumbers(req.reason()));
  claim.info.set_refunded_by(std::move(caller));
  claim.fingerprint = Sha256(StrCat(claim.recharge_id.size(), ":", claim.recharge_id, ";",
                                    claim.info.reason()));
  absl::StatusOr<RefundBegin> begun = co_await ledger_.BeginRefund(claim);
  if (!begun.ok()) {
    if (begun.status().code() == absl::StatusCode::kNotFound) co_return begun.status();
    co_return absl::UnavailableError(
        StrCat("ledger unavailable; nothing was refunded (", begun.status().message(), ")"));
  }
  Recharge& recharge = begun->recharge;
  switch (begun->kind) {
    case RefundBegin::Kind::kReplay:
      recharge.set_replayed(true);
      co_return std::move(recharge);
    case RefundBegin::Kind::kMismatch:
      co_return absl::AlreadyExistsError("idempotency_key: already used for a different request");
    case RefundBegin::Kind::kInFlight: {
      // Its outcome was unknown: ask the provider before answering.
      StartedRefund started{claim.idempotency_key, claim.recharge_id, claim.info,
                            std::chrono::system_clock::now()};
      std::optional<Recharge> settled =
          co_await reconciler_.SettleRefund(std::move(started), deadline - kRecordMargin);
      if (!settled) {
        co_return absl::AbortedError(
            "idempotency_key: the refund with this key is still in progress (its outcome is not "
            "known yet); retry later with the same key");
      }
      settled->set_replayed(true);
      co_return *std::move(settled);
    }
    case RefundBegin::Kind::kOtherRefund:
      if (begun->other_done) {
        co_return absl::FailedPreconditionError(
            "recharge_id: already refunded (under another idempotency_key)");
      }
      co_return absl::AbortedError(
          "recharge_id: a refund of this recharge is in progress under another idempotency_key");
    case RefundBegin::Kind::kNotRefundable:
      co_return absl::FailedPreconditionError(
          StrCat("recharge_id: only an APPROVED recharge can be refunded (status ",
                 recharge::v1::RechargeStatus_Name(recharge.status()), ")"));
    case RefundBegin::Kind::kClaimed:
      break;
  }

  PaymentAdapter* adapter = router_.Find(recharge.payment().adapter());
  if (adapter == nullptr) {
    (void)co_await ledger_.ReleaseRefund(claim.idempotency_key);
    co_return absl::FailedPreconditionError(
        StrCat("recharge_id: the adapter instance \"", recharge.payment().adapter(),
               "\" that took the payment is not configured; nothing was refunded"));
  }
  PaymentOperation op = OperationOn(recharge, "refund", deadline - kRecordMargin);
  op.reason = claim.info.reason();
  ChargeOutcome outcome = co_await adapter->Refund(op);
  switch (outcome.result) {
    case ChargeResult::kApproved: {
      Recharge refunded = RefundedRecharge(recharge, claim.info, outcome.provider_reference);
      absl::StatusOr<bool> stored = co_await ledger_.CompleteRefund(claim.idempotency_key, refunded);
      if (!stored.ok()) {
        // The claim stays: the reconciler finds the refund and records it.
        LogError("ledger_refund_failed", {{"recharge_id", recharge.recharge_id()},
                                          {"error", std::string(stored.status().message())}});
        co_return absl::UnavailableError(
            "refunded, but the refund could not be recorded yet; retry with the same idempotency_key");
      }
      if (!*stored) {
        LogError("refund_after_change", {{"recharge_id", recharge.recharge_id()},
                                         {"refund", outcome.provider_reference}});
        co_return absl::FailedPreconditionError(
            "recharge_id: the recharge changed while it was refunded (see GetRecharge)");
      }
      LogInfo("refunded", {{"recharge_id", recharge.recharge_id()},
                           {"adapter", std::string(adapter->name())}});
      co_return refunded;
    }
    case ChargeResult::kDeclined:
      (void)co_await ledger_.ReleaseRefund(claim.idempotency_key);
      co_return absl::FailedPreconditionError(StrCat("the provider refused the refund (",
                                                     outcome.decline_code, "): ", outcome.message));
    case ChargeResult::kFailed:
      (void)co_await ledger_.ReleaseRefund(claim.idempotency_key);
      co_return absl::UnavailableError(
          StrCat("the refund could not be made (", outcome.message, "); nothing was refunded, retry"));
    case ChargeResult::kUnknown:
    case ChargeResult::kNotFound:
    case ChargeResult::kRequiresAction:  // no refund asks the buyer; treat as unknown
      break;
  }
  co_return absl::UnavailableError(
      StrCat("the refund's outcome is not known yet (", outcome.message,
             "); it is settled with the provider shortly: retry with the same idempotency_key"));
}

}  // namespace recharge
