// SqliteLedgerStore: the embedded LedgerStore for a single gateway node.
//
// One database file in WAL mode with synchronous=FULL. All statements run on
// one dedicated thread that owns the connection; it takes every operation
// queued while the previous transaction was committing and runs them in one
// transaction (group commit), so durability costs one fsync per batch, not
// per recharge. Each operation runs inside its own SAVEPOINT, so one failing
// operation does not undo the others. Callers' coroutines are resumed on
// their own executors only after the commit that holds their write.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "ledger/ledger_store.h"

struct sqlite3;

namespace recharge {

class SqliteLedgerStore final : public LedgerStore {
 public:
  struct Options {
    std::string path;
    size_t group_commit_max = 512;
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
  asio::awaitable<absl::StatusOr<Recharge>> GetRecharge(std::string recharge_id) override;
  asio::awaitable<absl::StatusOr<RechargePage>> ListRecharges(
      std::string user_id, int page_size, std::optional<RechargeCursor> cursor) override;
  asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>> ListUnresolved(
      std::chrono::system_clock::time_point started_before) override;
  asio::awaitable<absl::Status> AppendAudit(recharge::v1::AuditEvent event) override;
  asio::awaitable<absl::StatusOr<AuditPage>> ListAudit(int page_size,
                                                       std::optional<int64_t> before_seq) override;
  asio::awaitable<absl::StatusOr<int64_t>> PurgeKeys(
      std::chrono::system_clock::time_point before) override;

  // Number of transactions committed so far (for tests of group commit).
  uint64_t commits() const;

 private:
  class Db;
  // An operation: `run` executes on the writer thread inside the batch's
  // transaction; `done` is called after the commit with its outcome.
  struct Op {
    std::function<absl::Status(Db&)> run;
    std::function<void(absl::Status commit)> done;
  };

  explicit SqliteLedgerStore(Options options);
  // Queues `body` and resumes the caller with its result once committed.
  template <typename R>
  asio::awaitable<R> Submit(std::function<R(Db&)> body);
  void Enqueue(Op op);
  void WriterLoop();

  Options options_;
  std::unique_ptr<Db> db_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  uint64_t commits_ = 0;   // guarded by mu_
  std::thread writer_;
};

}  // namespace recharge
