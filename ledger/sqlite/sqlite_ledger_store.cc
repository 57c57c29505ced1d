#include "ledger/sqlite/sqlite_ledger_store.h"

#include <sqlite3.h>

#include <unordered_map>

#include "io/strings.h"

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
CREATE INDEX IF NOT EXISTS recharges_pending ON recharges (status) WHERE status = 6;
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
)sql";

int64_t UnixMicros(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

int64_t NowMicros() { return UnixMicros(std::chrono::system_clock::now()); }

}  // namespace

// The connection and its cached statements. Used only on the writer thread.
class SqliteLedgerStore::Db {
 public:
  // A cached prepared statement, reset when this wrapper goes out of scope.
  class Stmt {
   public:
    Stmt(Db& db, sqlite3_stmt* s) : db_(db), s_(s) {}
    ~Stmt() {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& Text(int i, std::string_view v) {
      sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
      return *this;
    }
    Stmt& Blob(int i, std::string_view v) {
      sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
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
      return db_.Error("step");
    }
    absl::Status Run() {
      absl::StatusOr<bool> r = Step();
      return r.status();
    }
    std::string ColText(int c) {
      const unsigned char* p = sqlite3_column_text(s_, c);
      return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : "";
    }
    std::string ColBlob(int c) {
      const void* p = sqlite3_column_blob(s_, c);
      return p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : "";
    }
    int64_t ColInt(int c) { return sqlite3_column_int64(s_, c); }

   private:
    Db& db_;
    sqlite3_stmt* s_;
  };

  explicit Db(sqlite3* db) : db_(db) {}
  ~Db() {
    for (auto& [sql, s] : cache_) sqlite3_finalize(s);
    sqlite3_close(db_);
  }

  absl::Status Error(std::string_view what) const {
    return absl::UnavailableError(StrCat("ledger: ", what, ": ", sqlite3_errmsg(db_)));
  }

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
  absl::StatusOr<std::unique_ptr<Stmt>> Prepare(const char* sql) {
    sqlite3_stmt*& s = cache_[sql];
    if (s == nullptr &&
        sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      s = nullptr;
      return Error("prepare");
    }
    return std::make_unique<Stmt>(*this, s);
  }

  int64_t Changes() const { return sqlite3_changes64(db_); }

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
      if (!page.recharges.emplace_back().ParseFromString(stmt.ColBlob(2))) {
        return absl::DataLossError("ledger: stored recharge does not parse");
      }
    }
    return page;
  }

 private:
  sqlite3* db_;
  std::unordered_map<const char*, sqlite3_stmt*> cache_;
};

#define LEDGER_PREPARE(var, sql)                        \
  auto var##_or = db.Prepare(sql);                      \
  if (!var##_or.ok()) return var##_or.status();         \
  Db::Stmt& var = **var##_or

#define LEDGER_RETURN_IF_ERROR(expr)          \
  do {                                        \
    absl::Status _s = (expr);                 \
    if (!_s.ok()) return _s;                  \
  } while (0)

namespace {
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& r) {
  return r.status();
}
[[maybe_unused]] absl::Status StatusOf(const absl::Status& s) { return s; }
}  // namespace

SqliteLedgerStore::SqliteLedgerStore(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<SqliteLedgerStore>> SqliteLedgerStore::Open(Options options) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close(raw);
    return absl::UnavailableError(
        StrCat("ledger: cannot open \"", options.path, "\": ", msg));
  }
  auto db = std::make_unique<Db>(raw);
  sqlite3_busy_timeout(raw, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             "PRAGMA foreign_keys=ON"}) {
    if (absl::Status s = db->Exec(pragma); !s.ok()) {
      return absl::UnavailableError(StrCat("ledger \"", options.path, "\": ", s.message()));
    }
  }
  if (absl::Status s = db->Exec(kSchema); !s.ok()) {
    return absl::UnavailableError(StrCat("ledger \"", options.path, "\": ", s.message()));
  }
  std::unique_ptr<SqliteLedgerStore> store(new SqliteLedgerStore(std::move(options)));
  store->db_ = std::move(db);
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  return store;
}

SqliteLedgerStore::~SqliteLedgerStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

uint64_t SqliteLedgerStore::commits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return commits_;
}

