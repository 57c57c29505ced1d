// PgConnection: one libpq connection driven by Boost.Asio (DESIGN §3). It is
// made with PQconnectStart/PQconnectPoll and then used in nonblocking mode:
// Run() sends a list of statements back to back in libpq's pipeline mode,
// with one Sync, and reads their results, so a list costs one round trip;
// Exec() runs a script of several statements (migrations). Every wait is an
// async_wait on the socket (posix::stream_descriptor) with a deadline; no
// thread ever blocks on the database.
//
// A connection runs on a strand of its own; the caller's coroutine is
// resumed on its own executor. One operation at a time: the owner (the
// ledger's writer, or whoever leased it from the pool) serializes its use.
// After a failed round trip (the server gone, the deadline passed) the
// connection is broken() and is thrown away.
//
// Parameters and results travel in binary form: a bytea column holds a
// serialized protobuf as is, an int8 eight big-endian bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include "absl/status/statusor.h"
#include "io/asio.h"

struct pg_conn;
struct pg_result;

namespace recharge {

// One statement parameter.
class PgParam {
 public:
  static PgParam Text(std::string_view v);
  static PgParam Bytes(std::string_view v);
  static PgParam Int8(int64_t v);
  static PgParam Int4(int32_t v);
  static PgParam Bool(bool v);
  static PgParam Null();

  unsigned int oid() const { return oid_; }
  bool null() const { return null_; }
  const std::string& bytes() const { return bytes_; }

 private:
  PgParam(unsigned int oid, std::string bytes, bool null = false)
      : oid_(oid), bytes_(std::move(bytes)), null_(null) {}
  unsigned int oid_;
  std::string bytes_;
  bool null_;
};

// One statement: `sql` with $1.. placeholders (a string literal: it is not
// copied), and its parameters.
struct PgStatement {
  const char* sql = "";
  std::vector<PgParam> params;
};

// The result of one statement (owns its PGresult).
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* r);
  PgResult(PgResult&&) noexcept;
  PgResult& operator=(PgResult&&) noexcept;
  ~PgResult();

  // The statement ran (a command, or rows).
  bool ok() const;
  // It did not run because an earlier statement of the pipeline failed.
  bool aborted() const;
  // "SQLSTATE: message" of a failed statement.
  std::string error() const;
  std::string sqlstate() const;

  int rows() const;
  bool null(int row, int col) const;
  std::string_view bytes(int row, int col) const;  // text or bytea
  std::string text(int row, int col) const { return std::string(bytes(row, col)); }
  // An int2, int4 or int8 column.
  int64_t integer(int row, int col) const;
  bool boolean(int row, int col) const;

 private:
  pg_result* r_ = nullptr;
};

class PgConnection : public std::enable_shared_from_this<PgConnection> {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects on a new strand of the calling coroutine's executor.
  // UNAVAILABLE naming the server (never the password) if it cannot.
  static asio::awaitable<absl::StatusOr<std::shared_ptr<PgConnection>>> Connect(
      std::string conninfo, Clock::time_point deadline);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Sends `statements` in one pipeline ending in one Sync and returns each
  // one's result, in order. Statements fail on their own (an error result)
  // and, inside a transaction, make the rest of it aborted(). UNAVAILABLE or
  // DEADLINE_EXCEEDED (the connection is then broken) when the round trip
  // itself failed: what the server did is unknown.
  asio::awaitable<absl::StatusOr<std::vector<PgResult>>> Run(std::vector<PgStatement> statements,
                                                             Clock::time_point deadline);
  // Runs `script` (several statements, no parameters) outside pipeline
  // mode; the last statement's result, or the first error.
  asio::awaitable<absl::StatusOr<PgResult>> Exec(std::string script, Clock::time_point deadline);

  bool broken() const { return broken_; }
  // "host:port/dbname", for messages.
  const std::string& name() const { return name_; }

 private:
  PgConnection(asio::any_io_executor executor, pg_conn* conn);
  asio::awaitable<absl::StatusOr<std::vector<PgResult>>> RunOnStrand(
      std::vector<PgStatement> statements, Clock::time_point deadline);
  asio::awaitable<absl::StatusOr<PgResult>> ExecOnStrand(std::string script,
                                                         Clock::time_point deadline);
  static asio::awaitable<absl::StatusOr<std::shared_ptr<PgConnection>>> ConnectOnStrand(
      asio::strand<asio::any_io_executor> strand, std::string conninfo, Clock::time_point deadline);

  // Waits until the socket is readable (or writable); an error, with the
  // connection broken, on the deadline or a socket error.
  asio::awaitable<absl::Status> Wait(bool write, Clock::time_point deadline);
  // Sends what libpq has buffered.
  asio::awaitable<absl::Status> Flush(Clock::time_point deadline);
  // The next result (nullptr at the end of a statement's results).
  asio::awaitable<absl::StatusOr<pg_result*>> NextResult(Clock::time_point deadline);
  absl::Status Broken(std::string_view what);

  asio::strand<asio::any_io_executor> strand_;
  pg_conn* conn_;
  std::optional<asio::posix::stream_descriptor> socket_;
  asio::steady_timer timer_;
  uint64_t wait_generation_ = 0;  // a late timer of an earlier wait is ignored
  bool timed_out_ = false;
  bool broken_ = false;
  bool pipeline_ = false;
  std::string name_;
};

}  // namespace recharge
