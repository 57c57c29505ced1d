#include "ledger/postgres/postgres_ledger_store.h"

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <mutex>
#include <optional>
#include <utility>

#include <boost/asio/redirect_error.hpp>

#include "io/async_semaphore.h"
#include "io/gateway_metrics.h"
#include "io/strings.h"
#include "ledger/lifecycle.h"
#include "ledger/postgres/pg_connection.h"

namespace recharge {
namespace {

using Clock = std::chrono::steady_clock;

// The lock every replica's write transaction takes first (an arbitrary
// 64-bit number; "ledger" in ASCII), and the one migrations take.
constexpr int64_t kWriteLock = 0x6c6564676572;
constexpr int64_t kMigrationLock = 0x6c6564676573;

// The migrations, in order. A released one is never edited: a change is a
// new one. Statuses are the proto's numbers (PENDING = 6, REQUIRES_ACTION =
// 9, APPROVED = 1...), as in the SQLite schema. Free text from callers
// (audit fields, providers' event ids) is bytea: PostgreSQL text cannot
// hold a NUL, and the ledger must never refuse a record for its text.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE idempotency_keys (
  key          text PRIMARY KEY,
  fingerprint  bytea NOT NULL,
  recharge_id  text NOT NULL,
  state        text NOT NULL CHECK (state IN ('started', 'completed')),
  draft        bytea NOT NULL,      -- recharge.v1.Recharge known at start, no secrets
  response     bytea,               -- recharge.v1.RecordRechargeResponse once completed
  created_at   bigint NOT NULL,     -- unix microseconds
  updated_at   bigint NOT NULL
);
CREATE INDEX idempotency_keys_started ON idempotency_keys (created_at) WHERE state = 'started';
CREATE TABLE recharges (
  seq              bigserial PRIMARY KEY,
  recharge_id      text NOT NULL UNIQUE,
  idempotency_key  text NOT NULL,
  user_id          text NOT NULL,
  status           integer NOT NULL,
  created_at       bigint NOT NULL,
  record           bytea NOT NULL    -- recharge.v1.Recharge
);
CREATE INDEX recharges_user ON recharges (user_id, created_at, seq);
CREATE INDEX recharges_created ON recharges (created_at, seq);
CREATE INDEX recharges_unresolved ON recharges (status) WHERE status IN (6, 9);
CREATE INDEX recharges_status ON recharges (status, created_at, seq);
CREATE TABLE decision_log (
  seq          bigserial PRIMARY KEY,
  recharge_id  text NOT NULL,
  at           bigint NOT NULL,
  inputs       text NOT NULL,       -- JSON of the rule inputs
  assessment   bytea NOT NULL       -- recharge.v1.FraudAssessment
);
CREATE INDEX decision_log_recharge ON decision_log (recharge_id);
CREATE INDEX decision_log_at ON decision_log (at);
CREATE TABLE audit_log (
  seq      bigserial PRIMARY KEY,
  at       bigint NOT NULL,
  caller   bytea NOT NULL,
  rpc      bytea NOT NULL,
  target   bytea NOT NULL,
  note     bytea NOT NULL,
  outcome  bytea NOT NULL,
  detail   bytea NOT NULL
);
-- The outbox of the event feed. Every write transaction holds the ledger
-- lock, so seq order is commit order across replicas.
CREATE TABLE recharge_events (
  seq          bigserial PRIMARY KEY,
  at           bigint NOT NULL,
  type         integer NOT NULL,
  recharge_id  text NOT NULL,
  record       bytea NOT NULL
);
CREATE INDEX recharge_events_at ON recharge_events (at);
CREATE INDEX recharge_events_type_at ON recharge_events (type, at);
CREATE TABLE refunds (
  idempotency_key  text PRIMARY KEY,
  recharge_id      text NOT NULL UNIQUE,
  fingerprint      bytea NOT NULL,
  state            text NOT NULL CHECK (state IN ('started', 'completed')),
  info             bytea NOT NULL,
  answer           bytea,
  created_at       bigint NOT NULL,
  updated_at       bigint NOT NULL
);
CREATE INDEX refunds_started ON refunds (created_at) WHERE state = 'started';
CREATE TABLE provider_notifications (
  source       bytea NOT NULL,
  event_id     bytea NOT NULL,
  recharge_id  text NOT NULL,
  at           bigint NOT NULL,
  PRIMARY KEY (source, event_id)
);
CREATE TABLE ledger_meta (
  name   text PRIMARY KEY,
  value  bigint NOT NULL
);

-- Begin(): 0 claimed, 1 replay (o_response), 2 mismatch, 3 in flight.
CREATE FUNCTION ledger_begin(p_key text, p_fingerprint bytea, p_recharge_id text, p_draft bytea,
                             p_now bigint, OUT o_kind integer, OUT o_recharge_id text,
                             OUT o_response bytea)
LANGUAGE plpgsql AS $$
DECLARE
  k idempotency_keys%ROWTYPE;
BEGIN
  INSERT INTO idempotency_keys (key, fingerprint, recharge_id, state, draft, created_at, updated_at)
    VALUES (p_key, p_fingerprint, p_recharge_id, 'started', p_draft, p_now, p_now)
    ON CONFLICT (key) DO NOTHING;
  IF FOUND THEN
    o_kind := 0;
    o_recharge_id := p_recharge_id;
    RETURN;
  END IF;
  SELECT * INTO k FROM idempotency_keys WHERE key = p_key;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'key vanished during Begin';
  END IF;
  o_recharge_id := k.recharge_id;
  IF k.fingerprint <> p_fingerprint THEN
    o_kind := 2;
  ELSIF k.state = 'started' THEN
    o_kind := 3;
  ELSE
    o_kind := 1;
    o_response := k.response;
  END IF;
END $$;

-- Complete(): 0 stored, 1 completed before (o_response stands), 2 never claimed.
CREATE FUNCTION ledger_complete(p_key text, p_response bytea, p_recharge_id text, p_user_id text,
                                p_status integer, p_created_at bigint, p_record bytea,
                                p_event_type integer, p_decision_recharge_id text, p_inputs text,
                                p_assessment bytea, p_now bigint,
                                OUT o_kind integer, OUT o_response bytea)
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE idempotency_keys SET state = 'completed', response = p_response, updated_at = p_now
    WHERE key = p_key AND state = 'started';
  IF NOT FOUND THEN
    SELECT response INTO o_response FROM idempotency_keys WHERE key = p_key;
    o_kind := CASE WHEN o_response IS NULL THEN 2 ELSE 1 END;
    RETURN;
  END IF;
  INSERT INTO recharges (recharge_id, idempotency_key, user_id, status, created_at, record)
    VALUES (p_recharge_id, p_key, p_user_id, p_status, p_created_at, p_record);
  INSERT INTO recharge_events (at, type, recharge_id, record)
    VALUES (p_now, p_event_type, p_recharge_id, p_record);
  IF p_decision_recharge_id IS NOT NULL THEN
    INSERT INTO decision_log (recharge_id, at, inputs, assessment)
      VALUES (p_decision_recharge_id, p_now, p_inputs, p_assessment);
  END IF;
  o_kind := 0;
END $$;

-- A recharge in p_from moves to p_status, its key's stored response with
-- it, and the change's event is appended; false (nothing written) if it
-- was not in p_from.
CREATE FUNCTION ledger_move(p_id text, p_key text, p_status integer, p_record bytea,
                            p_response bytea, p_from integer, p_event_type integer, p_now bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  UPDATE recharges SET status = p_status, record = p_record
    WHERE recharge_id = p_id AND status = p_from;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  UPDATE idempotency_keys SET response = p_response, updated_at = p_now WHERE key = p_key;
  INSERT INTO recharge_events (at, type, recharge_id, record)
    VALUES (p_now, p_event_type, p_id, p_record);
  RETURN true;
END $$;

-- TransitionOnNotification(): 0 applied, 1 replay, 2 recorded, no change.
CREATE FUNCTION ledger_notification(p_source bytea, p_event_id bytea, p_id text, p_key text,
                                    p_status integer, p_record bytea, p_response bytea,
                                    p_from integer, p_event_type integer, p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO provider_notifications (source, event_id, recharge_id, at)
    VALUES (p_source, p_event_id, p_id, p_now) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RETURN 1;
  END IF;
  IF ledger_move(p_id, p_key, p_status, p_record, p_response, p_from, p_event_type, p_now) THEN
    RETURN 0;
  END IF;
  RETURN 2;
END $$;

-- BeginRefund(): 0 claimed, 1 replay (o_recharge = the answer), 2 mismatch,
-- 3 in flight, 4 another refund (o_other_done), 5 not refundable,
-- 6 no such recharge. o_recharge is the recharge now for 0, 4 and 5.
CREATE FUNCTION ledger_begin_refund(p_key text, p_recharge_id text, p_fingerprint bytea,
                                    p_info bytea, p_approved integer, p_now bigint,
                                    OUT o_kind integer, OUT o_recharge bytea,
                                    OUT o_other_done boolean)
LANGUAGE plpgsql AS $$
DECLARE
  f refunds%ROWTYPE;
  r recharges%ROWTYPE;
BEGIN
  o_other_done := false;
  SELECT * INTO f FROM refunds WHERE idempotency_key = p_key;
  IF FOUND THEN
    IF f.fingerprint <> p_fingerprint THEN
      o_kind := 2;
    ELSIF f.state = 'started' THEN
      o_kind := 3;
    ELSE
      o_kind := 1;
      o_recharge := f.answer;
    END IF;
    RETURN;
  END IF;
  SELECT * INTO r FROM recharges WHERE recharge_id = p_recharge_id;
  IF NOT FOUND THEN
    o_kind := 6;
    RETURN;
  END IF;
  o_recharge := r.record;
  SELECT * INTO f FROM refunds WHERE recharge_id = p_recharge_id;
  IF FOUND THEN
    o_kind := 4;
    o_other_done := f.state = 'completed';
    RETURN;
  END IF;
  IF r.status <> p_approved THEN
    o_kind := 5;
    RETURN;
  END IF;
  INSERT INTO refunds (idempotency_key, recharge_id, fingerprint, state, info, created_at, updated_at)
    VALUES (p_key, p_recharge_id, p_fingerprint, 'started', p_info, p_now, p_now);
  o_kind := 0;
END $$;

-- CompleteRefund(): 1 refunded, 0 the recharge is no longer APPROVED (a
-- started claim is released), 2 it is APPROVED but the key holds no
-- started claim (nothing written).
CREATE FUNCTION ledger_complete_refund(p_key text, p_id text, p_record_key text, p_status integer,
                                       p_record bytea, p_response bytea, p_approved integer,
                                       p_event_type integer, p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM refunds WHERE idempotency_key = p_key AND state = 'started';
  IF NOT FOUND THEN
    PERFORM 1 FROM recharges WHERE recharge_id = p_id AND status = p_approved;
    IF FOUND THEN
      RETURN 2;
    END IF;
    RETURN 0;
  END IF;
  IF NOT ledger_move(p_id, p_record_key, p_status, p_record, p_response, p_approved,
                     p_event_type, p_now) THEN
    DELETE FROM refunds WHERE idempotency_key = p_key AND state = 'started';
    RETURN 0;
  END IF;
  UPDATE refunds SET state = 'completed', answer = p_record, updated_at = p_now
    WHERE idempotency_key = p_key AND state = 'started';
  RETURN 1;
END $$;

-- PurgeEvents(): the newest purged seq is kept, so that a cursor before it
-- is told it lost events rather than silently skipping them.
CREATE FUNCTION ledger_purge_events(p_cutoff bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  INSERT INTO ledger_meta (name, value)
    SELECT 'events_purged_through', max(seq) FROM recharge_events WHERE at < p_cutoff
    HAVING max(seq) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET value = greatest(ledger_meta.value, excluded.value);
  DELETE FROM recharge_events WHERE at < p_cutoff;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
)sql"},
};

int64_t UnixMicros(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

int64_t NowMicros() { return UnixMicros(std::chrono::system_clock::now()); }

int64_t MicrosOf(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000 + t.nanos() / 1000;
}

void SetMicros(int64_t us, google::protobuf::Timestamp* t) {
  t->set_seconds(us / 1'000'000);
  t->set_nanos(static_cast<int32_t>(us % 1'000'000) * 1000);
}

// What a replay of the RecordRecharge key of a refunded recharge answers.
RecordRechargeResponse RefundedResponse(const Recharge& r) {
  RecordRechargeResponse out;
  out.set_recharge_id(r.recharge_id());
  out.set_status(r.status());
  *out.mutable_fraud() = r.fraud();
  *out.mutable_payment() = r.payment();
  return out;
}

absl::Status StatementError(const PgResult& r) {
  return absl::UnavailableError(StrCat("ledger: ", r.error()));
}

template <typename M>
bool Parse(std::string_view bytes, M* m) {
  return m->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

// A page of recharges from rows (created_at, seq, record) asked for
// page_size + 1: the extra row only tells that there is a next page.
absl::StatusOr<RechargePage> ReadPage(const PgResult& r, int page_size) {
  RechargePage page;
  RechargeCursor last;
  for (int i = 0; i < r.rows(); ++i) {
    if (static_cast<int>(page.recharges.size()) == page_size) {
      page.next_cursor = last;
      break;
    }
    last = RechargeCursor{r.integer(i, 0), r.integer(i, 1)};
    if (!Parse(r.bytes(i, 2), &page.recharges.emplace_back())) {
      return absl::DataLossError("ledger: stored recharge does not parse");
    }
  }
  return page;
}

// Closes a transaction left open by a failed statement. (A named vector:
// GCC 12 miscompiles a braced list inside a co_await expression.)
std::vector<PgStatement> Rollback() {
  std::vector<PgStatement> s;
  s.push_back(PgStatement{"ROLLBACK", {}});
  return s;
}

// A conninfo value, quoted for libpq ('...' with \ and ' escaped).
std::string Quoted(std::string_view v) {
  std::string out = "'";
  for (const char c : v) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

// ---------------------------------------------------------------------------
// Core: connections, the pool, the writer.

class PostgresLedgerStore::Core : public std::enable_shared_from_this<Core> {
 public:
  Core(asio::any_io_executor executor, Options options)
      : executor_(std::move(executor)),
        options_(std::move(options)),
        conninfo_(options_.password.empty()
                      ? options_.conninfo
                      : StrCat(options_.conninfo, " password=", Quoted(options_.password))),
        readers_(std::make_shared<AsyncSemaphore>(
            static_cast<size_t>(std::max(1, options_.read_connections)))),
        writer_strand_(asio::make_strand(executor_)),
        wake_(writer_strand_) {
    backoff_ = options_.reconnect_min;
  }

  Clock::time_point Deadline() const { return Clock::now() + options_.timeout; }

  // A new connection, or UNAVAILABLE at once while the backoff after a
  // failed attempt runs.
  asio::awaitable<absl::StatusOr<std::shared_ptr<PgConnection>>> Connect() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Clock::time_point now = Clock::now();
      if (now < next_attempt_) {
        co_return absl::UnavailableError(StrCat(
            last_connect_error_, " (next attempt in ",
            std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now).count(),
            " ms)"));
      }
    }
    absl::StatusOr<std::shared_ptr<PgConnection>> c =
        co_await PgConnection::Connect(conninfo_, Deadline());
    if (c.ok()) {
      // A writer that a stalled peer keeps waiting on the ledger lock is
      // cut short; nothing of ours is ever idle inside a transaction.
      absl::StatusOr<PgResult> set = co_await (*c)->Exec(
          StrCat("SET lock_timeout = ", options_.timeout.count(),
                 "; SET idle_in_transaction_session_timeout = ", 2 * options_.timeout.count(),
                 "; SET client_min_messages = warning"),
          Deadline());
      if (!set.ok()) c = set.status();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (c.ok()) {
      backoff_ = options_.reconnect_min;
      next_attempt_ = {};
    } else {
      Metrics().ledger_errors.With({}).Inc();
      last_connect_error_ = std::string(c.status().message());
      next_attempt_ = Clock::now() + backoff_;
      backoff_ = std::min(options_.reconnect_max, backoff_ * 2);
    }
    co_return c;
  }

  // ---- reads ---------------------------------------------------------------

  // Runs `statements` on a pooled connection (in one REPEATABLE READ
  // snapshot when `snapshot`) and gives their results to `parse`.
  template <typename R, typename ParseFn>
  asio::awaitable<R> Read(std::vector<PgStatement> statements, bool snapshot, ParseFn parse) {
    std::shared_ptr<Core> self = shared_from_this();
    const Clock::time_point deadline = Deadline();
    const AsyncSemaphore::Wait wait = co_await readers_->Acquire(deadline);
    if (wait != AsyncSemaphore::Wait::kGranted) {
      co_return R(absl::UnavailableError("ledger: no connection free in time"));
    }
    std::shared_ptr<PgConnection> conn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (conn == nullptr) {
      absl::StatusOr<std::shared_ptr<PgConnection>> made = co_await Connect();
      if (!made.ok()) {
        readers_->Release();
        co_return R(made.status());
      }
      conn = *std::move(made);
    }
    const size_t first = snapshot ? 1 : 0;
    if (snapshot) {
      statements.insert(statements.begin(),
                        PgStatement{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {}});
      statements.push_back(PgStatement{"COMMIT", {}});
    }
    const size_t count = statements.size() - (snapshot ? 2 : 0);
    absl::StatusOr<std::vector<PgResult>> results = co_await conn->Run(std::move(statements), deadline);
    std::optional<R> out;
    if (!results.ok()) {
      out.emplace(results.status());
    } else {
      for (PgResult& r : *results) {
        if (!r.ok()) {
          out.emplace(StatementError(r));
          break;
        }
      }
      if (!out) {
        std::vector<PgResult> mine;
        for (size_t i = first; i < first + count; ++i) mine.push_back(std::move((*results)[i]));
        out.emplace(parse(mine));
      } else if (snapshot) {
        // A failed statement left the transaction open and aborted.
        absl::StatusOr<std::vector<PgResult>> rollback = co_await conn->Run(Rollback(), Deadline());
        if (!rollback.ok()) conn.reset();
      }
    }
    if (!results.ok()) Metrics().ledger_errors.With({}).Inc();
    if (conn != nullptr && !conn->broken()) {
      std::lock_guard<std::mutex> lock(mu_);
      idle_.push_back(std::move(conn));
    }
    readers_->Release();
    co_return *std::move(out);
  }

  // One statement, its result parsed by `parse(const PgResult&)`.
  template <typename R, typename ParseFn>
  asio::awaitable<R> ReadOne(PgStatement statement, ParseFn parse) {
    auto all = [parse = std::move(parse)](std::vector<PgResult>& results) -> R {
      return parse(results[0]);
    };
    std::vector<PgStatement> statements;
    statements.push_back(std::move(statement));
    co_return co_await Read<R>(std::move(statements), /*snapshot=*/false, std::move(all));
  }

  // ---- writes --------------------------------------------------------------

  class Op {
   public:
    virtual ~Op() = default;
    const PgStatement& statement() const { return statement_; }
    // The statement's result, in a transaction that then committed.
    virtual void Finish(const PgResult& result) = 0;
    virtual void Fail(const absl::Status& error) = 0;
    // On the caller's executor: resumes the caller, then deletes this.
    virtual void Resume() = 0;

   protected:
    PgStatement statement_;
  };

  template <typename R, typename ParseFn, typename Handler>
  class OpImpl final : public Op {
   public:
    OpImpl(PgStatement statement, ParseFn parse, Handler handler)
        : parse_(std::move(parse)), handler_(std::move(handler)) {
      statement_ = std::move(statement);
    }
    void Finish(const PgResult& result) override {
      result_.emplace(result.ok() ? parse_(result) : R(StatementError(result)));
    }
    void Fail(const absl::Status& error) override { result_.emplace(error); }
    void Resume() override {
      asio::any_io_executor ex = asio::get_associated_executor(handler_);
      asio::post(ex, [self = std::unique_ptr<OpImpl>(this)]() mutable {
        R result = self->result_ ? *std::move(self->result_)
                                 : R(absl::UnavailableError("ledger: not run"));
        Handler handler = std::move(self->handler_);
        self.reset();
        std::move(handler)(std::move(result));
      });
    }

   private:
    ParseFn parse_;
    Handler handler_;
    std::optional<R> result_;
  };

  // Queues one write; the caller is resumed after its transaction.
  template <typename R, typename ParseFn>
  asio::awaitable<R> Write(PgStatement statement, ParseFn parse) {
    auto initiation = [self = shared_from_this()](auto handler, PgStatement statement,
                                                  ParseFn parse) {
      using Handler = decltype(handler);
      Op* op = new OpImpl<R, ParseFn, Handler>(std::move(statement), std::move(parse),
                                                std::move(handler));
      self->Push(op);
    };
    co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
        initiation, asio::use_awaitable, std::move(statement), std::move(parse));
  }

  void Push(Op* op) {
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        op->Fail(absl::UnavailableError("ledger: closing"));
        op->Resume();
        return;
      }
      queue_.push_back(op);
      wake = writer_waiting_;
      writer_waiting_ = false;
    }
    if (wake) asio::post(writer_strand_, [self = shared_from_this()] { self->wake_.cancel(); });
  }

  void Stop() {
    std::vector<Op*> left;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      left.swap(queue_);
    }
    for (Op* op : left) {
      op->Fail(absl::UnavailableError("ledger: closing"));
      op->Resume();
    }
    asio::post(writer_strand_, [self = shared_from_this()] { self->wake_.cancel(); });
    readers_->Close();
  }