void SqliteLedgerStore::Enqueue(Op op) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void SqliteLedgerStore::WriterLoop() {
  std::vector<Op> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued is done
      while (!queue_.empty() && batch.size() < options_.group_commit_max) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    absl::Status commit = db_->Exec("BEGIN IMMEDIATE");
    if (commit.ok()) {
      for (Op& op : batch) {
        absl::Status s = db_->Exec("SAVEPOINT op");
        if (s.ok()) {
          s = op.run(*db_);
          if (!s.ok()) s = db_->Exec("ROLLBACK TO op");
          if (s.ok()) s = db_->Exec("RELEASE op");
        }
        if (!s.ok()) {
          commit = s;
          break;
        }
      }
      if (commit.ok()) commit = db_->Exec("COMMIT");
      if (!commit.ok()) (void)db_->Exec("ROLLBACK");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++commits_;
    }
    for (Op& op : batch) op.done(commit);
    batch.clear();
  }
}

template <typename R>
asio::awaitable<R> SqliteLedgerStore::Submit(std::function<R(Db&)> body) {
  auto initiation = [this](auto handler, std::function<R(Db&)> body) {
    using Handler = decltype(handler);
    struct State {
      explicit State(Handler h) : handler(std::move(h)) {}
      Handler handler;
      std::optional<R> result;
    };
    auto state = std::make_shared<State>(std::move(handler));
    Op op;
    op.run = [state, body = std::move(body)](Db& db) {
      state->result.emplace(body(db));
      return StatusOf(*state->result);
    };
    op.done = [state](absl::Status commit) {
      if (!commit.ok() || !state->result) state->result.emplace(commit.ok() ? absl::UnavailableError("ledger: not run") : commit);
      auto ex = asio::get_associated_executor(state->handler);
      asio::post(ex, [state]() mutable { std::move(state->handler)(std::move(*state->result)); });
    };
    Enqueue(std::move(op));
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      initiation, asio::use_awaitable, std::move(body));
}

asio::awaitable<absl::StatusOr<BeginResult>> SqliteLedgerStore::Begin(KeyClaim claim) {
  std::function<absl::StatusOr<BeginResult>(Db&)> body =
      [claim = std::move(claim)](Db& db) -> absl::StatusOr<BeginResult> {
        const int64_t now = NowMicros();
        {
          LEDGER_PREPARE(insert,
                         "INSERT INTO idempotency_keys (key, fingerprint, recharge_id, state, draft,"
                         " created_at, updated_at) VALUES (?1, ?2, ?3, 'started', ?4, ?5, ?5)"
                         " ON CONFLICT (key) DO NOTHING");
          LEDGER_RETURN_IF_ERROR(insert.Text(1, claim.idempotency_key)
                                     .Blob(2, claim.fingerprint)
                                     .Text(3, claim.draft.recharge_id())
                                     .Blob(4, claim.draft.SerializeAsString())
                                     .Int(5, now)
                                     .Run());
        }
        BeginResult out;
        if (db.Changes() == 1) {
          out.kind = BeginResult::Kind::kClaimed;
          out.recharge_id = claim.draft.recharge_id();
          return out;
        }
        LEDGER_PREPARE(select,
                       "SELECT fingerprint, recharge_id, state, response FROM idempotency_keys"
                       " WHERE key = ?1");
        select.Text(1, claim.idempotency_key);
        absl::StatusOr<bool> row = select.Step();
        if (!row.ok()) return row.status();
        if (!*row) return absl::UnavailableError("ledger: key vanished during Begin");
        out.recharge_id = select.ColText(1);
        if (select.ColBlob(0) != claim.fingerprint) {
          out.kind = BeginResult::Kind::kMismatch;
        } else if (select.ColText(2) == "started") {
          out.kind = BeginResult::Kind::kInFlight;
        } else {
          out.kind = BeginResult::Kind::kReplay;
          if (!out.stored.ParseFromString(select.ColBlob(3))) {
            return absl::DataLossError("ledger: stored response does not parse");
          }
        }
        return out;
      };
  co_return co_await Submit<absl::StatusOr<BeginResult>>(std::move(body));
}

