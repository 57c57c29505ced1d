// LedgerStore: the system of record. Recharges, idempotency keys and the
// decision log live here, never in Redis (DESIGN §5).
//
// Idempotency follows Stripe: Begin() claims a key for a request fingerprint
// in state `started` (durably, before anything is charged); Complete() stores
// the final recharge and response in one transaction. A repeat of a completed
// key is answered from the stored response; a repeat with another fingerprint
// is a conflict; a repeat while the key is `started` is in flight.
//
// Every method is a coroutine that completes on the caller's executor and
// never blocks the calling thread. Implementations are thread-safe.
// Errors: UNAVAILABLE when the store cannot be reached or written.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/asio.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

using recharge::v1::FraudAssessment;
using recharge::v1::Recharge;
using recharge::v1::RecordRechargeResponse;

// What Begin() is asked to claim.
struct KeyClaim {
  std::string idempotency_key;
  std::string fingerprint;  // hash of the request's canonical fields
  // The recharge as known before the flow runs (no secrets); kept with the
  // key so that a crash can be recovered without the original request.
  Recharge draft;
};

struct BeginResult {
  enum class Kind {
    kClaimed,   // new key: the caller owns it and must Complete() it
    kReplay,    // completed earlier with the same fingerprint: `stored` holds the response
    kMismatch,  // the key was used for another request
    kInFlight,  // the same request is still being processed
  };
  Kind kind = Kind::kClaimed;
  std::string recharge_id;          // of the key's recharge (all kinds)
  RecordRechargeResponse stored;    // kReplay only
};

// One fraud decision with the inputs it was made on, for backtesting.
struct DecisionRecord {
  std::string recharge_id;
  std::string inputs_json;  // the rule inputs (no secrets)
  FraudAssessment assessment;
};

struct Completion {
  std::string idempotency_key;
  Recharge recharge;                 // final state, created_at set
  RecordRechargeResponse response;   // what the caller got
  std::optional<DecisionRecord> decision;
};

// A key left `started` by a process that died, or a recharge whose outcome
// was unknown (PENDING): both are resolved through the adapter's Lookup.
struct UnresolvedRecharge {
  std::string idempotency_key;
  Recharge recharge;  // the draft (started) or the stored PENDING recharge
  bool started = false;
};

// Where a page of ListRecharges ends: recharges are ordered newest first by
// creation time, ties broken by insertion order.
struct RechargeCursor {
  int64_t created_at_us = 0;
  int64_t seq = 0;
};

// A page of the audit log, newest first.
struct AuditPage {
  std::vector<recharge::v1::AuditEvent> events;
  std::optional<int64_t> next_before_seq;  // pass back to get the next page
};

struct RechargePage {
  std::vector<Recharge> recharges;
  std::optional<RechargeCursor> next_cursor;  // pass back to get the next page
};

// One change of a recharge from the outbox: `seq` orders the feed (commit
// order); `event` has its type, the recharge as the change left it, the
// commit time and the coins delta (no cursor: the API encodes `seq`).
struct FeedEvent {
  int64_t seq = 0;
  recharge::v1::RechargeEvent event;
};

// A refund's idempotency key, claimed before the provider is asked. A
// recharge has at most one refund claim at a time, and keeps its completed
// one: refunds are in full, so a recharge is refunded once.
struct RefundClaim {
  std::string idempotency_key;
  std::string fingerprint;  // hash of the request (recharge id, reason)
  std::string recharge_id;
  recharge::v1::RefundInfo info;  // reason, caller (no provider reference yet)
};

struct RefundBegin {
  enum class Kind {
    kClaimed,        // the caller owns the claim: CompleteRefund or ReleaseRefund it
    kReplay,         // completed earlier with this key: `recharge` is the answer
    kMismatch,       // the key was used for another request
    kInFlight,       // this key's refund is still being made (or its outcome unknown)
    kOtherRefund,    // the recharge is refunded, or being refunded, under another key
    kNotRefundable,  // the recharge is not APPROVED: `recharge` as it is
  };
  Kind kind = Kind::kClaimed;
  Recharge recharge;  // kClaimed, kNotRefundable: the recharge now; kReplay: the answer
  bool other_done = false;  // kOtherRefund: that refund completed
};