  void StartWriter() {
    asio::co_spawn(writer_strand_, WriterLoop(shared_from_this()), asio::detached);
  }

  static asio::awaitable<void> WriterLoop(std::shared_ptr<Core> self) {
    std::vector<Op*> batch;
    std::shared_ptr<PgConnection> conn;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        if (self->stopping_) break;
        const size_t max = std::max<size_t>(1, self->options_.group_commit_max);
        if (self->queue_.size() <= max) {
          batch.swap(self->queue_);
        } else {
          batch.assign(self->queue_.begin(), self->queue_.begin() + static_cast<ptrdiff_t>(max));
          self->queue_.erase(self->queue_.begin(), self->queue_.begin() + static_cast<ptrdiff_t>(max));
        }
        if (batch.empty()) self->writer_waiting_ = true;
      }
      if (batch.empty()) {
        self->wake_.expires_at(Clock::time_point::max());
        boost::system::error_code ec;
        co_await self->wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      const auto started = Clock::now();
      co_await self->RunBatch(batch, conn);
      Metrics().ledger_commit_seconds.With({}).Observe(
          std::chrono::duration<double>(Clock::now() - started).count());
      for (Op* op : batch) op->Resume();
      batch.clear();
    }
  }

  // Runs `batch` as one transaction (again one write per transaction if a
  // write fails), finishing or failing every op.
  asio::awaitable<void> RunBatch(std::vector<Op*>& batch, std::shared_ptr<PgConnection>& conn) {
    if (conn == nullptr || conn->broken()) {
      conn.reset();
      absl::StatusOr<std::shared_ptr<PgConnection>> made = co_await Connect();
      if (!made.ok()) {
        for (Op* op : batch) op->Fail(made.status());
        co_return;
      }
      conn = *std::move(made);
    }
    absl::Status failed = co_await RunTransaction(batch.data(), batch.size(), *conn);
    if (failed.ok()) co_return;
    if (absl::IsAborted(failed)) reruns_.fetch_add(1, std::memory_order_relaxed);
    if (batch.size() == 1 || !absl::IsAborted(failed)) {
      // Not run, or its outcome unknown: every write of the batch says so
      // (the one that failed alone has its own error already).
      for (Op* op : batch) {
        if (!absl::IsAborted(failed)) op->Fail(failed);
      }
      co_return;
    }
    // One write failed and took its batch down: again, one per transaction.
    for (size_t i = 0; i < batch.size(); ++i) {
      Op* op = batch[i];
      absl::Status s = co_await RunTransaction(&op, 1, *conn);
      if (s.ok() || absl::IsAborted(s)) continue;  // committed, or failed on its own
      op->Fail(s);
      if (conn->broken()) {
        for (size_t j = i + 1; j < batch.size(); ++j) {
          batch[j]->Fail(absl::UnavailableError("ledger: connection lost before this write was sent"));
        }
        break;
      }
    }
  }

  // BEGIN; the ledger lock; each op's statement; COMMIT. OK: committed and
  // every op finished. ABORTED: a write failed (its op is finished with its
  // error, the others not run; the transaction rolled back). Anything else:
  // the transaction failed or its outcome is unknown; no op finished.
  asio::awaitable<absl::Status> RunTransaction(Op* const* ops, size_t n, PgConnection& conn) {
    std::vector<PgStatement> statements;
    statements.reserve(n + 3);
    statements.push_back(PgStatement{"BEGIN", {}});
    statements.push_back(
        PgStatement{"SELECT pg_advisory_xact_lock($1)", {PgParam::Int8(kWriteLock)}});
    for (size_t i = 0; i < n; ++i) statements.push_back(ops[i]->statement());
    statements.push_back(PgStatement{"COMMIT", {}});
    absl::StatusOr<std::vector<PgResult>> results = co_await conn.Run(std::move(statements), Deadline());
    if (!results.ok()) {
      Metrics().ledger_errors.With({}).Inc();
      co_return results.status();
    }
    std::vector<PgResult>& r = *results;
    std::optional<size_t> bad;
    for (size_t i = 0; i < n; ++i) {
      if (!r[i + 2].ok() && !r[i + 2].aborted()) {
        bad = i;
        break;
      }
    }
    if (r[0].ok() && r[1].ok() && !bad && r[n + 2].ok()) {
      commits_.fetch_add(1, std::memory_order_relaxed);
      for (size_t i = 0; i < n; ++i) ops[i]->Finish(r[i + 2]);
      co_return absl::OkStatus();
    }
    Metrics().ledger_errors.With({}).Inc();
    // The transaction is open and failed: close it before the next one.
    absl::StatusOr<std::vector<PgResult>> rollback = co_await conn.Run(Rollback(), Deadline());
    (void)rollback;  // a connection it fails on is broken, and made again
    if (bad) {
      ops[*bad]->Finish(r[*bad + 2]);
      co_return absl::AbortedError(StatementError(r[*bad + 2]).message());
    }
    const PgResult& first_failed = !r[0].ok() ? r[0] : !r[1].ok() ? r[1] : r[n + 2];
    co_return StatementError(first_failed);
  }

  uint64_t commits() const { return commits_.load(std::memory_order_relaxed); }
  uint64_t reruns() const { return reruns_.load(std::memory_order_relaxed); }
  const Options& options() const { return options_; }
  asio::any_io_executor executor() const { return executor_; }

 private:
  asio::any_io_executor executor_;
  const Options options_;
  const std::string conninfo_;  // with the password: never logged

  std::mutex mu_;
  // Reconnect backoff; guarded by mu_.
  Clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_;
  std::string last_connect_error_;
  // The read pool: slots, and the idle connections; idle_ guarded by mu_.
  std::shared_ptr<AsyncSemaphore> readers_;
  std::vector<std::shared_ptr<PgConnection>> idle_;
  // The writer's queue; guarded by mu_.
  std::vector<Op*> queue_;
  bool writer_waiting_ = false;
  bool stopping_ = false;

  asio::strand<asio::any_io_executor> writer_strand_;
  asio::steady_timer wake_;  // on writer_strand_: cancelled to wake the writer
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> reruns_{0};
};

