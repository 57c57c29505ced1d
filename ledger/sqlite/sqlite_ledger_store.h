// SqliteLedgerStore: the embedded LedgerStore for a single gateway node.
//
// One database file in WAL mode with synchronous=FULL. Every write runs on
// one dedicated writer thread that owns the writing connection; it takes
// every operation queued while the previous transaction was committing and
// runs them in one transaction (group commit), so durability costs one fsync
// per batch, not per recharge. An operation that fails after writing is
// undone alone: the batch is then run again with each operation in its own
// SAVEPOINT (the common case, nothing failing, pays for no savepoint).
// Callers' coroutines are resumed on their own executors only after the
// commit that holds their write is on disk (a batch's callers are resumed
// with one post per executor and chunk of operations, not one per operation).
//
// Reads run on reader threads with their own connections (WAL lets readers
// run beside the writer and shows them only fsynced commits): GetRecharge,
// the lists, the audit log, and the first half of Begin(): a key already
// completed (an idempotent replay), in flight, or bound to another request
// is answered there, without the writer. Only a key not found is passed on
// to the writer, which claims it with INSERT ... ON CONFLICT DO NOTHING in
// its transaction, so of concurrent Begin()s of one key exactly one is
// kClaimed whatever the readers saw.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ledger/ledger_store.h"

struct sqlite3;

namespace recharge {
namespace sqlite_ledger_internal {
// Where an operation runs: on the writer; on a reader; on a reader, then on
// the writer if the reader could not answer (its function returns
// std::optional<R>, nullopt for "ask the writer"). Reads run on the writer
// when there are no reader threads.
enum class Route { kWrite, kRead, kReadThenWrite };
}  // namespace sqlite_ledger_internal

class SqliteLedgerStore final : public LedgerStore {
 public:
  struct Options {
    std::string path;
    size_t group_commit_max = 512;  // operations per transaction, at most
    // Threads (each with its own read-only connection) serving reads and the
    // lookup half of Begin(). 0: everything runs on the writer thread.
    int reader_threads = 1;
    // The WAL size (pages) at which the writer copies it back into the
    // database, after resuming a batch's callers (SQLite's default is 1000).
    int checkpoint_pages = 4096;
  };

  // Opens (creating if needed) the database and its schema. Errors name the path.
  static absl::StatusOr<std::unique_ptr<SqliteLedgerStore>> Open(Options options);
  ~SqliteLedgerStore() override;  // finishes queued operations, then closes

  asio::awaitable<absl::StatusOr<BeginResult>> Begin(KeyClaim claim) override;
  asio::awaitable<absl::StatusOr<RecordRechargeResponse>> Complete(Completion done) override;
  asio::awaitable<absl::StatusOr<bool>> Transition(Recharge next, RecordRechargeResponse response,
                                                   recharge::v1::RechargeStatus from) override;
  asio::awaitable<absl::StatusOr<RechargePage>> ListByStatus(
      recharge::v1::RechargeStatus status, int page_size,
      std::optional<RechargeCursor> cursor) override;
  asio::awaitable<absl::StatusOr<std::string>> GetDecisionInputs(std::string recharge_id) override;
  asio::awaitable<absl::StatusOr<NotificationApplied>> TransitionOnNotification(
      NotificationRef ref, Recharge next, RecordRechargeResponse response,
      recharge::v1::RechargeStatus from) override;
  asio::awaitable<absl::StatusOr<bool>> NotificationSeen(NotificationRef ref) override;
  asio::awaitable<absl::StatusOr<Recharge>> GetRecharge(std::string recharge_id) override;
  asio::awaitable<absl::StatusOr<BacktestTraffic>> ReadBacktestTraffic(
      std::chrono::system_clock::time_point from, std::chrono::system_clock::time_point to,
      size_t max_decisions) override;
  asio::awaitable<absl::StatusOr<Recharge>> GetRechargeByKey(std::string idempotency_key) override;
  asio::awaitable<absl::StatusOr<RechargePage>> ListRecharges(
      std::string user_id, int page_size, std::optional<RechargeCursor> cursor) override;
  asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>> ListUnresolved(
      std::chrono::system_clock::time_point started_before) override;
  asio::awaitable<absl::Status> AppendAudit(recharge::v1::AuditEvent event) override;
  asio::awaitable<absl::StatusOr<AuditPage>> ListAudit(int page_size,
                                                       std::optional<int64_t> before_seq) override;
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

  // Number of write transactions committed so far (for tests of group commit).
  uint64_t commits() const { return commits_.load(std::memory_order_relaxed); }
  // Batches whose fast path was abandoned because an operation failed after
  // writing, and which were run again with one savepoint per operation.
  uint64_t savepoint_reruns() const { return reruns_.load(std::memory_order_relaxed); }
  // WAL checkpoints run so far.
  uint64_t checkpoints() const { return checkpoints_.load(std::memory_order_relaxed); }

 private:
  class Db;
  class Op;
  // Appends one change to the outbox, inside the caller's transaction.
  static absl::Status AppendEvent(Db& db, recharge::v1::RechargeEventType type,
                                  std::string_view recharge_id, std::string_view record,
                                  int64_t at_us);
  // The writes of a Transition, inside the caller's transaction: the
  // recharge if it is in `from`, its key's stored response, the change's
  // event. False (nothing written) if it was not in `from`.
  static absl::StatusOr<bool> MoveRecharge(Db& db, const std::string& id, const std::string& key,
                                           int status, const std::string& record,
                                           const std::string& response, int from,
                                           recharge::v1::RechargeEventType type);
  // The seq of the newest event purged (0: none yet).
  static absl::StatusOr<int64_t> PurgedThrough(Db& db);
  // The newest event's seq, or the last purged one's; 0 if there was none.
  static absl::StatusOr<int64_t> LatestSeq(Db& db);
  using Route = sqlite_ledger_internal::Route;
  template <typename R, Route kRoute, typename Fn, typename Handler>
  class OpImpl;

  // A queue of operations served by one or more threads.
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Op*> ops;   // guarded by mu
    int idle = 0;           // threads waiting on cv, not yet woken; guarded by mu
    bool stopping = false;  // guarded by mu
  };

  explicit SqliteLedgerStore(Options options);

  // Queues `fn` (a copyable function of Db&) by its route and resumes the
  // caller with its result: for a write, once the commit holding it is on disk.
  template <typename R, Route kRoute, typename Fn>
  asio::awaitable<R> Submit(Fn fn);

  // Queues `ops` (wakes a waiting thread only if one is idle).
  static void Push(Queue& q, Op* const* ops, size_t n);
  void WriterLoop();
  void ReaderLoop(Db& db);
  // Runs `batch` in one transaction; the commit's outcome.
  absl::Status RunBatch(std::vector<Op*>& batch);
  // Resumes the callers of `ops` (done), a few posts per batch.
  static void Deliver(std::vector<Op*>& ops);
  // sqlite3_wal_hook: notes the WAL's size after each commit (writer thread).
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int frames);

  Options options_;
  std::unique_ptr<Db> db_;                    // the writer's connection
  std::vector<std::unique_ptr<Db>> readers_;  // one per reader thread
  Queue writes_;
  Queue reads_;
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> reruns_{0};
  std::atomic<uint64_t> checkpoints_{0};
  int wal_frames_ = 0;  // writer thread only
  std::thread writer_;
  std::vector<std::thread> reader_threads_;
};

}  // namespace recharge