// A refund claimed and not completed (its outcome unknown, or the process
// died): the reconciler asks the provider.
struct StartedRefund {
  std::string idempotency_key;
  std::string recharge_id;
  recharge::v1::RefundInfo info;
  std::chrono::system_clock::time_point started_at;
};

// A provider notification (webhook), named by where it came from (the
// adapter instance) and the provider's own event id: a resend has the same.
struct NotificationRef {
  std::string source;    // adapter instance, e.g. "gcash-ph"
  std::string event_id;  // the provider's
};

enum class NotificationApplied {
  kApplied,   // the recharge moved; the notification is recorded
  kReplay,    // this notification was recorded before: nothing changed
  kNoChange,  // the recharge was no longer in `from`: recorded, nothing changed
};

// What a backtest replays (FraudAdmin.BacktestRules): the decisions of a
// period and the chargebacks reported in it, in the order they were written.
struct BacktestTraffic {
  struct Decision {
    std::string recharge_id;
    int64_t recorded_at_us = 0;   // when the decision was written
    std::string inputs_json;      // the fraud inputs (FraudInput::ToJson)
    FraudAssessment assessment;   // what was decided
    bool declined = false;        // the provider declined the charge (not a review's rejection)
  };
  struct Chargeback {
    std::string recharge_id;
    int64_t at_us = 0;
    std::string inputs_json;      // the recharge's decision inputs
  };
  std::vector<Decision> decisions;
  std::vector<Chargeback> chargebacks;
};

class LedgerStore {
 public:
  virtual ~LedgerStore() = default;

  // Claims `claim.idempotency_key`, durably, or reports what it holds.
  virtual asio::awaitable<absl::StatusOr<BeginResult>> Begin(KeyClaim claim) = 0;

  // Stores the outcome of a claimed key: the recharge, the response and the
  // decision, in one transaction. Returns the response now stored: if the key
  // was already completed (recovery raced the flow) that earlier one wins.
  virtual asio::awaitable<absl::StatusOr<RecordRechargeResponse>> Complete(Completion done) = 0;

  // Replaces a recharge that is in status `from` (and its key's stored
  // response) with `next`, and appends the change's event to the outbox,
  // atomically. Returns false if the recharge was no longer in `from`
  // (someone else moved it): the caller lost the race. FAILED_PRECONDITION
  // if `from` -> next.status() is no arrow of the state machine
  // (ledger/lifecycle.h). Complete() appends the DECIDED event likewise.
  virtual asio::awaitable<absl::StatusOr<bool>> Transition(Recharge next,
                                                           RecordRechargeResponse response,
                                                           recharge::v1::RechargeStatus from) = 0;

  // Transition() on a provider's notification: records `ref` in the same
  // transaction, so that the change, its event and the notification are
  // kept together or not at all, and a resent notification changes nothing.
  virtual asio::awaitable<absl::StatusOr<NotificationApplied>> TransitionOnNotification(
      NotificationRef ref, Recharge next, RecordRechargeResponse response,
      recharge::v1::RechargeStatus from) = 0;
  // True if `ref` was recorded by TransitionOnNotification.
  virtual asio::awaitable<absl::StatusOr<bool>> NotificationSeen(NotificationRef ref) = 0;

  // NOT_FOUND if there is no such recharge.
  virtual asio::awaitable<absl::StatusOr<Recharge>> GetRecharge(std::string recharge_id) = 0;
  // The recharge of an idempotency key (kept while its key is: at least
  // ledger.key_retention, and for as long as the recharge is PENDING or
  // REQUIRES_ACTION). NOT_FOUND if there is none; UNAVAILABLE while the key
  // is claimed and its outcome not recorded yet.
  virtual asio::awaitable<absl::StatusOr<Recharge>> GetRechargeByKey(std::string idempotency_key) = 0;

