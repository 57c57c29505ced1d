// RedisClient: an asynchronous Redis client — hiredis' async API driven by
// Boost.Asio (DESIGN §3). Commands are pipelined over a few connections; no
// thread ever blocks on Redis.
//
// Each connection lives on its own strand: hiredis' context is touched only
// there, its socket is watched with posix::stream_descriptor::async_wait, and
// replies are handed back to the calling coroutine on the caller's executor.
// Every command has a deadline: a slow or paused server costs the caller at
// most that long (the late reply is dropped). A dropped connection is
// re-established on the next command.
//
// RedisCommands is what the rest of the gateway talks to: one server
// (RedisClient) or a Redis Cluster (RedisClusterClient, io/redis_cluster.h)
// behind the same call.
//
// Thread-safety: Command may be called concurrently from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/asio.h"

struct redisReply;  // hiredis

namespace recharge {

// An owned copy of a hiredis reply.
struct RedisReply {
  enum class Type { kString, kArray, kInteger, kNil, kStatus, kError };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;  // kString, kStatus, kError
  std::vector<RedisReply> elements;
};

// An owned copy of hiredis' reply `r` (not null): what RedisClient hands
// back, and what the tests' blocking connections copy their replies into.
RedisReply CopyRedisReply(const redisReply* r);

// Sends Redis commands: to one server, or to the cluster node that serves the
// command's key.
class RedisCommands {
 public:
  virtual ~RedisCommands() = default;

  // Sends one command (`args[0]` is its name). UNAVAILABLE if Redis cannot be
  // reached, DEADLINE_EXCEEDED if no reply came before `deadline`; the
  // message names the server. A Redis error reply is a reply
  // (Type::kError), not an error status.
  //
  // `route_key` picks the cluster node for a command that names no key
  // (SCRIPT LOAD for a script later called with that key): empty means the
  // command's own first key (io/redis_slot.h, RedisCommandKey). A single
  // server ignores it.
  virtual asio::awaitable<absl::StatusOr<RedisReply>> Command(
      std::vector<std::string> args, std::chrono::steady_clock::time_point deadline,
      std::string route_key) = 0;
  asio::awaitable<absl::StatusOr<RedisReply>> Command(
      std::vector<std::string> args, std::chrono::steady_clock::time_point deadline) {
    return Command(std::move(args), deadline, std::string());
  }

  // Commands sent so far by callers (tests count round trips with it).
  virtual uint64_t commands_sent() const = 0;

  // True when keys live on several servers (a Redis Cluster): every key of
  // one multi-key command or script must then share a hash slot.
  virtual bool sharded() const { return false; }
};

class RedisClient final : public RedisCommands {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 6379;
    int connections = 4;
  };
  // Connections are opened lazily, on `executor`'s context.
  RedisClient(asio::any_io_executor executor, Options options);
  // REQUIRES: no io thread is running the executor's context any more.
  ~RedisClient();

  using RedisCommands::Command;
  // `route_key` is ignored: there is one server.
  asio::awaitable<absl::StatusOr<RedisReply>> Command(
      std::vector<std::string> args, std::chrono::steady_clock::time_point deadline,
      std::string route_key) override;

  // Sends `commands` back to back on ONE connection (nothing else between
  // them) and returns their replies in order: all of them, or the first
  // error status (UNAVAILABLE, DEADLINE_EXCEEDED) for the whole batch.
  // Redis Cluster's ASK redirect needs it (ASKING, then the command).
  asio::awaitable<absl::StatusOr<std::vector<RedisReply>>> Commands(
      std::vector<std::vector<std::string>> commands,
      std::chrono::steady_clock::time_point deadline);

  // Counts each command of a batch.
  uint64_t commands_sent() const override { return sent_.load(); }

 private:
  class Connection;
  // Prefixes a failure's message with the server's address.
  absl::Status NameServer(const absl::Status& status) const;

  Options options_;
  std::string address_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::atomic<uint64_t> next_{0};
  std::atomic<uint64_t> sent_{0};
};

// "host:port" -> host and port. Errors name the text.
absl::StatusOr<RedisClient::Options> ParseRedisAddress(const std::string& address);
// "host:port,host:port,..." (spaces around the commas allowed) -> one per
// address, in order; at least one. Errors name the bad address.
absl::StatusOr<std::vector<RedisClient::Options>> ParseRedisAddresses(const std::string& addresses);

}  // namespace recharge
