// HttpsClient: an HTTP/1.1-over-TLS client for one provider endpoint, with a
// pool of keep-alive connections, for the payment adapters.
//
// Every call is a coroutine on the caller's executor; nothing blocks a thread.
// The peer's certificate is verified against `ca_file` (or the system store)
// and the endpoint's host name or IP address.
//
// A failed call says whether the request may have reached the server
// (`maybe_sent`): adapters use it to tell a definite failure (safe to try
// another provider) from an ambiguous one (the charge may have happened).
//
// Thread-safety: Send() may be called concurrently from any thread.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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
    size_t max_idle_connections = 32;
  };

  // Fails if the CA file cannot be read.
  static absl::StatusOr<std::unique_ptr<HttpsClient>> Create(Options options);
  ~HttpsClient();

  // Sends `request` (Host, Content-Length and keep-alive are filled in) and
  // reads the response, all before `deadline`. When `idempotent` is true a
  // request that fails on a reused keep-alive connection before any response
  // byte arrives is retried once on a new connection (the server may have
  // closed an idle connection); pass true only when a repeat cannot charge twice.
  asio::awaitable<HttpsResult> Send(http::request<http::string_body> request,
                                    std::chrono::steady_clock::time_point deadline,
                                    bool idempotent);

  const HttpsEndpoint& endpoint() const { return options_.endpoint; }

 private:
  struct Connection;
  explicit HttpsClient(Options options);
  std::unique_ptr<Connection> TakeIdle();
  void ReturnIdle(std::unique_ptr<Connection> connection);
  asio::awaitable<absl::Status> Connect(Connection& connection,
                                        std::chrono::steady_clock::time_point deadline);

  Options options_;
  asio::ssl::context ssl_context_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
};

}  // namespace recharge
