// PostgresLedgerStore: the LedgerStore shared by several gateway replicas
// (DESIGN §5), on PostgreSQL through libpq's nonblocking API wired into Asio
// (ledger/postgres/pg_connection.h). Same schema and semantics as the SQLite
// store; the ledger test suite runs against both.
//
// Writes: one writer per replica takes every write queued while its last
// transaction was committing and sends them as ONE transaction in ONE
// pipelined round trip: BEGIN, the cluster-wide ledger lock, one statement
// per write (each write is a server-side function of the schema, so it is
// one statement whatever it decides), COMMIT. The lock
// (pg_advisory_xact_lock) makes every replica's write transactions take
// turns, so the outbox's seq order is commit order across replicas: a feed
// reader on any replica that has seen seq N has seen every event before it.
// A write that fails (a bug, bad data) aborts its batch; the batch is then
// run again one write per transaction, so only that write fails. The
// caller is resumed once the COMMIT holding its write has answered.
//
// Reads run on a small pool of connections, each read one round trip
// (several statements of one read in one REPEATABLE READ snapshot). Begin()
// looks the key up on a reader first and goes to the writer only for a key
// not seen, which it claims with INSERT ... ON CONFLICT DO NOTHING.
//
// Connections are made lazily and made again after a failure, with an
// exponential backoff (reconnect_min .. reconnect_max); while the server is
// unreachable every call fails at once with UNAVAILABLE. A round trip that
// passes `timeout` fails with DEADLINE_EXCEEDED and its connection is
// dropped: the outcome of the writes in it is unknown (as after a crash:
// the reconciler finds keys left `started`).
//
// The schema is versioned: Open() applies the migrations this build knows
// and the database has not seen, in one transaction under a lock, so
// replicas starting together migrate once.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "ledger/ledger_store.h"

namespace recharge {

class PostgresLedgerStore final : public LedgerStore {
 public:
  struct Options {
    // libpq connection string ("host=... port=... dbname=... user=...").
    // The password, if any, is given apart (never logged).
    std::string conninfo{};
    std::string password{};
    int read_connections = 2;
    size_t group_commit_max = 512;   // writes per transaction, at most
    std::chrono::milliseconds timeout{5000};  // one round trip (connect included)
    std::chrono::milliseconds reconnect_min{100};
    std::chrono::milliseconds reconnect_max{5000};
  };

  // Connects, applies the migrations, and starts the writer on `executor`
  // (whose io_context must be running). Errors name the server.
  static asio::awaitable<absl::StatusOr<std::unique_ptr<PostgresLedgerStore>>> Open(
      asio::any_io_executor executor, Options options);
  // Fails queued writes with UNAVAILABLE; pending round trips finish on
  // their own (the io_context keeps what they need alive).
  ~PostgresLedgerStore() override;

  // The schema version this build migrates to.
  static int SchemaVersion();

  asio::awaitable<absl::StatusOr<BeginResult>> Begin(KeyClaim claim) override;
  asio::awaitable<absl::StatusOr<RecordRechargeResponse>> Complete(Completion done) override;
  asio::awaitable<absl::StatusOr<bool>> Transition(Recharge next, RecordRechargeResponse response,
                                                   recharge::v1::RechargeStatus from) override;
  asio::awaitable<absl::StatusOr<NotificationApplied>> TransitionOnNotification(
      NotificationRef ref, Recharge next, RecordRechargeResponse response,
      recharge::v1::RechargeStatus from) override;
  asio::awaitable<absl::StatusOr<bool>> NotificationSeen(NotificationRef ref) override;
  asio::awaitable<absl::StatusOr<Recharge>> GetRecharge(std::string recharge_id) override;
  asio::awaitable<absl::StatusOr<Recharge>> GetRechargeByKey(std::string idempotency_key) override;
  asio::awaitable<absl::StatusOr<RechargePage>> ListRecharges(
      std::string user_id, int page_size, std::optional<RechargeCursor> cursor) override;
  asio::awaitable<absl::StatusOr<RechargePage>> ListByStatus(
      recharge::v1::RechargeStatus status, int page_size,
      std::optional<RechargeCursor> cursor) override;
  asio::awaitable<absl::StatusOr<std::string>> GetDecisionInputs(std::string recharge_id) override;
  asio::awaitable<absl::StatusOr<BacktestTraffic>> ReadBacktestTraffic(
      std::chrono::system_clock::time_point from, std::chrono::system_clock::time_point to,
      size_t max_decisions) override;
  asio::awaitable<absl::Status> AppendAudit(recharge::v1::AuditEvent event) override;
  asio::awaitable<absl::StatusOr<AuditPage>> ListAudit(int page_size,
                                                       std::optional<int64_t> before_seq) override;
  asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>> ListUnresolved(
      std::chrono::system_clock::time_point started_before) override;
  asio::awaitable<absl::StatusOr<std::vector<FeedEvent>>> ListEvents(
      std::optional<int64_t> after_seq, int limit) override;
  asio::awaitable<absl::StatusOr<int64_t>> LatestEventSeq() override;
  asio::awaitable<absl::StatusOr<int64_t>> PurgeEvents(
      std::chrono::system_clock::time_point before) override;
  asio::awaitable<absl::StatusOr<RefundBegin>> BeginRefund(RefundClaim claim) override;
  asio::awaitable<absl::StatusOr<bool>> CompleteRefund(std::string idempotency_key,
                                                       Recharge refunded) override;
  asio::awaitable<absl::Status> ReleaseRefund(std::string idempotency_key) override;
  asio::awaitable<absl::StatusOr<std::vector<StartedRefund>>> ListStartedRefunds(
      std::chrono::system_clock::time_point started_before) override;
  asio::awaitable<absl::StatusOr<int64_t>> PurgeKeys(
      std::chrono::system_clock::time_point before) override;

  // Write transactions committed by this replica (tests of group commit).
  uint64_t commits() const;
  // Batches in which a write failed: its writes were undone alone (a batch
  // of several is run again one write per transaction).
  uint64_t batch_reruns() const;

  class Core;  // the state shared with the writer and the reads in flight

 private:
  explicit PostgresLedgerStore(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

}  // namespace recharge