  // Newest first by creation time (a recharge recovered after a crash takes
  // its place by when it was made, not when it was recorded). `user_id`
  // empty: all users. `cursor` from a previous page.
  virtual asio::awaitable<absl::StatusOr<RechargePage>> ListRecharges(
      std::string user_id, int page_size, std::optional<RechargeCursor> cursor) = 0;

  // Recharges in `status` (the review queue: PENDING_REVIEW), oldest first.
  virtual asio::awaitable<absl::StatusOr<RechargePage>> ListByStatus(
      recharge::v1::RechargeStatus status, int page_size, std::optional<RechargeCursor> cursor) = 0;

  // The fraud inputs recorded with the recharge's decision (JSON), NOT_FOUND
  // if there is none.
  virtual asio::awaitable<absl::StatusOr<std::string>> GetDecisionInputs(std::string recharge_id) = 0;

  // The decisions recorded in [from, to] and the chargebacks reported in
  // it. RESOURCE_EXHAUSTED past `max_decisions` (a shorter period is asked).
  virtual asio::awaitable<absl::StatusOr<BacktestTraffic>> ReadBacktestTraffic(
      std::chrono::system_clock::time_point from, std::chrono::system_clock::time_point to,
      size_t max_decisions) = 0;

  // Appends one admin action to the audit log (its seq is assigned here).
  virtual asio::awaitable<absl::Status> AppendAudit(recharge::v1::AuditEvent event) = 0;

  // The audit log newest first, events with seq < `before_seq` (all: nullopt).
  virtual asio::awaitable<absl::StatusOr<AuditPage>> ListAudit(int page_size,
                                                               std::optional<int64_t> before_seq) = 0;

  // Keys `started` before `started_before`, and every PENDING and
  // REQUIRES_ACTION recharge.
  virtual asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>> ListUnresolved(
      std::chrono::system_clock::time_point started_before) = 0;

  // The outbox: events with seq > `after_seq` (nullopt: from the oldest
  // retained), oldest first, at most `limit`. OUT_OF_RANGE when some event
  // after `after_seq` was purged already, or `after_seq` is past the newest.
  virtual asio::awaitable<absl::StatusOr<std::vector<FeedEvent>>> ListEvents(
      std::optional<int64_t> after_seq, int limit) = 0;
  // The newest event's seq (or the last purged one's; 0 if there was none).
  virtual asio::awaitable<absl::StatusOr<int64_t>> LatestEventSeq() = 0;
  // Forgets events committed before `before`. Returns how many.
  virtual asio::awaitable<absl::StatusOr<int64_t>> PurgeEvents(
      std::chrono::system_clock::time_point before) = 0;

  // Refunds (RefundRecharge). BeginRefund claims `claim.idempotency_key`
  // for an APPROVED recharge, durably, or reports what stands in the way
  // (NOT_FOUND: no such recharge).
  virtual asio::awaitable<absl::StatusOr<RefundBegin>> BeginRefund(RefundClaim claim) = 0;
  // The provider refunded: moves `refunded` (status REFUNDED, refund set)
  // from APPROVED, appends its REFUNDED event and stores it as the key's
  // answer, atomically. False if the recharge was no longer APPROVED (the
  // claim is then released).
  virtual asio::awaitable<absl::StatusOr<bool>> CompleteRefund(std::string idempotency_key,
                                                               Recharge refunded) = 0;
  // The provider did not refund (refused, or a definite failure): forgets
  // the claim, so the key and the recharge may be tried again.
  virtual asio::awaitable<absl::Status> ReleaseRefund(std::string idempotency_key) = 0;
  // Claims not completed, made before `started_before`, oldest first.
  virtual asio::awaitable<absl::StatusOr<std::vector<StartedRefund>>> ListStartedRefunds(
      std::chrono::system_clock::time_point started_before) = 0;

  // Forgets completed keys older than `before` (recharges stay). Returns how many.
  virtual asio::awaitable<absl::StatusOr<int64_t>> PurgeKeys(
      std::chrono::system_clock::time_point before) = 0;
};

}  // namespace recharge
