#include "ledger/sqlite/sqlite_ledger_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <utility>

#include <google/protobuf/message_lite.h>

#include "io/gateway_metrics.h"
#include "io/strings.h"
#include "ledger/lifecycle.h"

namespace recharge {
namespace {


constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS idempotency_keys (
  key          TEXT PRIMARY KEY,
  fingerprint  BLOB NOT NULL,
  recharge_id  TEXT NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('started', 'completed')),
  draft        BLOB NOT NULL,       -- recharge.v1.Recharge known at start, no secrets
  response     BLOB,                -- recharge.v1.RecordRechargeResponse once completed
  created_at   INTEGER NOT NULL,    -- unix microseconds
  updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_started
  ON idempotency_keys (created_at) WHERE state = 'started';
CREATE TABLE IF NOT EXISTS recharges (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,
  recharge_id      TEXT NOT NULL UNIQUE,
  idempotency_key  TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  status           INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  record           BLOB NOT NULL      -- recharge.v1.Recharge
);
CREATE INDEX IF NOT EXISTS recharges_user ON recharges (user_id, created_at, seq);
CREATE INDEX IF NOT EXISTS recharges_created ON recharges (created_at, seq);
-- PENDING (6) and REQUIRES_ACTION (9): the reconciler's work. (Ledgers made
-- before REQUIRES_ACTION had an index of PENDING alone.)
DROP INDEX IF EXISTS recharges_pending;
CREATE INDEX IF NOT EXISTS recharges_unresolved ON recharges (status) WHERE status IN (6, 9);
CREATE INDEX IF NOT EXISTS recharges_status ON recharges (status, created_at, seq);
CREATE TABLE IF NOT EXISTS decision_log (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  recharge_id  TEXT NOT NULL,
  at           INTEGER NOT NULL,
  inputs       TEXT NOT NULL,       -- JSON of the rule inputs
  assessment   BLOB NOT NULL        -- recharge.v1.FraudAssessment
);
CREATE INDEX IF NOT EXISTS decision_log_recharge ON decision_log (recharge_id);
CREATE TABLE IF NOT EXISTS audit_log (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  at           INTEGER NOT NULL,    -- unix microseconds
  caller       TEXT NOT NULL,
  rpc          TEXT NOT NULL,
  target       TEXT NOT NULL,
  note         TEXT NOT NULL,
  outcome      TEXT NOT NULL,       -- gRPC status code name
  detail       TEXT NOT NULL
);
-- The outbox of the event feed: one row per change of a recharge, written in
-- the transaction that makes the change. One writer: seq order is commit order.
CREATE TABLE IF NOT EXISTS recharge_events (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  at           INTEGER NOT NULL,    -- unix microseconds of the change
  type         INTEGER NOT NULL,    -- recharge.v1.RechargeEventType
  recharge_id  TEXT NOT NULL,
  record       BLOB NOT NULL        -- recharge.v1.Recharge as the change left it
);
CREATE INDEX IF NOT EXISTS recharge_events_at ON recharge_events (at);
-- Refund claims (RefundRecharge), one per recharge: a completed one stays (a
-- recharge is refunded once, in full); one that did not refund is deleted.
CREATE TABLE IF NOT EXISTS refunds (
  idempotency_key  TEXT PRIMARY KEY,
  recharge_id      TEXT NOT NULL UNIQUE,
  fingerprint      BLOB NOT NULL,
  state            TEXT NOT NULL CHECK (state IN ('started', 'completed')),
  info             BLOB NOT NULL,    -- recharge.v1.RefundInfo as claimed (reason, caller)
  answer           BLOB,             -- recharge.v1.Recharge once completed
  created_at       INTEGER NOT NULL, -- unix microseconds
  updated_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_started ON refunds (created_at) WHERE state = 'started';
-- Provider notifications (webhooks) that changed, or were checked against,
-- a recharge: recorded in the transaction of the change, so a resent one
-- is known and changes nothing.
CREATE TABLE IF NOT EXISTS provider_notifications (
  source       TEXT NOT NULL,       -- adapter instance
  event_id     TEXT NOT NULL,       -- the provider's
  recharge_id  TEXT NOT NULL,
  at           INTEGER NOT NULL,    -- unix microseconds
  PRIMARY KEY (source, event_id)
);
-- Named counters of the ledger itself: events_purged_through (the seq of
-- the newest event purged; a cursor before it has lost events).
CREATE TABLE IF NOT EXISTS ledger_meta (
  name   TEXT PRIMARY KEY,
  value  INTEGER NOT NULL
);
)sql";

int64_t UnixMicros(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

int64_t NowMicros() { return UnixMicros(std::chrono::system_clock::now()); }

// What a replay of the RecordRecharge key of a refunded recharge answers.
RecordRechargeResponse RefundedResponse(const Recharge& r) {
  RecordRechargeResponse out;
  out.set_recharge_id(r.recharge_id());
  out.set_status(r.status());
  *out.mutable_fraud() = r.fraud();
  *out.mutable_payment() = r.payment();
  return out;
}

}  // namespace

// One connection and its cached statements, used by one thread only: the
// writer's (read-write) or a reader's (query_only).
class SqliteLedgerStore::Db {
 public:
  // A cached prepared statement, reset when this wrapper goes out of scope.
  // Bound text and blobs are not copied: REQUIRES they outlive the wrapper.
  class Stmt {
   public:
    Stmt(Db& db, sqlite3_stmt* s) : db_(&db), s_(s) {}
    Stmt(Stmt&& other) noexcept : db_(other.db_), s_(std::exchange(other.s_, nullptr)) {}
    ~Stmt() {
      if (s_ == nullptr) return;
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    Stmt& operator=(Stmt&&) = delete;

    Stmt& Text(int i, std::string_view v) {
      sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
      return *this;
    }
    Stmt& Blob(int i, std::string_view v) {
      sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
      return *this;
    }
    Stmt& Int(int i, int64_t v) {
      sqlite3_bind_int64(s_, i, v);
      return *this;
    }
    // SQLITE_ROW or SQLITE_DONE; anything else is turned into an error.
    absl::StatusOr<bool> Step() {
      int rc = sqlite3_step(s_);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      return db_->Error("step");
    }
    absl::Status Run() {
      absl::StatusOr<bool> r = Step();
      return r.status();
    }
    std::string ColText(int c) {
      const unsigned char* p = sqlite3_column_text(s_, c);
      return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : "";
    }
    std::string_view ColBlobView(int c) {
      const void* p = sqlite3_column_blob(s_, c);
      return p ? std::string_view(static_cast<const char*>(p), sqlite3_column_bytes(s_, c))
               : std::string_view();
    }
    std::string ColBlob(int c) { return std::string(ColBlobView(c)); }
    int64_t ColInt(int c) { return sqlite3_column_int64(s_, c); }
    // Parses a protobuf column without copying it first.
    bool ParseCol(int c, google::protobuf::MessageLite* m) {
      std::string_view v = ColBlobView(c);
      return m->ParseFromArray(v.data(), static_cast<int>(v.size()));
    }

   private:
    Db* db_;
    sqlite3_stmt* s_;
  };