asio::awaitable<absl::StatusOr<RecordRechargeResponse>> SqliteLedgerStore::Complete(
    Completion done) {
  std::function<absl::StatusOr<RecordRechargeResponse>(Db&)> body =
      [done = std::move(done)](Db& db) -> absl::StatusOr<RecordRechargeResponse> {
        const int64_t now = NowMicros();
        {
          LEDGER_PREPARE(update,
                         "UPDATE idempotency_keys SET state = 'completed', response = ?1,"
                         " updated_at = ?2 WHERE key = ?3 AND state = 'started'");
          LEDGER_RETURN_IF_ERROR(update.Blob(1, done.response.SerializeAsString())
                                     .Int(2, now)
                                     .Text(3, done.idempotency_key)
                                     .Run());
        }
        if (db.Changes() == 0) {  // completed already (recovery raced us): that one stands
          LEDGER_PREPARE(select, "SELECT response FROM idempotency_keys WHERE key = ?1");
          select.Text(1, done.idempotency_key);
          absl::StatusOr<bool> row = select.Step();
          if (!row.ok()) return row.status();
          RecordRechargeResponse stored;
          if (!*row || !stored.ParseFromString(select.ColBlob(0))) {
            return absl::FailedPreconditionError("ledger: key was not claimed");
          }
          return stored;
        }
        const Recharge& r = done.recharge;
        {
          LEDGER_PREPARE(insert,
                         "INSERT INTO recharges (recharge_id, idempotency_key, user_id, status,"
                         " created_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
          LEDGER_RETURN_IF_ERROR(
              insert.Text(1, r.recharge_id())
                  .Text(2, done.idempotency_key)
                  .Text(3, r.user_id())
                  .Int(4, r.status())
                  .Int(5, r.created_at().seconds() * 1'000'000 + r.created_at().nanos() / 1000)
                  .Blob(6, r.SerializeAsString())
                  .Run());
        }
        if (done.decision) {
          LEDGER_PREPARE(log,
                         "INSERT INTO decision_log (recharge_id, at, inputs, assessment)"
                         " VALUES (?1, ?2, ?3, ?4)");
          LEDGER_RETURN_IF_ERROR(log.Text(1, done.decision->recharge_id)
                                     .Int(2, now)
                                     .Text(3, done.decision->inputs_json)
                                     .Blob(4, done.decision->assessment.SerializeAsString())
                                     .Run());
        }
        return done.response;
      };
  co_return co_await Submit<absl::StatusOr<RecordRechargeResponse>>(std::move(body));
}

asio::awaitable<absl::StatusOr<bool>> SqliteLedgerStore::Transition(
    Recharge next, RecordRechargeResponse response, recharge::v1::RechargeStatus from) {
  std::function<absl::StatusOr<bool>(Db&)> body =
      [next = std::move(next), response = std::move(response),
       from](Db& db) -> absl::StatusOr<bool> {
        {
          LEDGER_PREPARE(update,
                         "UPDATE recharges SET status = ?1, record = ?2"
                         " WHERE recharge_id = ?3 AND status = ?4");
          LEDGER_RETURN_IF_ERROR(update.Int(1, next.status())
                                     .Blob(2, next.SerializeAsString())
                                     .Text(3, next.recharge_id())
                                     .Int(4, from)
                                     .Run());
        }
        if (db.Changes() == 0) return false;
        LEDGER_PREPARE(key,
                       "UPDATE idempotency_keys SET response = ?1, updated_at = ?2"
                       " WHERE key = ?3");
        LEDGER_RETURN_IF_ERROR(key.Blob(1, response.SerializeAsString())
                                   .Int(2, NowMicros())
                                   .Text(3, next.idempotency_key())
                                   .Run());
        return true;
      };
  co_return co_await Submit<absl::StatusOr<bool>>(std::move(body));
}

asio::awaitable<absl::StatusOr<RechargePage>> SqliteLedgerStore::ListByStatus(
    recharge::v1::RechargeStatus status, int page_size, std::optional<RechargeCursor> cursor) {
  std::function<absl::StatusOr<RechargePage>(Db&)> body =
      [status, page_size, cursor](Db& db) -> absl::StatusOr<RechargePage> {
        LEDGER_PREPARE(stmt,
                       "SELECT created_at, seq, record FROM recharges WHERE status = ?1"
                       " AND (created_at > ?2 OR (created_at = ?2 AND seq > ?3))"
                       " ORDER BY created_at, seq LIMIT ?4");
        const RechargeCursor from = cursor.value_or(RechargeCursor{INT64_MIN, INT64_MIN});
        stmt.Int(1, status).Int(2, from.created_at_us).Int(3, from.seq).Int(4, page_size + 1);
        return Db::ReadPage(stmt, page_size);
      };
  co_return co_await Submit<absl::StatusOr<RechargePage>>(std::move(body));
}

asio::awaitable<absl::StatusOr<std::string>> SqliteLedgerStore::GetDecisionInputs(
    std::string recharge_id) {
  std::function<absl::StatusOr<std::string>(Db&)> body =
      [id = std::move(recharge_id)](Db& db) -> absl::StatusOr<std::string> {
        LEDGER_PREPARE(select,
                       "SELECT inputs FROM decision_log WHERE recharge_id = ?1"
                       " ORDER BY seq DESC LIMIT 1");
        select.Text(1, id);
        absl::StatusOr<bool> row = select.Step();
        if (!row.ok()) return row.status();
        if (!*row) return absl::NotFoundError(StrCat("recharge_id: no decision recorded for \"", id, "\""));
        return select.ColText(0);
      };
  co_return co_await Submit<absl::StatusOr<std::string>>(std::move(body));
}

asio::awaitable<absl::StatusOr<Recharge>> SqliteLedgerStore::GetRecharge(std::string id) {
  std::function<absl::StatusOr<Recharge>(Db&)> body =
      [id = std::move(id)](Db& db) -> absl::StatusOr<Recharge> {
        LEDGER_PREPARE(select, "SELECT record FROM recharges WHERE recharge_id = ?1");
        select.Text(1, id);
        absl::StatusOr<bool> row = select.Step();
        if (!row.ok()) return row.status();
        if (!*row) return absl::NotFoundError(StrCat("recharge_id: no recharge \"", id, "\""));
        Recharge r;
        if (!r.ParseFromString(select.ColBlob(0))) {
          return absl::DataLossError("ledger: stored recharge does not parse");
        }
        return r;
      };
  co_return co_await Submit<absl::StatusOr<Recharge>>(std::move(body));
}

asio::awaitable<absl::StatusOr<RechargePage>> SqliteLedgerStore::ListRecharges(
    std::string user_id, int page_size, std::optional<RechargeCursor> cursor) {
  std::function<absl::StatusOr<RechargePage>(Db&)> body =
      [user_id = std::move(user_id), page_size,
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
        Db::Stmt& stmt = **stmt_or;
        if (!user_id.empty()) stmt.Text(1, user_id);
        const RechargeCursor from = cursor.value_or(RechargeCursor{INT64_MAX, INT64_MAX});
        stmt.Int(2, from.created_at_us).Int(3, from.seq).Int(4, page_size + 1);
        return Db::ReadPage(stmt, page_size);
      };
  co_return co_await Submit<absl::StatusOr<RechargePage>>(std::move(body));
}

asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>> SqliteLedgerStore::ListUnresolved(
    std::chrono::system_clock::time_point started_before) {
  const int64_t before = UnixMicros(started_before);
  std::function<absl::StatusOr<std::vector<UnresolvedRecharge>>(Db&)> body =
      [before](Db& db) -> absl::StatusOr<std::vector<UnresolvedRecharge>> {
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
            if (!u.recharge.ParseFromString(started.ColBlob(1))) {
              return absl::DataLossError("ledger: stored draft does not parse");
            }
          }
        }
        LEDGER_PREPARE(pending,
                       "SELECT idempotency_key, record FROM recharges WHERE status = 6"
                       " ORDER BY seq");
        for (;;) {
          absl::StatusOr<bool> row = pending.Step();
          if (!row.ok()) return row.status();
          if (!*row) break;
          UnresolvedRecharge& u = out.emplace_back();
          u.idempotency_key = pending.ColText(0);
          if (!u.recharge.ParseFromString(pending.ColBlob(1))) {
            return absl::DataLossError("ledger: stored recharge does not parse");
          }
        }
        return out;
      };
  co_return co_await Submit<absl::StatusOr<std::vector<UnresolvedRecharge>>>(std::move(body));
}

