// HttpsClient: an HTTP/1.1-over-TLS client for one provider endpoint, with a
// bounded pool of keep-alive connections, for the payment adapters.
//
// Every call is a coroutine on the caller's executor; nothing blocks a thread.
// The peer's certificate is verified against `ca_file` (or the system store)
// and the endpoint's host name or IP address.
//
// HTTP/1.1 carries one call per connection at a time, so each call in flight
// holds one connection. At most `max_connections` are open (idle + busy);
// past that a call waits, in arrival order, until a connection is returned or
// closed. A wait costs a small heap object and a timer, no thread. A call
// still waiting at its deadline fails with DEADLINE_EXCEEDED, having sent
// nothing.
//
// A failed call says whether the request may have reached the server
// (`maybe_sent`): adapters use it to tell a definite failure (safe to try
// another provider) from an ambiguous one (the charge may have happened).
//
// Thread-safety: Send() may be called concurrently from any thread, on any
// executor of io_contexts that keep running while the call is in flight.
// Destroying the client fails the calls still waiting for a connection
// (UNAVAILABLE, nothing sent); calls already on a connection finish normally.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/asio.h"

namespace recharge {

namespace http = boost::beast::http;

struct HttpsEndpoint {
  std::string host;
  uint16_t port = 443;
};
// Parses "https://host[:port]" (no path). Errors say what is wrong.
absl::StatusOr<HttpsEndpoint> ParseHttpsUrl(std::string_view url);

struct HttpsResult {
  absl::Status status;      // OK when a complete response was read
  bool maybe_sent = false;  // on error: the server may have received the request
  http::response<http::string_body> response;
};

class HttpsClient {
 public:
  struct Options {
    HttpsEndpoint endpoint;
    std::string ca_file;  // empty: the system's trust store
    // Open connections (idle + busy + being opened), at least 1. Idle
    // connections are kept up to the same number.
    size_t max_connections = 256;
  };

  // Fails if the CA file cannot be read or max_connections is 0.
  static absl::StatusOr<std::unique_ptr<HttpsClient>> Create(Options options);
  ~HttpsClient();

  // Sends `request` (Host, Content-Length and keep-alive are filled in) and
  // reads the response, all before `deadline`, waiting first for a free
  // connection if all `max_connections` are busy. When `idempotent` is true a
  // request that fails on a reused keep-alive connection before any response
  // byte arrives is retried once on a new connection (the server may have
  // closed an idle connection); pass true only when a repeat cannot charge twice.
  asio::awaitable<HttpsResult> Send(http::request<http::string_body> request,
                                    std::chrono::steady_clock::time_point deadline,
                                    bool idempotent);

  const HttpsEndpoint& endpoint() const;

 private:
  class Pool;
  explicit HttpsClient(std::shared_ptr<Pool> pool) : pool_(std::move(pool)) {}
  // Shared with the calls in flight, which may outlive the client.
  std::shared_ptr<Pool> pool_;
};

}  // namespace recharge