  Db(sqlite3* db, bool read_only) : db_(db), read_only_(read_only) {}
  ~Db() {
    for (auto& [sql, s] : cache_) sqlite3_finalize(s);
    sqlite3_close(db_);
  }

  sqlite3* handle() const { return db_; }
  // A reader's connection: it never writes.
  bool read_only() const { return read_only_; }

  absl::Status Error(std::string_view what) const {
    return absl::UnavailableError(StrCat("ledger: ", what, ": ", sqlite3_errmsg(db_)));
  }

  // Runs SQL that is not cached (the schema, pragmas).
  absl::Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      return absl::UnavailableError(StrCat("ledger: ", msg));
    }
    return absl::OkStatus();
  }

  // REQUIRES: `sql` is a string literal (it keys the cache by address).
  absl::StatusOr<Stmt> Prepare(const char* sql) {
    sqlite3_stmt*& s = cache_[sql];
    if (s == nullptr &&
        sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      s = nullptr;
      return Error("prepare");
    }
    return Stmt(*this, s);
  }

  // Runs a cached statement that takes no parameters (BEGIN, COMMIT...).
  // REQUIRES: `sql` is a string literal.
  absl::Status Run(const char* sql) {
    absl::StatusOr<Stmt> s = Prepare(sql);
    if (!s.ok()) return s.status();
    return s->Run();
  }

  // Reads made of several statements see one snapshot. On the writer (no
  // reader threads) they already run inside the batch's transaction.
  class ReadTransaction {
   public:
    explicit ReadTransaction(Db& db) : db_(db.Autocommit() && db.Run("BEGIN").ok() ? &db : nullptr) {}
    ~ReadTransaction() {
      if (db_ != nullptr) (void)db_->Run("COMMIT");
    }
    ReadTransaction(const ReadTransaction&) = delete;
    ReadTransaction& operator=(const ReadTransaction&) = delete;

   private:
    Db* db_;
  };

  int64_t Changes() const { return sqlite3_changes64(db_); }
  // Rows changed by statements that completed, since the connection opened.
  int64_t TotalChanges() const { return sqlite3_total_changes64(db_); }
  // No transaction is open (SQLite rolls one back by itself on some errors).
  bool Autocommit() const { return sqlite3_get_autocommit(db_) != 0; }

  // Reads a page of recharges from `stmt`, whose columns are created_at,
  // seq, record and which was asked for page_size + 1 rows: the extra row
  // only tells that there is a next page.
  static absl::StatusOr<RechargePage> ReadPage(Stmt& stmt, int page_size) {
    RechargePage page;
    RechargeCursor last;
    for (;;) {
      absl::StatusOr<bool> row = stmt.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      if (static_cast<int>(page.recharges.size()) == page_size) {
        page.next_cursor = last;
        break;
      }
      last = RechargeCursor{stmt.ColInt(0), stmt.ColInt(1)};
      if (!stmt.ParseCol(2, &page.recharges.emplace_back())) {
        return absl::DataLossError("ledger: stored recharge does not parse");
      }
    }
    return page;
  }

 private:
  sqlite3* db_;
  const bool read_only_;
  std::unordered_map<const char*, sqlite3_stmt*> cache_;
};

#define LEDGER_PREPARE(var, sql)                \
  auto var##_or = db.Prepare(sql);              \
  if (!var##_or.ok()) return var##_or.status(); \
  Db::Stmt& var = *var##_or

#define LEDGER_RETURN_IF_ERROR(expr) \
  do {                               \
    absl::Status _s = (expr);        \
    if (!_s.ok()) return _s;         \
  } while (0)

namespace {
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& r) {
  return r.status();
}
[[maybe_unused]] absl::Status StatusOf(const absl::Status& s) { return s; }

}  // namespace

absl::Status SqliteLedgerStore::AppendEvent(Db& db, recharge::v1::RechargeEventType type,
                                            std::string_view recharge_id, std::string_view record,
                                            int64_t at_us) {
  LEDGER_PREPARE(insert,
                 "INSERT INTO recharge_events (at, type, recharge_id, record) VALUES (?1, ?2, ?3, ?4)");
  return insert.Int(1, at_us).Int(2, type).Text(3, recharge_id).Blob(4, record).Run();
}

// A queued operation. It lives from Submit() until its caller is resumed
// (Resume() deletes it); in between it is owned by the queue or batch that
// holds its pointer.
class SqliteLedgerStore::Op {
 public:
  virtual ~Op() = default;
  // On a reader: true if answered; false if it must go on to the writer.
  virtual bool RunRead(Db& db) = 0;
  // On the writer, inside the batch's transaction: the operation's status.
  virtual absl::Status RunWrite(Db& db) = 0;
  // The batch did not commit: the result becomes `error`.
  virtual void Fail(const absl::Status& error) = 0;
  // On the caller's executor: resumes the caller, then deletes this.
  virtual void Resume() = 0;
  const asio::any_io_executor& executor() const { return executor_; }

 protected:
  asio::any_io_executor executor_;
};

template <typename R, sqlite_ledger_internal::Route kRoute, typename Fn, typename Handler>
class SqliteLedgerStore::OpImpl final : public Op {
 public:
  OpImpl(Fn fn, Handler handler) : fn_(std::move(fn)), handler_(std::move(handler)) {
    executor_ = asio::get_associated_executor(handler_);
  }

  bool RunRead(Db& db) override {
    if constexpr (kRoute == Route::kReadThenWrite) {
      std::optional<R> r = fn_(db);
      if (!r) return false;
      result_.emplace(*std::move(r));
    } else {
      result_.emplace(fn_(db));
    }
    return true;
  }

  absl::Status RunWrite(Db& db) override {
    if constexpr (kRoute == Route::kReadThenWrite) {
      std::optional<R> r = fn_(db);
      if (!r) r.emplace(absl::InternalError("ledger: the writer left an operation unanswered"));
      result_.emplace(*std::move(r));
    } else {
      result_.emplace(fn_(db));
    }
    return StatusOf(*result_);
  }

  void Fail(const absl::Status& error) override { result_.emplace(error); }

  void Resume() override {
    std::unique_ptr<OpImpl> self(this);
    Handler handler = std::move(handler_);
    R result = result_ ? *std::move(result_) : R(absl::UnavailableError("ledger: not run"));
    self.reset();
    std::move(handler)(std::move(result));
  }

 private:
  Fn fn_;
  Handler handler_;
  std::optional<R> result_;
};

SqliteLedgerStore::SqliteLedgerStore(Options options) : options_(std::move(options)) {}

namespace {
absl::StatusOr<sqlite3*> OpenConnection(const std::string& path, bool create) {
  sqlite3* raw = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close(raw);
    return absl::UnavailableError(StrCat("ledger: cannot open \"", path, "\": ", msg));
  }
  sqlite3_busy_timeout(raw, 5000);
  return raw;
}
}  // namespace

