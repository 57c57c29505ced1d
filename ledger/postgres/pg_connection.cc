#include "ledger/postgres/pg_connection.h"

#include <libpq-fe.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/redirect_error.hpp>

#include <cstring>

#include "io/strings.h"

namespace recharge {
namespace {

// Type OIDs (server/catalog/pg_type_d.h, stable across versions).
constexpr unsigned int kBoolOid = 16;
constexpr unsigned int kByteaOid = 17;
constexpr unsigned int kInt8Oid = 20;
constexpr unsigned int kInt4Oid = 23;
constexpr unsigned int kTextOid = 25;

std::string BigEndian(uint64_t v, int bytes) {
  std::string out(static_cast<size_t>(bytes), '\0');
  for (int i = bytes - 1; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

// libpq's last error, on one line.
std::string LastError(const pg_conn* conn) {
  std::string msg = conn != nullptr ? PQerrorMessage(conn) : "out of memory";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  return msg.empty() ? "unknown error" : msg;
}

}  // namespace

PgParam PgParam::Text(std::string_view v) { return PgParam(kTextOid, std::string(v)); }
PgParam PgParam::Bytes(std::string_view v) { return PgParam(kByteaOid, std::string(v)); }
PgParam PgParam::Int8(int64_t v) { return PgParam(kInt8Oid, BigEndian(static_cast<uint64_t>(v), 8)); }
PgParam PgParam::Int4(int32_t v) {
  return PgParam(kInt4Oid, BigEndian(static_cast<uint32_t>(v), 4));
}
PgParam PgParam::Bool(bool v) { return PgParam(kBoolOid, std::string(1, v ? '\1' : '\0')); }
PgParam PgParam::Null() { return PgParam(0, {}, /*null=*/true); }

PgResult::PgResult(pg_result* r) : r_(r) {}
PgResult::PgResult(PgResult&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
PgResult& PgResult::operator=(PgResult&& o) noexcept {
  if (this != &o) {
    if (r_ != nullptr) PQclear(r_);
    r_ = std::exchange(o.r_, nullptr);
  }
  return *this;
}
PgResult::~PgResult() {
  if (r_ != nullptr) PQclear(r_);
}

bool PgResult::ok() const {
  if (r_ == nullptr) return false;
  const ExecStatusType s = PQresultStatus(r_);
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

bool PgResult::aborted() const {
  return r_ != nullptr && PQresultStatus(r_) == PGRES_PIPELINE_ABORTED;
}

std::string PgResult::sqlstate() const {
  const char* s = r_ != nullptr ? PQresultErrorField(r_, PG_DIAG_SQLSTATE) : nullptr;
  return s != nullptr ? s : "";
}

std::string PgResult::error() const {
  if (r_ == nullptr) return "no result";
  if (aborted()) return "not run: an earlier statement of its transaction failed";
  const char* primary = PQresultErrorField(r_, PG_DIAG_MESSAGE_PRIMARY);
  std::string msg = primary != nullptr ? primary : PQresStatus(PQresultStatus(r_));
  const std::string state = sqlstate();
  return state.empty() ? msg : StrCat(state, ": ", msg);
}

int PgResult::rows() const { return r_ != nullptr ? PQntuples(r_) : 0; }

bool PgResult::null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }

std::string_view PgResult::bytes(int row, int col) const {
  if (null(row, col)) return {};
  return std::string_view(PQgetvalue(r_, row, col),
                          static_cast<size_t>(PQgetlength(r_, row, col)));
}

int64_t PgResult::integer(int row, int col) const {
  const std::string_view v = bytes(row, col);
  uint64_t u = 0;
  for (const char c : v) u = (u << 8) | static_cast<unsigned char>(c);
  switch (v.size()) {  // sign-extend the narrower integers
    case 2: return static_cast<int16_t>(u);
    case 4: return static_cast<int32_t>(u);
    default: return static_cast<int64_t>(u);
  }
}

bool PgResult::boolean(int row, int col) const {
  const std::string_view v = bytes(row, col);
  return !v.empty() && v[0] != 0;
}

PgConnection::PgConnection(asio::any_io_executor executor, pg_conn* conn)
    : strand_(asio::make_strand(executor)), conn_(conn), timer_(strand_) {}

PgConnection::~PgConnection() {
  if (socket_) socket_->release();  // libpq owns the descriptor
  PQfinish(conn_);
}

absl::Status PgConnection::Broken(std::string_view what) {
  broken_ = true;
  return absl::UnavailableError(StrCat("ledger: postgres ", name_, ": ", what));
}

asio::awaitable<absl::StatusOr<std::shared_ptr<PgConnection>>> PgConnection::Connect(
    std::string conninfo, Clock::time_point deadline) {
  asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto strand = asio::make_strand(executor);
  co_return co_await asio::co_spawn(
      strand, ConnectOnStrand(strand, std::move(conninfo), deadline), asio::use_awaitable);
}

asio::awaitable<absl::StatusOr<std::shared_ptr<PgConnection>>> PgConnection::ConnectOnStrand(
    asio::strand<asio::any_io_executor> strand, std::string conninfo, Clock::time_point deadline) {
  pg_conn* raw = PQconnectStart(conninfo.c_str());
  if (raw == nullptr) co_return absl::UnavailableError("ledger: postgres: out of memory");
  std::shared_ptr<PgConnection> c(new PgConnection(strand, raw));
  // Named before the first wait: libpq knows the target from the DSN.
  c->name_ = StrCat(PQhost(raw) != nullptr ? PQhost(raw) : "?", ":",
                    PQport(raw) != nullptr ? PQport(raw) : "?", "/",
                    PQdb(raw) != nullptr ? PQdb(raw) : "?");
  if (PQstatus(raw) == CONNECTION_BAD) co_return c->Broken(LastError(raw));
  // As if PQconnectPoll had answered "writing" (libpq's documented start).
  PostgresPollingStatusType poll = PGRES_POLLING_WRITING;
  while (poll != PGRES_POLLING_OK) {
    if (poll == PGRES_POLLING_FAILED) co_return c->Broken(LastError(raw));
    // libpq may close and open sockets while it connects (another address,
    // SSL then plain): the descriptor is watched afresh at every step.
    if (c->socket_) c->socket_->release();
    c->socket_.reset();
    const int fd = PQsocket(raw);
    if (fd < 0) co_return c->Broken("no socket");
    c->socket_.emplace(c->strand_, fd);
    if (absl::Status s = co_await c->Wait(poll == PGRES_POLLING_WRITING, deadline); !s.ok()) {
      co_return s;
    }
    poll = PQconnectPoll(raw);
  }
  // The descriptor of the connection made.
  if (c->socket_) c->socket_->release();
  c->socket_.emplace(c->strand_, PQsocket(raw));
  c->name_ = StrCat(PQhost(raw), ":", PQport(raw), "/", PQdb(raw));
  if (PQsetnonblocking(raw, 1) != 0) co_return c->Broken(LastError(raw));
  co_return c;
}

asio::awaitable<absl::Status> PgConnection::Wait(bool write, Clock::time_point deadline) {
  if (Clock::now() >= deadline) {
    broken_ = true;
    co_return absl::DeadlineExceededError(StrCat("ledger: postgres ", name_, ": no answer in time"));
  }
  timed_out_ = false;
  const uint64_t generation = ++wait_generation_;
  timer_.expires_at(deadline);
  timer_.async_wait(asio::bind_executor(
      strand_, [weak = weak_from_this(), generation](boost::system::error_code ec) {
        std::shared_ptr<PgConnection> self = weak.lock();
        if (ec || self == nullptr || self->wait_generation_ != generation) return;
        self->timed_out_ = true;
        if (self->socket_) self->socket_->cancel();
      }));
  boost::system::error_code ec;
  co_await socket_->async_wait(write ? asio::posix::stream_descriptor::wait_write
                                     : asio::posix::stream_descriptor::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
  ++wait_generation_;
  timer_.cancel();
  if (timed_out_) {
    broken_ = true;
    co_return absl::DeadlineExceededError(StrCat("ledger: postgres ", name_, ": no answer in time"));
  }
  if (ec) co_return Broken(ec.message());
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> PgConnection::Flush(Clock::time_point deadline) {
  for (;;) {
    const int r = PQflush(conn_);
    if (r == 0) co_return absl::OkStatus();
    if (r < 0) co_return Broken(LastError(conn_));
    // The server reads our statements while it answers the earlier ones:
    // what it answers is read on (it is small next to what we send).
    if (absl::Status s = co_await Wait(/*write=*/true, deadline); !s.ok()) co_return s;
  }
}

asio::awaitable<absl::StatusOr<pg_result*>> PgConnection::NextResult(Clock::time_point deadline) {
  while (PQisBusy(conn_) != 0) {
    if (absl::Status s = co_await Wait(/*write=*/false, deadline); !s.ok()) co_return s;
    if (PQconsumeInput(conn_) == 0) co_return Broken(LastError(conn_));
  }
  co_return PQgetResult(conn_);
}

asio::awaitable<absl::StatusOr<std::vector<PgResult>>> PgConnection::Run(
    std::vector<PgStatement> statements, Clock::time_point deadline) {
  co_return co_await asio::co_spawn(strand_, RunOnStrand(std::move(statements), deadline),
                                    asio::use_awaitable);
}

asio::awaitable<absl::StatusOr<std::vector<PgResult>>> PgConnection::RunOnStrand(
    std::vector<PgStatement> statements, Clock::time_point deadline) {
  if (broken_) co_return absl::UnavailableError(StrCat("ledger: postgres ", name_, ": connection lost"));
  if (!pipeline_) {
    if (PQenterPipelineMode(conn_) == 0) co_return Broken(LastError(conn_));
    pipeline_ = true;
  }
  std::vector<unsigned int> types;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const PgStatement& st : statements) {
    types.clear();
    values.clear();
    lengths.clear();
    formats.clear();
    for (const PgParam& p : st.params) {
      types.push_back(p.oid());
      values.push_back(p.null() ? nullptr : p.bytes().data());
      lengths.push_back(static_cast<int>(p.bytes().size()));
      formats.push_back(1);
    }
    const int n = static_cast<int>(st.params.size());
    if (PQsendQueryParams(conn_, st.sql, n, n ? types.data() : nullptr, n ? values.data() : nullptr,
                          n ? lengths.data() : nullptr, n ? formats.data() : nullptr,
                          /*resultFormat=*/1) == 0) {
      co_return Broken(LastError(conn_));
    }
  }
  if (PQpipelineSync(conn_) == 0) co_return Broken(LastError(conn_));
  if (absl::Status s = co_await Flush(deadline); !s.ok()) co_return s;

  std::vector<PgResult> results;
  results.reserve(statements.size());
  for (size_t i = 0; i < statements.size(); ++i) {
    absl::StatusOr<pg_result*> r = co_await NextResult(deadline);
    if (!r.ok()) co_return r.status();
    if (*r == nullptr) co_return Broken("a statement gave no result");
    results.emplace_back(*r);
    // Each statement's results end with a null one.
    absl::StatusOr<pg_result*> end = co_await NextResult(deadline);
    if (!end.ok()) co_return end.status();
    if (*end != nullptr) {
      PgResult extra(*end);
      co_return Broken("a statement gave more than one result");
    }
  }
  absl::StatusOr<pg_result*> sync = co_await NextResult(deadline);
  if (!sync.ok()) co_return sync.status();
  PgResult sync_result(*sync);
  if (*sync == nullptr || PQresultStatus(*sync) != PGRES_PIPELINE_SYNC) {
    co_return Broken("the pipeline did not end where it should");
  }
  co_return results;
}

asio::awaitable<absl::StatusOr<PgResult>> PgConnection::Exec(std::string script,
                                                             Clock::time_point deadline) {
  co_return co_await asio::co_spawn(strand_, ExecOnStrand(std::move(script), deadline),
                                    asio::use_awaitable);
}

asio::awaitable<absl::StatusOr<PgResult>> PgConnection::ExecOnStrand(std::string script,
                                                                     Clock::time_point deadline) {
  if (broken_) co_return absl::UnavailableError(StrCat("ledger: postgres ", name_, ": connection lost"));
  if (pipeline_) {
    if (PQexitPipelineMode(conn_) == 0) co_return Broken(LastError(conn_));
    pipeline_ = false;
  }
  if (PQsendQuery(conn_, script.c_str()) == 0) co_return Broken(LastError(conn_));
  if (absl::Status s = co_await Flush(deadline); !s.ok()) co_return s;
  PgResult last;
  std::optional<std::string> failed;
  for (;;) {
    absl::StatusOr<pg_result*> r = co_await NextResult(deadline);
    if (!r.ok()) co_return r.status();
    if (*r == nullptr) break;
    PgResult result(*r);
    if (!result.ok() && !failed) failed = result.error();
    last = std::move(result);
  }
  if (failed) co_return absl::InternalError(StrCat("ledger: postgres ", name_, ": ", *failed));
  co_return last;
}

}  // namespace recharge