// ---------------------------------------------------------------------------

int PostgresLedgerStore::SchemaVersion() { return std::end(kMigrations)[-1].version; }

asio::awaitable<absl::StatusOr<std::unique_ptr<PostgresLedgerStore>>> PostgresLedgerStore::Open(
    asio::any_io_executor executor, Options options) {
  auto core = std::make_shared<Core>(executor, std::move(options));
  absl::StatusOr<std::shared_ptr<PgConnection>> conn = co_await core->Connect();
  if (!conn.ok()) co_return conn.status();
  PgConnection& c = **conn;
  const Clock::time_point deadline = Clock::now() + std::max(core->options().timeout,
                                                             std::chrono::milliseconds(30'000));
  // One transaction under a lock: replicas starting together migrate once.
  absl::StatusOr<PgResult> begun = co_await c.Exec(
      StrCat("BEGIN; SELECT pg_advisory_xact_lock(", kMigrationLock,
             "); CREATE TABLE IF NOT EXISTS schema_migrations ("
             "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); "
             "SELECT coalesce(max(version), 0)::int8 FROM schema_migrations"),
      deadline);
  if (!begun.ok()) co_return begun.status();
  // Exec's results are text: the version is parsed from it.
  const int64_t current = std::atoll(std::string(begun->bytes(0, 0)).c_str());
  if (current > SchemaVersion()) {
    co_return absl::FailedPreconditionError(
        StrCat("ledger: postgres ", c.name(), ": schema version ", current,
               " is newer than this build's (", SchemaVersion(), "); run a newer gateway"));
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= current) continue;
    absl::StatusOr<PgResult> applied = co_await c.Exec(
        StrCat(m.sql, "; INSERT INTO schema_migrations (version) VALUES (", m.version, ")"),
        deadline);
    if (!applied.ok()) {
      co_return absl::UnavailableError(
          StrCat("ledger: migration ", m.version, " failed: ", applied.status().message()));
    }
  }
  absl::StatusOr<PgResult> committed = co_await c.Exec("COMMIT", deadline);
  if (!committed.ok()) co_return committed.status();
  core->StartWriter();
  co_return std::unique_ptr<PostgresLedgerStore>(new PostgresLedgerStore(std::move(core)));
}

PostgresLedgerStore::~PostgresLedgerStore() { core_->Stop(); }

uint64_t PostgresLedgerStore::commits() const { return core_->commits(); }
uint64_t PostgresLedgerStore::batch_reruns() const { return core_->reruns(); }

// ---------------------------------------------------------------------------
// The operations.

asio::awaitable<absl::StatusOr<BeginResult>> PostgresLedgerStore::Begin(KeyClaim claim) {
  using Result = absl::StatusOr<BeginResult>;
  std::shared_ptr<Core> core = core_;
  // A reader answers a key that exists; a new one goes to the writer.
  auto read = [&claim](std::vector<PgResult>& r) -> absl::StatusOr<std::optional<BeginResult>> {
    const PgResult& row = r[0];
    if (row.rows() == 0) return std::optional<BeginResult>();
    BeginResult out;
    out.recharge_id = row.text(0, 1);
    if (row.bytes(0, 0) != claim.fingerprint) {
      out.kind = BeginResult::Kind::kMismatch;
    } else if (row.bytes(0, 2) == "started") {
      out.kind = BeginResult::Kind::kInFlight;
    } else {
      out.kind = BeginResult::Kind::kReplay;
      if (!Parse(row.bytes(0, 3), &out.stored)) {
        return absl::DataLossError("ledger: stored response does not parse");
      }
    }
    return std::optional<BeginResult>(std::move(out));
  };
  std::vector<PgStatement> lookup;
  lookup.push_back(PgStatement{
      "SELECT fingerprint, recharge_id, state, response FROM idempotency_keys WHERE key = $1",
      {PgParam::Text(claim.idempotency_key)}});
  absl::StatusOr<std::optional<BeginResult>> seen =
      co_await core->Read<absl::StatusOr<std::optional<BeginResult>>>(std::move(lookup), false,
                                                                      read);
  if (!seen.ok()) co_return seen.status();
  if (*seen) co_return **seen;

  PgStatement claim_it{
      "SELECT o_kind, o_recharge_id, o_response FROM ledger_begin($1, $2, $3, $4, $5)",
      {PgParam::Text(claim.idempotency_key), PgParam::Bytes(claim.fingerprint),
       PgParam::Text(claim.draft.recharge_id()), PgParam::Bytes(claim.draft.SerializeAsString()),
       PgParam::Int8(NowMicros())}};
  auto parse = [](const PgResult& r) -> Result {
    BeginResult out;
    out.recharge_id = r.text(0, 1);
    // ledger_begin's o_kind, as BeginRefund's table below.
    static constexpr BeginResult::Kind kKinds[] = {
        BeginResult::Kind::kClaimed, BeginResult::Kind::kReplay, BeginResult::Kind::kMismatch,
        BeginResult::Kind::kInFlight};
    const int64_t kind = r.integer(0, 0);
    if (kind < 0 || kind > 3) return absl::InternalError("ledger: unknown key claim answer");
    out.kind = kKinds[kind];
    if (out.kind == BeginResult::Kind::kReplay && !Parse(r.bytes(0, 2), &out.stored)) {
      return absl::DataLossError("ledger: stored response does not parse");
    }
    return out;
  };
  co_return co_await core->Write<Result>(std::move(claim_it), parse);
}

asio::awaitable<absl::StatusOr<RecordRechargeResponse>> PostgresLedgerStore::Complete(
    Completion done) {
  using Result = absl::StatusOr<RecordRechargeResponse>;
  const Recharge& r = done.recharge;
  const std::string record = r.SerializeAsString();
  PgStatement statement{
      "SELECT o_kind, o_response FROM ledger_complete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
      " $11, $12)",
      {PgParam::Text(done.idempotency_key), PgParam::Bytes(done.response.SerializeAsString()),
       PgParam::Text(r.recharge_id()), PgParam::Text(r.user_id()), PgParam::Int4(r.status()),
       PgParam::Int8(MicrosOf(r.created_at())), PgParam::Bytes(record),
       PgParam::Int4(recharge::v1::RECHARGE_EVENT_DECIDED),
       done.decision ? PgParam::Text(done.decision->recharge_id) : PgParam::Null(),
       done.decision ? PgParam::Text(done.decision->inputs_json) : PgParam::Null(),
       done.decision ? PgParam::Bytes(done.decision->assessment.SerializeAsString())
                     : PgParam::Null(),
       PgParam::Int8(NowMicros())}};
  auto parse = [response = std::move(done.response)](const PgResult& row) -> Result {
    switch (row.integer(0, 0)) {
      case 0: return response;
      case 1: {
        RecordRechargeResponse stored;
        if (!Parse(row.bytes(0, 1), &stored)) {
          return absl::DataLossError("ledger: stored response does not parse");
        }
        return stored;
      }
      default: return absl::FailedPreconditionError("ledger: key was not claimed");
    }
  };
  co_return co_await core_->Write<Result>(std::move(statement), std::move(parse));
}

asio::awaitable<absl::StatusOr<bool>> PostgresLedgerStore::Transition(
    Recharge next, RecordRechargeResponse response, recharge::v1::RechargeStatus from) {
  absl::StatusOr<recharge::v1::RechargeEventType> event = EventOf(from, next.status());
  if (!event.ok()) co_return event.status();
  PgStatement statement{
      "SELECT ledger_move($1, $2, $3, $4, $5, $6, $7, $8)",
      {PgParam::Text(next.recharge_id()), PgParam::Text(next.idempotency_key()),
       PgParam::Int4(next.status()), PgParam::Bytes(next.SerializeAsString()),
       PgParam::Bytes(response.SerializeAsString()), PgParam::Int4(from), PgParam::Int4(*event),
       PgParam::Int8(NowMicros())}};
  auto parse = [](const PgResult& r) -> absl::StatusOr<bool> { return r.boolean(0, 0); };
  co_return co_await core_->Write<absl::StatusOr<bool>>(std::move(statement), parse);
}

asio::awaitable<absl::StatusOr<NotificationApplied>> PostgresLedgerStore::TransitionOnNotification(
    NotificationRef ref, Recharge next, RecordRechargeResponse response,
    recharge::v1::RechargeStatus from) {
  absl::StatusOr<recharge::v1::RechargeEventType> event = EventOf(from, next.status());
  if (!event.ok()) co_return event.status();
  PgStatement statement{
      "SELECT ledger_notification($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
      {PgParam::Bytes(ref.source), PgParam::Bytes(ref.event_id), PgParam::Text(next.recharge_id()),
       PgParam::Text(next.idempotency_key()), PgParam::Int4(next.status()),
       PgParam::Bytes(next.SerializeAsString()), PgParam::Bytes(response.SerializeAsString()),
       PgParam::Int4(from), PgParam::Int4(*event), PgParam::Int8(NowMicros())}};
  auto parse = [](const PgResult& r) -> absl::StatusOr<NotificationApplied> {
    switch (r.integer(0, 0)) {
      case 0: return NotificationApplied::kApplied;
      case 1: return NotificationApplied::kReplay;
      default: return NotificationApplied::kNoChange;
    }
  };
  co_return co_await core_->Write<absl::StatusOr<NotificationApplied>>(std::move(statement), parse);
}

asio::awaitable<absl::StatusOr<bool>> PostgresLedgerStore::NotificationSeen(NotificationRef ref) {
  auto parse = [](const PgResult& r) -> absl::StatusOr<bool> { return r.rows() > 0; };
  PgStatement statement{"SELECT 1 FROM provider_notifications WHERE source = $1 AND event_id = $2",
                  {PgParam::Bytes(ref.source), PgParam::Bytes(ref.event_id)}};
  co_return co_await core_->ReadOne<absl::StatusOr<bool>>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<RefundBegin>> PostgresLedgerStore::BeginRefund(RefundClaim claim) {
  PgStatement statement{
      "SELECT o_kind, o_recharge, o_other_done FROM ledger_begin_refund($1, $2, $3, $4, $5, $6)",
      {PgParam::Text(claim.idempotency_key), PgParam::Text(claim.recharge_id),
       PgParam::Bytes(claim.fingerprint), PgParam::Bytes(claim.info.SerializeAsString()),
       PgParam::Int4(recharge::v1::RECHARGE_STATUS_APPROVED), PgParam::Int8(NowMicros())}};
  auto parse = [id = claim.recharge_id](const PgResult& r) -> absl::StatusOr<RefundBegin> {
    RefundBegin out;
    const int64_t kind = r.integer(0, 0);
    if (kind == 6) return absl::NotFoundError(StrCat("recharge_id: no recharge \"", id, "\""));
    static constexpr RefundBegin::Kind kKinds[] = {
        RefundBegin::Kind::kClaimed,     RefundBegin::Kind::kReplay,
        RefundBegin::Kind::kMismatch,    RefundBegin::Kind::kInFlight,
        RefundBegin::Kind::kOtherRefund, RefundBegin::Kind::kNotRefundable};
    if (kind < 0 || kind > 5) return absl::InternalError("ledger: unknown refund claim answer");
    out.kind = kKinds[kind];
    out.other_done = r.boolean(0, 2);
    if (!r.null(0, 1) && !Parse(r.bytes(0, 1), &out.recharge)) {
      return absl::DataLossError(out.kind == RefundBegin::Kind::kReplay
                                     ? "ledger: stored refund answer does not parse"
                                     : "ledger: stored recharge does not parse");
    }
    return out;
  };
  co_return co_await core_->Write<absl::StatusOr<RefundBegin>>(std::move(statement),
                                                                std::move(parse));
}

asio::awaitable<absl::StatusOr<bool>> PostgresLedgerStore::CompleteRefund(
    std::string idempotency_key, Recharge refunded) {
  absl::StatusOr<recharge::v1::RechargeEventType> event =
      EventOf(recharge::v1::RECHARGE_STATUS_APPROVED, refunded.status());
  if (!event.ok()) co_return event.status();
  PgStatement statement{
      "SELECT ledger_complete_refund($1, $2, $3, $4, $5, $6, $7, $8, $9)",
      {PgParam::Text(idempotency_key), PgParam::Text(refunded.recharge_id()),
       PgParam::Text(refunded.idempotency_key()), PgParam::Int4(refunded.status()),
       PgParam::Bytes(refunded.SerializeAsString()),
       PgParam::Bytes(RefundedResponse(refunded).SerializeAsString()),
       PgParam::Int4(recharge::v1::RECHARGE_STATUS_APPROVED), PgParam::Int4(*event),
       PgParam::Int8(NowMicros())}};
  auto parse = [](const PgResult& r) -> absl::StatusOr<bool> {
    switch (r.integer(0, 0)) {
      case 1: return true;
      case 0: return false;
      default: return absl::FailedPreconditionError("ledger: refund was not claimed");
    }
  };
  co_return co_await core_->Write<absl::StatusOr<bool>>(std::move(statement), parse);
}

asio::awaitable<absl::Status> PostgresLedgerStore::ReleaseRefund(std::string idempotency_key) {
  auto parse = [](const PgResult&) -> absl::Status { return absl::OkStatus(); };
  PgStatement statement{"DELETE FROM refunds WHERE idempotency_key = $1 AND state = 'started'",
                  {PgParam::Text(idempotency_key)}};
  co_return co_await core_->Write<absl::Status>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<std::vector<StartedRefund>>> PostgresLedgerStore::ListStartedRefunds(
    std::chrono::system_clock::time_point started_before) {
  using Result = absl::StatusOr<std::vector<StartedRefund>>;
  auto parse = [](const PgResult& r) -> Result {
    std::vector<StartedRefund> out;
    for (int i = 0; i < r.rows(); ++i) {
      StartedRefund& s = out.emplace_back();
      s.idempotency_key = r.text(i, 0);
      s.recharge_id = r.text(i, 1);
      if (!Parse(r.bytes(i, 2), &s.info)) return absl::DataLossError("ledger: stored refund does not parse");
      s.started_at = std::chrono::system_clock::time_point(std::chrono::microseconds(r.integer(i, 3)));
    }
    return out;
  };
  PgStatement statement{"SELECT idempotency_key, recharge_id, info, created_at FROM refunds"
                  " WHERE state = 'started' AND created_at < $1 ORDER BY created_at",
                  {PgParam::Int8(UnixMicros(started_before))}};
  co_return co_await core_->ReadOne<Result>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<RechargePage>> PostgresLedgerStore::ListByStatus(
    recharge::v1::RechargeStatus status, int page_size, std::optional<RechargeCursor> cursor) {
  const RechargeCursor from = cursor.value_or(RechargeCursor{INT64_MIN, INT64_MIN});
  auto parse = [page_size](const PgResult& r) { return ReadPage(r, page_size); };
  PgStatement statement{"SELECT created_at, seq, record FROM recharges WHERE status = $1"
                  " AND (created_at > $2 OR (created_at = $2 AND seq > $3))"
                  " ORDER BY created_at, seq LIMIT $4",
                  {PgParam::Int4(status), PgParam::Int8(from.created_at_us), PgParam::Int8(from.seq),
                   PgParam::Int8(page_size + 1)}};
  co_return co_await core_->ReadOne<absl::StatusOr<RechargePage>>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<std::string>> PostgresLedgerStore::GetDecisionInputs(
    std::string recharge_id) {
  auto parse = [id = recharge_id](const PgResult& r) -> absl::StatusOr<std::string> {
    if (r.rows() == 0) {
      return absl::NotFoundError(StrCat("recharge_id: no decision recorded for \"", id, "\""));
    }
    return r.text(0, 0);
  };
  PgStatement statement{"SELECT inputs FROM decision_log WHERE recharge_id = $1"
                  " ORDER BY seq DESC LIMIT 1",
                  {PgParam::Text(recharge_id)}};
  co_return co_await core_->ReadOne<absl::StatusOr<std::string>>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<BacktestTraffic>> PostgresLedgerStore::ReadBacktestTraffic(
    std::chrono::system_clock::time_point from, std::chrono::system_clock::time_point to,
    size_t max_decisions) {
  std::vector<PgStatement> statements;
  // One row past the limit tells that the period holds too many.
  statements.push_back(PgStatement{
      "SELECT d.recharge_id, d.at, d.inputs, d.assessment, r.status, r.record"
      " FROM decision_log d LEFT JOIN recharges r ON r.recharge_id = d.recharge_id"
      " WHERE d.at >= $1 AND d.at <= $2 ORDER BY d.seq LIMIT $3",
      {PgParam::Int8(UnixMicros(from)), PgParam::Int8(UnixMicros(to)),
       PgParam::Int8(static_cast<int64_t>(std::min<size_t>(max_decisions, INT64_MAX - 1)) + 1)}});
  statements.push_back(PgStatement{
      "SELECT e.recharge_id, e.at, d.inputs FROM recharge_events e"
      " JOIN decision_log d ON d.recharge_id = e.recharge_id"
      " WHERE e.type = $1 AND e.at >= $2 AND e.at <= $3 ORDER BY e.seq",
      {PgParam::Int4(recharge::v1::RECHARGE_EVENT_CHARGED_BACK), PgParam::Int8(UnixMicros(from)),
       PgParam::Int8(UnixMicros(to))}});
  auto parse = [max_decisions](std::vector<PgResult>& r) -> absl::StatusOr<BacktestTraffic> {
    BacktestTraffic out;
    const PgResult& d = r[0];
    if (static_cast<size_t>(d.rows()) > max_decisions) {
      return absl::ResourceExhaustedError(
          StrCat("more than ", max_decisions, " decisions in the period; ask for a shorter one"));
    }
    for (int i = 0; i < d.rows(); ++i) {
      BacktestTraffic::Decision& x = out.decisions.emplace_back();
      x.recharge_id = d.text(i, 0);
      x.recorded_at_us = d.integer(i, 1);
      x.inputs_json = d.text(i, 2);
      if (!Parse(d.bytes(i, 3), &x.assessment)) {
        return absl::DataLossError("ledger: stored assessment does not parse");
      }
      if (!d.null(i, 4) && d.integer(i, 4) == recharge::v1::RECHARGE_STATUS_DECLINED) {
        Recharge rec;
        if (Parse(d.bytes(i, 5), &rec)) {
          const std::string& code = rec.payment().decline_code();
          x.declined = code != "review_rejected" && code != "review_expired";
        }
      }
    }
    const PgResult& c = r[1];
    for (int i = 0; i < c.rows(); ++i) {
      out.chargebacks.push_back({c.text(i, 0), c.integer(i, 1), c.text(i, 2)});
    }
    return out;
  };
  co_return co_await core_->Read<absl::StatusOr<BacktestTraffic>>(std::move(statements),
                                                                   /*snapshot=*/true, parse);
}

asio::awaitable<absl::StatusOr<Recharge>> PostgresLedgerStore::GetRecharge(std::string id) {
  auto parse = [id](const PgResult& r) -> absl::StatusOr<Recharge> {
    if (r.rows() == 0) return absl::NotFoundError(StrCat("recharge_id: no recharge \"", id, "\""));
    Recharge out;
    if (!Parse(r.bytes(0, 0), &out)) return absl::DataLossError("ledger: stored recharge does not parse");
    return out;
  };
  PgStatement statement{"SELECT record FROM recharges WHERE recharge_id = $1", {PgParam::Text(id)}};
  co_return co_await core_->ReadOne<absl::StatusOr<Recharge>>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<Recharge>> PostgresLedgerStore::GetRechargeByKey(std::string key) {
  auto parse = [](const PgResult& r) -> absl::StatusOr<Recharge> {
    if (r.rows() == 0) return absl::NotFoundError("idempotency_key: no recharge under this key");
    if (r.bytes(0, 0) == "started") {
      // Claimed, its outcome not recorded yet (in flight, or left by a crash).
      return absl::UnavailableError("idempotency_key: the recharge is not recorded yet");
    }
    Recharge out;
    if (!Parse(r.bytes(0, 1), &out)) return absl::DataLossError("ledger: stored recharge does not parse");
    return out;
  };
  PgStatement statement{"SELECT k.state, r.record FROM idempotency_keys k"
                  " LEFT JOIN recharges r ON r.recharge_id = k.recharge_id WHERE k.key = $1",
                  {PgParam::Text(key)}};
  co_return co_await core_->ReadOne<absl::StatusOr<Recharge>>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<RechargePage>> PostgresLedgerStore::ListRecharges(
    std::string user_id, int page_size, std::optional<RechargeCursor> cursor) {
  const RechargeCursor from = cursor.value_or(RechargeCursor{INT64_MAX, INT64_MAX});
  auto parse = [page_size](const PgResult& r) { return ReadPage(r, page_size); };
  PgStatement statement =
      user_id.empty()
          ? PgStatement{"SELECT created_at, seq, record FROM recharges"
                        " WHERE (created_at < $1 OR (created_at = $1 AND seq < $2))"
                        " ORDER BY created_at DESC, seq DESC LIMIT $3",
                        {PgParam::Int8(from.created_at_us), PgParam::Int8(from.seq),
                         PgParam::Int8(page_size + 1)}}
          : PgStatement{"SELECT created_at, seq, record FROM recharges WHERE user_id = $4"
                        " AND (created_at < $1 OR (created_at = $1 AND seq < $2))"
                        " ORDER BY created_at DESC, seq DESC LIMIT $3",
                        {PgParam::Int8(from.created_at_us), PgParam::Int8(from.seq),
                         PgParam::Int8(page_size + 1), PgParam::Text(user_id)}};
  co_return co_await core_->ReadOne<absl::StatusOr<RechargePage>>(std::move(statement), parse);
}

asio::awaitable<absl::StatusOr<std::vector<UnresolvedRecharge>>>
PostgresLedgerStore::ListUnresolved(std::chrono::system_clock::time_point started_before) {
  using Result = absl::StatusOr<std::vector<UnresolvedRecharge>>;
  std::vector<PgStatement> statements;
  statements.push_back(PgStatement{"SELECT key, draft FROM idempotency_keys WHERE state = 'started'"
                                   " AND created_at < $1 ORDER BY created_at",
                                   {PgParam::Int8(UnixMicros(started_before))}});
  statements.push_back(PgStatement{
      "SELECT idempotency_key, record FROM recharges WHERE status IN (6, 9) ORDER BY seq", {}});
  auto parse = [](std::vector<PgResult>& r) -> Result {
    std::vector<UnresolvedRecharge> out;
    for (int i = 0; i < r[0].rows(); ++i) {
      UnresolvedRecharge& u = out.emplace_back();
      u.idempotency_key = r[0].text(i, 0);
      u.started = true;
      if (!Parse(r[0].bytes(i, 1), &u.recharge)) {
        return absl::DataLossError("ledger: stored draft does not parse");
      }
    }
    for (int i = 0; i < r[1].rows(); ++i) {
      UnresolvedRecharge& u = out.emplace_back();
      u.idempotency_key = r[1].text(i, 0);
      if (!Parse(r[1].bytes(i, 1), &u.recharge)) {
        return absl::DataLossError("ledger: stored recharge does not parse");
      }
    }
    return out;
  };
  co_return co_await core_->Read<Result>(std::move(statements), /*snapshot=*/true, parse);
}

asio::awaitable<absl::Status> PostgresLedgerStore::AppendAudit(recharge::v1::AuditEvent event) {
  const int64_t at = MicrosOf(event.at());
  auto parse = [](const PgResult&) -> absl::Status { return absl::OkStatus(); };
  PgStatement statement{"INSERT INTO audit_log (at, caller, rpc, target, note, outcome, detail)"
                  " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                  {PgParam::Int8(at > 0 ? at : NowMicros()), PgParam::Bytes(event.caller()),
                   PgParam::Bytes(event.rpc()), PgParam::Bytes(event.target()),
                   PgParam::Bytes(event.note()), PgParam::Bytes(event.outcome()),
                   PgParam::Bytes(event.detail())}};
  co_return co_await core_->Write<absl::Status>(
      std::move(statement),
      parse);
}

asio::awaitable<absl::StatusOr<AuditPage>> PostgresLedgerStore::ListAudit(
    int page_size, std::optional<int64_t> before_seq) {
  auto parse = [page_size](const PgResult& r) -> absl::StatusOr<AuditPage> {
    AuditPage page;
    for (int i = 0; i < r.rows(); ++i) {
      if (static_cast<int>(page.events.size()) == page_size) {
        page.next_before_seq = page.events.back().seq();
        break;
      }
      recharge::v1::AuditEvent& e = page.events.emplace_back();
      e.set_seq(r.integer(i, 0));
      SetMicros(r.integer(i, 1), e.mutable_at());
      e.set_caller(r.text(i, 2));
      e.set_rpc(r.text(i, 3));
      e.set_target(r.text(i, 4));
      e.set_note(r.text(i, 5));
      e.set_outcome(r.text(i, 6));
      e.set_detail(r.text(i, 7));
    }
    return page;
  };
  PgStatement statement{"SELECT seq, at, caller, rpc, target, note, outcome, detail FROM audit_log"
                  " WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                  {PgParam::Int8(before_seq.value_or(INT64_MAX)), PgParam::Int8(page_size + 1)}};
  co_return co_await core_->ReadOne<absl::StatusOr<AuditPage>>(
      std::move(statement),
      parse);
}

namespace {
constexpr const char* kPurgedThrough =
    "SELECT coalesce((SELECT value FROM ledger_meta WHERE name = 'events_purged_through'), 0)";
constexpr const char* kNewestEvent = "SELECT coalesce(max(seq), 0) FROM recharge_events";
}  // namespace

asio::awaitable<absl::StatusOr<std::vector<FeedEvent>>> PostgresLedgerStore::ListEvents(
    std::optional<int64_t> after, int limit) {
  using Result = absl::StatusOr<std::vector<FeedEvent>>;
  // The bounds and the rows from one snapshot. Without a cursor the rows
  // are asked from 0: the purged-through bound is checked on them.
  std::vector<PgStatement> statements;
  statements.push_back(PgStatement{kPurgedThrough, {}});
  statements.push_back(PgStatement{kNewestEvent, {}});
  statements.push_back(PgStatement{
      "SELECT seq, at, type, record FROM recharge_events WHERE seq > $1 ORDER BY seq LIMIT $2",
      {PgParam::Int8(after.value_or(0)), PgParam::Int8(limit)}});
  auto parse = [after](std::vector<PgResult>& r) -> Result {
    const int64_t purged = r[0].integer(0, 0);
    const int64_t latest = std::max(purged, r[1].integer(0, 0));
    const int64_t after_seq = after.value_or(purged);
    if (after_seq < purged) {
      return absl::OutOfRangeError(
          "after_cursor: events after it have expired (retention); start again from the oldest "
          "retained event (empty after_cursor) or from now");
    }
    std::vector<FeedEvent> out;
    const PgResult& rows = r[2];
    for (int i = 0; i < rows.rows(); ++i) {
      FeedEvent& e = out.emplace_back();
      e.seq = rows.integer(i, 0);
      SetMicros(rows.integer(i, 1), e.event.mutable_at());
      e.event.set_type(static_cast<recharge::v1::RechargeEventType>(rows.integer(i, 2)));
      if (!Parse(rows.bytes(i, 3), e.event.mutable_recharge())) {
        return absl::DataLossError("ledger: stored event does not parse");
      }
      e.event.set_coins_delta(CoinsDelta(e.event.type(), e.event.recharge()));
    }
    if (out.empty() && after_seq > latest) {
      return absl::OutOfRangeError("after_cursor: newer than any event of this ledger");
    }
    return out;
  };
  co_return co_await core_->Read<Result>(std::move(statements), /*snapshot=*/true, parse);
}

asio::awaitable<absl::StatusOr<int64_t>> PostgresLedgerStore::LatestEventSeq() {
  std::vector<PgStatement> statements;
  statements.push_back(PgStatement{kPurgedThrough, {}});
  statements.push_back(PgStatement{kNewestEvent, {}});
  auto parse = [](std::vector<PgResult>& r) -> absl::StatusOr<int64_t> {
    return std::max(r[0].integer(0, 0), r[1].integer(0, 0));
  };
  co_return co_await core_->Read<absl::StatusOr<int64_t>>(std::move(statements), true, parse);
}

asio::awaitable<absl::StatusOr<int64_t>> PostgresLedgerStore::PurgeEvents(
    std::chrono::system_clock::time_point before) {
  auto parse = [](const PgResult& r) -> absl::StatusOr<int64_t> { return r.integer(0, 0); };
  PgStatement statement{"SELECT ledger_purge_events($1)", {PgParam::Int8(UnixMicros(before))}};
  co_return co_await core_->Write<absl::StatusOr<int64_t>>(
      std::move(statement), parse);
}

asio::awaitable<absl::StatusOr<int64_t>> PostgresLedgerStore::PurgeKeys(
    std::chrono::system_clock::time_point before) {
  // A key whose recharge is still PENDING or REQUIRES_ACTION is kept:
  // forgetting it would let a retry charge a second time.
  auto parse = [](const PgResult& r) -> absl::StatusOr<int64_t> { return r.integer(0, 0); };
  PgStatement statement{"WITH gone AS (DELETE FROM idempotency_keys WHERE state = 'completed'"
                  " AND created_at < $1 AND recharge_id NOT IN"
                  " (SELECT recharge_id FROM recharges WHERE status IN (6, 9)) RETURNING 1)"
                  " SELECT count(*) FROM gone",
                  {PgParam::Int8(UnixMicros(before))}};
  co_return co_await core_->Write<absl::StatusOr<int64_t>>(
      std::move(statement),
      parse);
}

}  // namespace recharge