absl::StatusOr<std::unique_ptr<SqliteLedgerStore>> SqliteLedgerStore::Open(Options options) {
  absl::StatusOr<sqlite3*> raw = OpenConnection(options.path, /*create=*/true);
  if (!raw.ok()) return raw.status();
  auto db = std::make_unique<Db>(*raw, /*read_only=*/false);
  // synchronous=FULL: a commit returns once its WAL frames are fsynced. The
  // page cache is sized so that the indexes' hot pages stay in memory;
  // savepoint journals (only when a batch is re-run) stay in memory too.
  // No automatic checkpoint inside COMMIT: the writer checkpoints after it
  // has resumed the batch's callers (WriterLoop).
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             "PRAGMA foreign_keys=ON", "PRAGMA cache_size=-65536",
                             "PRAGMA temp_store=MEMORY", "PRAGMA wal_autocheckpoint=0"}) {
    if (absl::Status s = db->Exec(pragma); !s.ok()) {
      return absl::UnavailableError(StrCat("ledger \"", options.path, "\": ", s.message()));
    }
  }
  if (absl::Status s = db->Exec(kSchema); !s.ok()) {
    return absl::UnavailableError(StrCat("ledger \"", options.path, "\": ", s.message()));
  }
  std::unique_ptr<SqliteLedgerStore> store(new SqliteLedgerStore(std::move(options)));
  sqlite3_wal_hook(*raw, &SqliteLedgerStore::OnWalCommit, store.get());
  store->db_ = std::move(db);
  for (int i = 0; i < store->options_.reader_threads; ++i) {
    absl::StatusOr<sqlite3*> r = OpenConnection(store->options_.path, /*create=*/false);
    if (!r.ok()) return r.status();
    auto reader = std::make_unique<Db>(*r, /*read_only=*/true);
    for (const char* pragma : {"PRAGMA query_only=ON", "PRAGMA cache_size=-65536"}) {
      if (absl::Status s = reader->Exec(pragma); !s.ok()) {
        return absl::UnavailableError(StrCat("ledger \"", store->options_.path, "\": ", s.message()));
      }
    }
    store->readers_.push_back(std::move(reader));
  }
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  for (auto& reader : store->readers_) {
    store->reader_threads_.emplace_back([s = store.get(), r = reader.get()] { s->ReaderLoop(*r); });
  }
  return store;
}

SqliteLedgerStore::~SqliteLedgerStore() {
  // Readers first: they may still pass operations on to the writer.
  for (Queue* q : {&reads_, &writes_}) {
    {
      std::lock_guard<std::mutex> lock(q->mu);
      q->stopping = true;
    }
    q->cv.notify_all();
    if (q == &reads_) {
      for (std::thread& t : reader_threads_) t.join();
    } else if (writer_.joinable()) {
      writer_.join();
    }
  }
}

void SqliteLedgerStore::Push(Queue& q, Op* const* ops, size_t n) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(q.mu);
    q.ops.insert(q.ops.end(), ops, ops + n);
    // A thread busy with a batch comes back for the queue by itself: only an
    // idle one is woken, and each idle one by one push only.
    if (q.idle > 0) {
      --q.idle;
      wake = true;
    }
  }
  if (wake) q.cv.notify_one();
}

namespace {
// Takes up to `max` operations from `q` into `batch`, waiting for one.
// Returns false when the queue is stopping and empty.
template <typename QueueT, typename OpT>
bool Take(QueueT& q, size_t max, std::vector<OpT*>& batch) {
  std::unique_lock<std::mutex> lock(q.mu);
  if (q.ops.empty() && !q.stopping) {
    ++q.idle;  // the push that wakes us takes it back
    q.cv.wait(lock, [&] { return q.stopping || !q.ops.empty(); });
  }
  if (q.ops.empty()) return false;
  if (q.ops.size() <= max) {
    batch.swap(q.ops);
  } else {
    batch.assign(q.ops.begin(), q.ops.begin() + static_cast<ptrdiff_t>(max));
    q.ops.erase(q.ops.begin(), q.ops.begin() + static_cast<ptrdiff_t>(max));
  }
  return true;
}
}  // namespace

