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

namespace recharge {

// An owned copy of a hiredis reply.
struct RedisReply {
  enum class Type { kString, kArray, kInteger, kNil, kStatus, kError };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;  // kString, kStatus, kError
  std::vector<RedisReply> elements;
};

class RedisClient {
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

  // Sends one command (`args[0]` is its name). UNAVAILABLE if Redis cannot be
  // reached, DEADLINE_EXCEEDED if no reply came before `deadline`. A Redis
  // error reply is a reply (Type::kError), not an error status.
  asio::awaitable<absl::StatusOr<RedisReply>> Command(std::vector<std::string> args,
                                                       std::chrono::steady_clock::time_point deadline);

  // Commands sent so far (tests count round trips with it).
  uint64_t commands_sent() const { return sent_.load(); }

 private:
  class Connection;
  Options options_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::atomic<uint64_t> next_{0};
  std::atomic<uint64_t> sent_{0};
};

// "host:port" -> host and port. Errors name the text.
absl::StatusOr<RedisClient::Options> ParseRedisAddress(const std::string& address);

}  // namespace recharge