asio::awaitable<absl::Status> SqliteLedgerStore::AppendAudit(recharge::v1::AuditEvent event) {
  std::function<absl::Status(Db&)> body = [event = std::move(event)](Db& db) -> absl::Status {
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
  co_return co_await Submit<absl::Status>(std::move(body));
}

asio::awaitable<absl::StatusOr<AuditPage>> SqliteLedgerStore::ListAudit(
    int page_size, std::optional<int64_t> before_seq) {
  std::function<absl::StatusOr<AuditPage>(Db&)> body =
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
  co_return co_await Submit<absl::StatusOr<AuditPage>>(std::move(body));
}

asio::awaitable<absl::StatusOr<int64_t>> SqliteLedgerStore::PurgeKeys(
    std::chrono::system_clock::time_point before) {
  const int64_t cutoff = UnixMicros(before);
  std::function<absl::StatusOr<int64_t>(Db&)> body =
      [cutoff](Db& db) -> absl::StatusOr<int64_t> {
        // A key whose recharge is still PENDING is kept: forgetting it would
        // let a retry charge a second time.
        LEDGER_PREPARE(purge,
                       "DELETE FROM idempotency_keys WHERE state = 'completed'"
                       " AND created_at < ?1 AND recharge_id NOT IN"
                       " (SELECT recharge_id FROM recharges WHERE status = 6)");
        LEDGER_RETURN_IF_ERROR(purge.Int(1, cutoff).Run());
        return db.Changes();
      };
  co_return co_await Submit<absl::StatusOr<int64_t>>(std::move(body));
}

}  // namespace recharge