void SqliteLedgerStore::WriterLoop() {
  std::vector<Op*> batch;
  while (Take(writes_, std::max<size_t>(1, options_.group_commit_max), batch)) {
    const auto started = std::chrono::steady_clock::now();
    absl::Status commit = RunBatch(batch);
    Metrics().ledger_commit_seconds.With({}).Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    commits_.fetch_add(1, std::memory_order_relaxed);
    if (!commit.ok()) {
      Metrics().ledger_errors.With({}).Inc();
      for (Op* op : batch) op->Fail(commit);
    }
    Deliver(batch);
    batch.clear();
    // Copies the WAL back into the database once it has grown, between
    // batches: no caller waits for it, and with no transaction open it can
    // finish, so the next transaction starts the WAL over.
    if (wal_frames_ >= options_.checkpoint_pages) {
      (void)sqlite3_wal_checkpoint_v2(db_->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      wal_frames_ = 0;
      checkpoints_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

int SqliteLedgerStore::OnWalCommit(void* self, sqlite3*, const char*, int frames) {
  static_cast<SqliteLedgerStore*>(self)->wal_frames_ = frames;
  return SQLITE_OK;
}

absl::Status SqliteLedgerStore::RunBatch(std::vector<Op*>& batch) {
  Db& db = *db_;
  auto abandon = [&db](absl::Status s) {
    if (!db.Autocommit()) (void)db.Run("ROLLBACK");
    return s;
  };
  LEDGER_RETURN_IF_ERROR(db.Run("BEGIN IMMEDIATE"));
  // Fast path: no savepoints. An operation that fails without having
  // changed a row left nothing to undo (a failing statement undoes itself).
  bool rerun = false;
  for (Op* op : batch) {
    const int64_t before = db.TotalChanges();
    absl::Status s = op->RunWrite(db);
    if (s.ok()) continue;
    if (db.Autocommit()) return s;  // SQLite rolled the transaction back
    if (db.TotalChanges() != before) {
      rerun = true;
      break;
    }
  }
  if (rerun) {
    // Run the batch again from the start, each operation in a savepoint, so
    // that the failed one is undone alone.
    reruns_.fetch_add(1, std::memory_order_relaxed);
    LEDGER_RETURN_IF_ERROR(abandon(db.Run("ROLLBACK")));
    LEDGER_RETURN_IF_ERROR(db.Run("BEGIN IMMEDIATE"));
    for (Op* op : batch) {
      if (absl::Status s = db.Run("SAVEPOINT op"); !s.ok()) return abandon(s);
      if (!op->RunWrite(db).ok()) {
        if (db.Autocommit()) return absl::UnavailableError("ledger: transaction rolled back");
        if (absl::Status s = db.Run("ROLLBACK TO op"); !s.ok()) return abandon(s);
      }
      if (absl::Status s = db.Run("RELEASE op"); !s.ok()) return abandon(s);
    }
  }
  if (absl::Status s = db.Run("COMMIT"); !s.ok()) return abandon(s);
  return absl::OkStatus();
}

void SqliteLedgerStore::ReaderLoop(Db& db) {
  constexpr size_t kReadBatch = 256;
  std::vector<Op*> batch, answered, to_writer;
  while (Take(reads_, kReadBatch, batch)) {
    {
      // One read transaction (one snapshot, one lock of the file) for the
      // batch: every op in it was queued before the snapshot was taken, so
      // each sees every commit made before it was asked.
      Db::ReadTransaction snapshot(db);
      for (Op* op : batch) (op->RunRead(db) ? answered : to_writer).push_back(op);
    }
    if (!to_writer.empty()) Push(writes_, to_writer.data(), to_writer.size());
    Deliver(answered);
    batch.clear();
    answered.clear();
    to_writer.clear();
  }
}

namespace {
// Operations to resume with one post. If the executor is destroyed before
// running it, the operations are freed (their coroutines with them).
template <typename OpT>
struct Chunk {
  std::vector<OpT*> ops;
  size_t next = 0;
  explicit Chunk(std::vector<OpT*> o) : ops(std::move(o)) {}
  Chunk(Chunk&& other) noexcept : ops(std::move(other.ops)), next(std::exchange(other.next, 0)) {
    other.ops.clear();
  }
  Chunk(const Chunk&) = delete;
  ~Chunk() {
    for (; next < ops.size(); ++next) std::unique_ptr<OpT>(ops[next]).reset();
  }
  void operator()() {
    while (next < ops.size()) ops[next++]->Resume();
  }
};
}  // namespace

void SqliteLedgerStore::Deliver(std::vector<Op*>& ops) {
  // One post per run of operations with the same executor, in chunks so
  // that an io_context with several threads resumes them in parallel.
  constexpr size_t kChunk = 16;
  for (size_t i = 0; i < ops.size();) {
    size_t j = i + 1;
    while (j < ops.size() && j - i < kChunk && ops[j]->executor() == ops[i]->executor()) ++j;
    asio::any_io_executor ex = ops[i]->executor();
    asio::post(ex, Chunk<Op>(std::vector<Op*>(ops.begin() + static_cast<ptrdiff_t>(i),
                                               ops.begin() + static_cast<ptrdiff_t>(j))));
    i = j;
  }
}

template <typename R, sqlite_ledger_internal::Route kRoute, typename Fn>
asio::awaitable<R> SqliteLedgerStore::Submit(Fn fn) {
  auto initiation = [this](auto handler, Fn fn) {
    using Handler = decltype(handler);
    Op* op = new OpImpl<R, kRoute, Fn, Handler>(std::move(fn), std::move(handler));
    const bool read_first = kRoute != Route::kWrite && !readers_.empty();
    Push(read_first ? reads_ : writes_, &op, 1);
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      initiation, asio::use_awaitable, std::move(fn));
}

asio::awaitable<absl::StatusOr<BeginResult>> SqliteLedgerStore::Begin(KeyClaim claim) {
  using Result = absl::StatusOr<BeginResult>;
  // On a reader: answers a key that exists, passes a new one on (nullopt).
  // On the writer: claims the key, or reports what it holds. The draft is
  // serialized only for a key not found, by the reader when there is one.
  auto body = [claim = std::move(claim), draft = std::string()](Db& db) mutable -> std::optional<Result> {
    if (!db.read_only()) {
      if (draft.empty()) draft = claim.draft.SerializeAsString();
      LEDGER_PREPARE(insert,
                     "INSERT INTO idempotency_keys (key, fingerprint, recharge_id, state, draft,"
                     " created_at, updated_at) VALUES (?1, ?2, ?3, 'started', ?4, ?5, ?5)"
                     " ON CONFLICT (key) DO NOTHING");
      LEDGER_RETURN_IF_ERROR(insert.Text(1, claim.idempotency_key)
                                 .Blob(2, claim.fingerprint)
                                 .Text(3, claim.draft.recharge_id())
                                 .Blob(4, draft)
                                 .Int(5, NowMicros())
                                 .Run());
      if (db.Changes() == 1) {
        BeginResult out;
        out.kind = BeginResult::Kind::kClaimed;
        out.recharge_id = claim.draft.recharge_id();
        return out;
      }
    }
    LEDGER_PREPARE(select,
                   "SELECT fingerprint, recharge_id, state, response FROM idempotency_keys"
                   " WHERE key = ?1");
    select.Text(1, claim.idempotency_key);
    absl::StatusOr<bool> row = select.Step();
    if (db.read_only() && (!row.ok() || !*row)) {  // the writer decides
      draft = claim.draft.SerializeAsString();
      return std::nullopt;
    }
    if (!row.ok()) return row.status();
    if (!*row) return absl::UnavailableError("ledger: key vanished during Begin");
    BeginResult out;
    out.recharge_id = select.ColText(1);
    if (select.ColBlobView(0) != claim.fingerprint) {
      out.kind = BeginResult::Kind::kMismatch;
    } else if (select.ColText(2) == "started") {
      out.kind = BeginResult::Kind::kInFlight;
    } else {
      out.kind = BeginResult::Kind::kReplay;
      if (!select.ParseCol(3, &out.stored)) {
        return absl::DataLossError("ledger: stored response does not parse");
      }
    }
    return out;
  };
  co_return co_await Submit<Result, Route::kReadThenWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<RecordRechargeResponse>> SqliteLedgerStore::Complete(
    Completion done) {
  // Serialized on the caller's thread; the writer only binds bytes.
  struct Rows {
    std::string key;
    std::string response;
    Recharge recharge;
    std::string record;
    std::optional<DecisionRecord> decision;
    std::string assessment;
    RecordRechargeResponse response_message;
  };
  Rows rows;
  rows.key = std::move(done.idempotency_key);
  rows.response = done.response.SerializeAsString();
  rows.record = done.recharge.SerializeAsString();
  rows.recharge = std::move(done.recharge);
  if (done.decision) rows.assessment = done.decision->assessment.SerializeAsString();
  rows.decision = std::move(done.decision);
  rows.response_message = std::move(done.response);
  auto body = [rows = std::move(rows)](Db& db) -> absl::StatusOr<RecordRechargeResponse> {
    const int64_t now = NowMicros();
    {
      LEDGER_PREPARE(update,
                     "UPDATE idempotency_keys SET state = 'completed', response = ?1,"
                     " updated_at = ?2 WHERE key = ?3 AND state = 'started'");
      LEDGER_RETURN_IF_ERROR(update.Blob(1, rows.response).Int(2, now).Text(3, rows.key).Run());
    }
    if (db.Changes() == 0) {  // completed already (recovery raced us): that one stands
      LEDGER_PREPARE(select, "SELECT response FROM idempotency_keys WHERE key = ?1");
      select.Text(1, rows.key);
      absl::StatusOr<bool> row = select.Step();
      if (!row.ok()) return row.status();
      RecordRechargeResponse stored;
      if (!*row || !select.ParseCol(0, &stored)) {
        return absl::FailedPreconditionError("ledger: key was not claimed");
      }
      return stored;
    }
    const Recharge& r = rows.recharge;
    {
      LEDGER_PREPARE(insert,
                     "INSERT INTO recharges (recharge_id, idempotency_key, user_id, status,"
                     " created_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      LEDGER_RETURN_IF_ERROR(
          insert.Text(1, r.recharge_id())
              .Text(2, rows.key)
              .Text(3, r.user_id())
              .Int(4, r.status())
              .Int(5, r.created_at().seconds() * 1'000'000 + r.created_at().nanos() / 1000)
              .Blob(6, rows.record)
              .Run());
    }
    LEDGER_RETURN_IF_ERROR(
        AppendEvent(db, recharge::v1::RECHARGE_EVENT_DECIDED, r.recharge_id(), rows.record, now));
    if (rows.decision) {
      LEDGER_PREPARE(log,
                     "INSERT INTO decision_log (recharge_id, at, inputs, assessment)"
                     " VALUES (?1, ?2, ?3, ?4)");
      LEDGER_RETURN_IF_ERROR(log.Text(1, rows.decision->recharge_id)
                                 .Int(2, now)
                                 .Text(3, rows.decision->inputs_json)
                                 .Blob(4, rows.assessment)
                                 .Run());
    }
    return rows.response_message;
  };
  co_return co_await Submit<absl::StatusOr<RecordRechargeResponse>, Route::kWrite>(std::move(body));
}

absl::StatusOr<bool> SqliteLedgerStore::MoveRecharge(Db& db, const std::string& id, const std::string& key,
                                  int status, const std::string& record,
                                  const std::string& response, int from,
                                  recharge::v1::RechargeEventType type) {
  {
    LEDGER_PREPARE(update,
                   "UPDATE recharges SET status = ?1, record = ?2"
                   " WHERE recharge_id = ?3 AND status = ?4");
    LEDGER_RETURN_IF_ERROR(update.Int(1, status).Blob(2, record).Text(3, id).Int(4, from).Run());
  }
  if (db.Changes() == 0) return false;
  const int64_t now = NowMicros();
  {
    LEDGER_PREPARE(key_update,
                   "UPDATE idempotency_keys SET response = ?1, updated_at = ?2"
                   " WHERE key = ?3");
    LEDGER_RETURN_IF_ERROR(key_update.Blob(1, response).Int(2, now).Text(3, key).Run());
  }
  LEDGER_RETURN_IF_ERROR(AppendEvent(db, type, id, record, now));
  return true;
}

asio::awaitable<absl::StatusOr<bool>> SqliteLedgerStore::Transition(
    Recharge next, RecordRechargeResponse response, recharge::v1::RechargeStatus from) {
  absl::StatusOr<recharge::v1::RechargeEventType> event = EventOf(from, next.status());
  if (!event.ok()) co_return event.status();
  auto body = [id = next.recharge_id(), key = next.idempotency_key(), status = next.status(),
               record = next.SerializeAsString(), response = response.SerializeAsString(),
               from, type = *event](Db& db) -> absl::StatusOr<bool> {
    return MoveRecharge(db, id, key, status, record, response, from, type);
  };
  co_return co_await Submit<absl::StatusOr<bool>, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<NotificationApplied>> SqliteLedgerStore::TransitionOnNotification(
    NotificationRef ref, Recharge next, RecordRechargeResponse response,
    recharge::v1::RechargeStatus from) {
  absl::StatusOr<recharge::v1::RechargeEventType> event = EventOf(from, next.status());
  if (!event.ok()) co_return event.status();
  auto body = [ref = std::move(ref), id = next.recharge_id(), key = next.idempotency_key(),
               status = next.status(), record = next.SerializeAsString(),
               response = response.SerializeAsString(), from,
               type = *event](Db& db) -> absl::StatusOr<NotificationApplied> {
    {
      LEDGER_PREPARE(insert,
                     "INSERT OR IGNORE INTO provider_notifications"
                     " (source, event_id, recharge_id, at) VALUES (?1, ?2, ?3, ?4)");
      LEDGER_RETURN_IF_ERROR(
          insert.Text(1, ref.source).Text(2, ref.event_id).Text(3, id).Int(4, NowMicros()).Run());
    }
    if (db.Changes() == 0) return NotificationApplied::kReplay;
    absl::StatusOr<bool> moved = MoveRecharge(db, id, key, status, record, response, from, type);
    if (!moved.ok()) return moved.status();
    return *moved ? NotificationApplied::kApplied : NotificationApplied::kNoChange;
  };
  co_return co_await Submit<absl::StatusOr<NotificationApplied>, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<bool>> SqliteLedgerStore::NotificationSeen(NotificationRef ref) {
  auto body = [ref = std::move(ref)](Db& db) -> absl::StatusOr<bool> {
    LEDGER_PREPARE(select,
                   "SELECT 1 FROM provider_notifications WHERE source = ?1 AND event_id = ?2");
    select.Text(1, ref.source).Text(2, ref.event_id);
    return select.Step();
  };
  co_return co_await Submit<absl::StatusOr<bool>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<RefundBegin>> SqliteLedgerStore::BeginRefund(RefundClaim claim) {
  std::string info = claim.info.SerializeAsString();
  auto body = [claim = std::move(claim), info = std::move(info)](
                  Db& db) -> absl::StatusOr<RefundBegin> {
    RefundBegin out;
    {
      LEDGER_PREPARE(by_key,
                     "SELECT fingerprint, state, answer FROM refunds WHERE idempotency_key = ?1");
      by_key.Text(1, claim.idempotency_key);
      absl::StatusOr<bool> row = by_key.Step();
      if (!row.ok()) return row.status();
      if (*row) {
        if (by_key.ColBlobView(0) != claim.fingerprint) {
          out.kind = RefundBegin::Kind::kMismatch;
        } else if (by_key.ColText(1) == "started") {
          out.kind = RefundBegin::Kind::kInFlight;
        } else {
          out.kind = RefundBegin::Kind::kReplay;
          if (!by_key.ParseCol(2, &out.recharge)) {
            return absl::DataLossError("ledger: stored refund answer does not parse");
          }
        }
        return out;
      }
    }
    {
      LEDGER_PREPARE(select, "SELECT record FROM recharges WHERE recharge_id = ?1");
      select.Text(1, claim.recharge_id);
      absl::StatusOr<bool> row = select.Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::NotFoundError(StrCat("recharge_id: no recharge \"", claim.recharge_id, "\""));
      if (!select.ParseCol(0, &out.recharge)) {
        return absl::DataLossError("ledger: stored recharge does not parse");
      }
    }
    {
      LEDGER_PREPARE(by_recharge, "SELECT state FROM refunds WHERE recharge_id = ?1");
      by_recharge.Text(1, claim.recharge_id);
      absl::StatusOr<bool> row = by_recharge.Step();
      if (!row.ok()) return row.status();
      if (*row) {
        out.kind = RefundBegin::Kind::kOtherRefund;
        out.other_done = by_recharge.ColText(0) == "completed";
        return out;
      }
    }
    if (out.recharge.status() != recharge::v1::RECHARGE_STATUS_APPROVED) {
      out.kind = RefundBegin::Kind::kNotRefundable;
      return out;
    }
    LEDGER_PREPARE(insert,
                   "INSERT INTO refunds (idempotency_key, recharge_id, fingerprint, state, info,"
                   " created_at, updated_at) VALUES (?1, ?2, ?3, 'started', ?4, ?5, ?5)");
    LEDGER_RETURN_IF_ERROR(insert.Text(1, claim.idempotency_key)
                               .Text(2, claim.recharge_id)
                               .Blob(3, claim.fingerprint)
                               .Blob(4, info)
                               .Int(5, NowMicros())
                               .Run());
    out.kind = RefundBegin::Kind::kClaimed;
    return out;
  };
  co_return co_await Submit<absl::StatusOr<RefundBegin>, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<bool>> SqliteLedgerStore::CompleteRefund(std::string idempotency_key,
                                                                        Recharge refunded) {
  absl::StatusOr<recharge::v1::RechargeEventType> event =
      EventOf(recharge::v1::RECHARGE_STATUS_APPROVED, refunded.status());
  if (!event.ok()) co_return event.status();
  auto body = [key = std::move(idempotency_key), id = refunded.recharge_id(),
               record_key = refunded.idempotency_key(), status = refunded.status(),
               record = refunded.SerializeAsString(),
               response = RefundedResponse(refunded).SerializeAsString(),
               type = *event](Db& db) -> absl::StatusOr<bool> {
    absl::StatusOr<bool> moved = MoveRecharge(db, id, record_key, status, record, response,
                                              recharge::v1::RECHARGE_STATUS_APPROVED, type);
    if (!moved.ok()) return moved.status();
    if (!*moved) {
      LEDGER_PREPARE(release,
                     "DELETE FROM refunds WHERE idempotency_key = ?1 AND state = 'started'");
      LEDGER_RETURN_IF_ERROR(release.Text(1, key).Run());
      return false;
    }
    LEDGER_PREPARE(done,
                   "UPDATE refunds SET state = 'completed', answer = ?1, updated_at = ?2"
                   " WHERE idempotency_key = ?3 AND state = 'started'");
    LEDGER_RETURN_IF_ERROR(done.Blob(1, record).Int(2, NowMicros()).Text(3, key).Run());
    // Undone with the rest of this operation: the recharge stays APPROVED.
    if (db.Changes() == 0) return absl::FailedPreconditionError("ledger: refund was not claimed");
    return true;
  };
  co_return co_await Submit<absl::StatusOr<bool>, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::Status> SqliteLedgerStore::ReleaseRefund(std::string idempotency_key) {
  auto body = [key = std::move(idempotency_key)](Db& db) -> absl::Status {
    LEDGER_PREPARE(release, "DELETE FROM refunds WHERE idempotency_key = ?1 AND state = 'started'");
    return release.Text(1, key).Run();
  };
  co_return co_await Submit<absl::Status, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<std::vector<StartedRefund>>> SqliteLedgerStore::ListStartedRefunds(
    std::chrono::system_clock::time_point started_before) {
  using Result = absl::StatusOr<std::vector<StartedRefund>>;
  auto body = [before = UnixMicros(started_before)](Db& db) -> Result {
    LEDGER_PREPARE(select,
                   "SELECT idempotency_key, recharge_id, info, created_at FROM refunds"
                   " WHERE state = 'started' AND created_at < ?1 ORDER BY created_at");
    select.Int(1, before);
    std::vector<StartedRefund> out;
    for (;;) {
      absl::StatusOr<bool> row = select.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      StartedRefund s;
      s.idempotency_key = select.ColText(0);
      s.recharge_id = select.ColText(1);
      if (!select.ParseCol(2, &s.info)) return absl::DataLossError("ledger: stored refund does not parse");
      s.started_at = std::chrono::system_clock::time_point(std::chrono::microseconds(select.ColInt(3)));
      out.push_back(std::move(s));
    }
    return out;
  };
  co_return co_await Submit<Result, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<RechargePage>> SqliteLedgerStore::ListByStatus(
    recharge::v1::RechargeStatus status, int page_size, std::optional<RechargeCursor> cursor) {
  auto body = [status, page_size, cursor](Db& db) -> absl::StatusOr<RechargePage> {
    LEDGER_PREPARE(stmt,
                   "SELECT created_at, seq, record FROM recharges WHERE status = ?1"
                   " AND (created_at > ?2 OR (created_at = ?2 AND seq > ?3))"
                   " ORDER BY created_at, seq LIMIT ?4");
    const RechargeCursor from = cursor.value_or(RechargeCursor{INT64_MIN, INT64_MIN});
    stmt.Int(1, status).Int(2, from.created_at_us).Int(3, from.seq).Int(4, page_size + 1);
    return Db::ReadPage(stmt, page_size);
  };
  co_return co_await Submit<absl::StatusOr<RechargePage>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<std::string>> SqliteLedgerStore::GetDecisionInputs(
    std::string recharge_id) {
  auto body = [id = std::move(recharge_id)](Db& db) -> absl::StatusOr<std::string> {
    LEDGER_PREPARE(select,
                   "SELECT inputs FROM decision_log WHERE recharge_id = ?1"
                   " ORDER BY seq DESC LIMIT 1");
    select.Text(1, id);
    absl::StatusOr<bool> row = select.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(StrCat("recharge_id: no decision recorded for \"", id, "\""));
    return select.ColText(0);
  };
  co_return co_await Submit<absl::StatusOr<std::string>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<BacktestTraffic>> SqliteLedgerStore::ReadBacktestTraffic(
    std::chrono::system_clock::time_point from, std::chrono::system_clock::time_point to,
    size_t max_decisions) {
  auto body = [from = UnixMicros(from), to = UnixMicros(to),
               max_decisions](Db& db) -> absl::StatusOr<BacktestTraffic> {
    Db::ReadTransaction snapshot(db);  // both lists from one snapshot
    BacktestTraffic out;
    {
      LEDGER_PREPARE(decisions,
                     "SELECT d.recharge_id, d.at, d.inputs, d.assessment, r.status, r.record"
                     " FROM decision_log d LEFT JOIN recharges r ON r.recharge_id = d.recharge_id"
                     " WHERE d.at >= ?1 AND d.at <= ?2 ORDER BY d.seq");
      decisions.Int(1, from).Int(2, to);
      for (;;) {
        absl::StatusOr<bool> row = decisions.Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        if (out.decisions.size() >= max_decisions) {
          return absl::ResourceExhaustedError(
              StrCat("more than ", max_decisions, " decisions in the period; ask for a shorter one"));
        }
        BacktestTraffic::Decision& d = out.decisions.emplace_back();
        d.recharge_id = decisions.ColText(0);
        d.recorded_at_us = decisions.ColInt(1);
        d.inputs_json = decisions.ColText(2);
        if (!decisions.ParseCol(3, &d.assessment)) {
          return absl::DataLossError("ledger: stored assessment does not parse");
        }
        if (decisions.ColInt(4) == recharge::v1::RECHARGE_STATUS_DECLINED) {
          Recharge r;
          if (decisions.ParseCol(5, &r)) {
            const std::string& code = r.payment().decline_code();
            d.declined = code != "review_rejected" && code != "review_expired";
          }
        }
      }
    }
    LEDGER_PREPARE(chargebacks,
                   "SELECT e.recharge_id, e.at, d.inputs FROM recharge_events e"
                   " JOIN decision_log d ON d.recharge_id = e.recharge_id"
                   " WHERE e.type = ?1 AND e.at >= ?2 AND e.at <= ?3 ORDER BY e.seq");
    chargebacks.Int(1, recharge::v1::RECHARGE_EVENT_CHARGED_BACK).Int(2, from).Int(3, to);
    for (;;) {
      absl::StatusOr<bool> row = chargebacks.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      out.chargebacks.push_back({chargebacks.ColText(0), chargebacks.ColInt(1), chargebacks.ColText(2)});
    }
    return out;
  };
  co_return co_await Submit<absl::StatusOr<BacktestTraffic>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<Recharge>> SqliteLedgerStore::GetRecharge(std::string id) {
  auto body = [id = std::move(id)](Db& db) -> absl::StatusOr<Recharge> {
    LEDGER_PREPARE(select, "SELECT record FROM recharges WHERE recharge_id = ?1");
    select.Text(1, id);
    absl::StatusOr<bool> row = select.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(StrCat("recharge_id: no recharge \"", id, "\""));
    Recharge r;
    if (!select.ParseCol(0, &r)) return absl::DataLossError("ledger: stored recharge does not parse");
    return r;
  };
  co_return co_await Submit<absl::StatusOr<Recharge>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<Recharge>> SqliteLedgerStore::GetRechargeByKey(std::string key) {
  auto body = [key = std::move(key)](Db& db) -> absl::StatusOr<Recharge> {
    LEDGER_PREPARE(select,
                   "SELECT k.state, r.record FROM idempotency_keys k"
                   " LEFT JOIN recharges r ON r.recharge_id = k.recharge_id WHERE k.key = ?1");
    select.Text(1, key);
    absl::StatusOr<bool> row = select.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError("idempotency_key: no recharge under this key");
    if (select.ColText(0) == "started") {
      // Claimed, its outcome not recorded yet (in flight, or left by a crash).
      return absl::UnavailableError("idempotency_key: the recharge is not recorded yet");
    }
    Recharge r;
    if (!select.ParseCol(1, &r)) return absl::DataLossError("ledger: stored recharge does not parse");
    return r;
  };
  co_return co_await Submit<absl::StatusOr<Recharge>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<RechargePage>> SqliteLedgerStore::ListRecharges(
    std::string user_id, int page_size, std::optional<RechargeCursor> cursor) {
  auto body = [user_id = std::move(user_id), page_size,
               cursor](Db& db) -> absl::StatusOr<RechargePage> {
    auto stmt_or =
        user_id.empty()
            ? db.Prepare("SELECT created_at, seq, record FROM recharges"
                         " WHERE (created_at < ?2 OR (created_at = ?2 AND seq < ?3))"
                         " ORDER BY created_at DESC, seq DESC LIMIT ?4")
            : db.Prepare("SELECT created_at, seq, record FROM recharges WHERE user_id = ?1"
                         " AND (created_at < ?2 OR (created_at = ?2 AND seq < ?3))"
                         " ORDER BY created_at DESC, seq DESC LIMIT ?4");
    if (!stmt_or.ok()) return stmt_or.status();
    Db::Stmt& stmt = *stmt_or;
    if (!user_id.empty()) stmt.Text(1, user_id);
    const RechargeCursor from = cursor.value_or(RechargeCursor{INT64_MAX, INT64_MAX});
    stmt.Int(2, from.created_at_us).Int(3, from.seq).Int(4, page_size + 1);
    return Db::ReadPage(stmt, page_size);
  };
  co_return co_await Submit<absl::StatusOr<RechargePage>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>> SqliteLedgerStore::ListUnresolved(
    std::chrono::system_clock::time_point started_before) {
  using Result = absl::StatusOr<std::vector<UnresolvedRecharge>>;
  const int64_t before = UnixMicros(started_before);
  auto body = [before](Db& db) -> Result {
    Db::ReadTransaction snapshot(db);  // both lists from one snapshot
    std::vector<UnresolvedRecharge> out;
    {
      LEDGER_PREPARE(started,
                     "SELECT key, draft FROM idempotency_keys WHERE state = 'started'"
                     " AND created_at < ?1 ORDER BY created_at");
      started.Int(1, before);
      for (;;) {
        absl::StatusOr<bool> row = started.Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        UnresolvedRecharge& u = out.emplace_back();
        u.idempotency_key = started.ColText(0);
        u.started = true;
        if (!started.ParseCol(1, &u.recharge)) {
          return absl::DataLossError("ledger: stored draft does not parse");
        }
      }
    }
    LEDGER_PREPARE(pending,
                   "SELECT idempotency_key, record FROM recharges WHERE status IN (6, 9)"
                   " ORDER BY seq");
    for (;;) {
      absl::StatusOr<bool> row = pending.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      UnresolvedRecharge& u = out.emplace_back();
      u.idempotency_key = pending.ColText(0);
      if (!pending.ParseCol(1, &u.recharge)) {
        return absl::DataLossError("ledger: stored recharge does not parse");
      }
    }
    return out;
  };
  co_return co_await Submit<Result, Route::kRead>(std::move(body));
}

asio::awaitable<absl::Status> SqliteLedgerStore::AppendAudit(recharge::v1::AuditEvent event) {
  auto body = [event = std::move(event)](Db& db) -> absl::Status {
    LEDGER_PREPARE(insert,
                   "INSERT INTO audit_log (at, caller, rpc, target, note, outcome, detail)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    const int64_t at = event.at().seconds() * 1'000'000 + event.at().nanos() / 1000;
    return insert.Int(1, at > 0 ? at : NowMicros())
        .Text(2, event.caller())
        .Text(3, event.rpc())
        .Text(4, event.target())
        .Text(5, event.note())
        .Text(6, event.outcome())
        .Text(7, event.detail())
        .Run();
  };
  co_return co_await Submit<absl::Status, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<AuditPage>> SqliteLedgerStore::ListAudit(
    int page_size, std::optional<int64_t> before_seq) {
  auto body =
      [page_size, before_seq](Db& db) -> absl::StatusOr<AuditPage> {
        LEDGER_PREPARE(stmt,
                       "SELECT seq, at, caller, rpc, target, note, outcome, detail FROM audit_log"
                       " WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2");
        stmt.Int(1, before_seq.value_or(INT64_MAX)).Int(2, page_size + 1);
        AuditPage page;
        for (;;) {
          absl::StatusOr<bool> row = stmt.Step();
          if (!row.ok()) return row.status();
          if (!*row) break;
          if (static_cast<int>(page.events.size()) == page_size) {
            page.next_before_seq = page.events.back().seq();
            break;
          }
          recharge::v1::AuditEvent& e = page.events.emplace_back();
          e.set_seq(stmt.ColInt(0));
          const int64_t at = stmt.ColInt(1);
          e.mutable_at()->set_seconds(at / 1'000'000);
          e.mutable_at()->set_nanos(static_cast<int32_t>(at % 1'000'000) * 1000);
          e.set_caller(stmt.ColText(2));
          e.set_rpc(stmt.ColText(3));
          e.set_target(stmt.ColText(4));
          e.set_note(stmt.ColText(5));
          e.set_outcome(stmt.ColText(6));
          e.set_detail(stmt.ColText(7));
        }
        return page;
      };
  co_return co_await Submit<absl::StatusOr<AuditPage>, Route::kRead>(std::move(body));
}

absl::StatusOr<int64_t> SqliteLedgerStore::PurgedThrough(Db& db) {
  LEDGER_PREPARE(select, "SELECT value FROM ledger_meta WHERE name = 'events_purged_through'");
  absl::StatusOr<bool> row = select.Step();
  if (!row.ok()) return row.status();
  return *row ? select.ColInt(0) : 0;
}

absl::StatusOr<int64_t> SqliteLedgerStore::LatestSeq(Db& db) {
  absl::StatusOr<int64_t> purged = PurgedThrough(db);
  if (!purged.ok()) return purged.status();
  LEDGER_PREPARE(select, "SELECT max(seq) FROM recharge_events");
  absl::StatusOr<bool> row = select.Step();
  if (!row.ok()) return row.status();
  return std::max(*purged, *row ? select.ColInt(0) : 0);
}

asio::awaitable<absl::StatusOr<std::vector<FeedEvent>>> SqliteLedgerStore::ListEvents(
    std::optional<int64_t> after, int limit) {
  using Result = absl::StatusOr<std::vector<FeedEvent>>;
  auto body = [after, limit](Db& db) -> Result {
    Db::ReadTransaction snapshot(db);  // the bounds and the rows agree
    absl::StatusOr<int64_t> purged = PurgedThrough(db);
    if (!purged.ok()) return purged.status();
    const int64_t after_seq = after.value_or(*purged);
    if (after_seq < *purged) {
      return absl::OutOfRangeError(
          "after_cursor: events after it have expired (retention); start again from the oldest "
          "retained event (empty after_cursor) or from now");
    }
    LEDGER_PREPARE(select,
                   "SELECT seq, at, type, record FROM recharge_events WHERE seq > ?1"
                   " ORDER BY seq LIMIT ?2");
    select.Int(1, after_seq).Int(2, limit);
    std::vector<FeedEvent> out;
    for (;;) {
      absl::StatusOr<bool> row = select.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      FeedEvent& e = out.emplace_back();
      e.seq = select.ColInt(0);
      const int64_t at = select.ColInt(1);
      e.event.mutable_at()->set_seconds(at / 1'000'000);
      e.event.mutable_at()->set_nanos(static_cast<int32_t>(at % 1'000'000) * 1000);
      e.event.set_type(static_cast<recharge::v1::RechargeEventType>(select.ColInt(2)));
      if (!select.ParseCol(3, e.event.mutable_recharge())) {
        return absl::DataLossError("ledger: stored event does not parse");
      }
      e.event.set_coins_delta(CoinsDelta(e.event.type(), e.event.recharge()));
    }
    if (out.empty()) {
      absl::StatusOr<int64_t> latest = LatestSeq(db);
      if (!latest.ok()) return latest.status();
      if (after_seq > *latest) {
        return absl::OutOfRangeError("after_cursor: newer than any event of this ledger");
      }
    }
    return out;
  };
  co_return co_await Submit<Result, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<int64_t>> SqliteLedgerStore::LatestEventSeq() {
  auto body = [](Db& db) -> absl::StatusOr<int64_t> {
    Db::ReadTransaction snapshot(db);
    return LatestSeq(db);
  };
  co_return co_await Submit<absl::StatusOr<int64_t>, Route::kRead>(std::move(body));
}

asio::awaitable<absl::StatusOr<int64_t>> SqliteLedgerStore::PurgeEvents(
    std::chrono::system_clock::time_point before) {
  const int64_t cutoff = UnixMicros(before);
  auto body = [cutoff](Db& db) -> absl::StatusOr<int64_t> {
    // The newest purged seq is kept, so that a cursor before it is told it
    // lost events rather than silently skipping them.
    LEDGER_PREPARE(mark,
                   "INSERT INTO ledger_meta (name, value)"
                   " SELECT 'events_purged_through', max(seq) FROM recharge_events WHERE at < ?1"
                   " HAVING max(seq) IS NOT NULL"
                   " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)");
    LEDGER_RETURN_IF_ERROR(mark.Int(1, cutoff).Run());
    LEDGER_PREPARE(purge, "DELETE FROM recharge_events WHERE at < ?1");
    LEDGER_RETURN_IF_ERROR(purge.Int(1, cutoff).Run());
    return db.Changes();
  };
  co_return co_await Submit<absl::StatusOr<int64_t>, Route::kWrite>(std::move(body));
}

asio::awaitable<absl::StatusOr<int64_t>> SqliteLedgerStore::PurgeKeys(
    std::chrono::system_clock::time_point before) {
  const int64_t cutoff = UnixMicros(before);
  auto body =
      [cutoff](Db& db) -> absl::StatusOr<int64_t> {
        // A key whose recharge is still PENDING or REQUIRES_ACTION is kept:
        // forgetting it would let a retry charge a second time (and a card
        // notification finds its recharge by the key).
        LEDGER_PREPARE(purge,
                       "DELETE FROM idempotency_keys WHERE state = 'completed'"
                       " AND created_at < ?1 AND recharge_id NOT IN"
                       " (SELECT recharge_id FROM recharges WHERE status IN (6, 9))");
        LEDGER_RETURN_IF_ERROR(purge.Int(1, cutoff).Run());
        return db.Changes();
      };
  co_return co_await Submit<absl::StatusOr<int64_t>, Route::kWrite>(std::move(body));
}

}  // namespace recharge
