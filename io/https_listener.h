// HttpsListener: a small HTTPS/1.1 server for inbound calls to the gateway
// (the providers' webhooks: signed JSON POSTs; with `plaintext`, the
// loopback /metrics scrape). It accepts TLS 1.2+ connections on one
// address, reads keep-alive requests of bounded size and hands each one to a
// coroutine Handler, whose answer it writes back.
//
// What it does on its own, before or around the handler:
//  - a body over `max_body_bytes` is answered 413, a malformed request 400
//    (a head over 16 KiB: 431), and the connection is then closed;
//  - past the listener's token bucket (`rate_per_second`, `rate_burst`) a
//    request is answered 429 with Retry-After: 1, the handler not called;
//  - a connection past `max_connections` open is closed at once, unserved;
//  - every socket operation (handshake, read, write) is bounded by
//    `io_timeout`; the handler's own time is not;
//  - a handler that throws yields 500 {"error":"internal"};
//  - every answer carries Content-Type, Content-Length and
//    Cache-Control: no-store;
//  - one access log line a request (method, path without the query, status,
//    client address, ms). Bodies, queries and headers are never logged: they
//    carry signatures.
//
// Everything runs as coroutines on the caller's io_context (any number of
// threads; each connection on a strand of its own); no thread is blocked
// except by WaitDrained(), which the owner calls from a thread of its own.
//
// Thread-safety: port(), Stop() and WaitDrained() may be called from any
// thread. The handler may run on any thread of the io_context, for several
// requests at once.
//
// Lifetimes: the listener and its connections share their state
// (shared_ptr), so a connection coroutine still pending when the io_context
// stops holds nothing dangling. REQUIRES: the listener is destroyed before
// its io_context, and whatever the handler refers to outlives the requests
// in progress (call Stop() and WaitDrained() first, or stop the io_context
// before destroying what the handler uses).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "io/asio.h"

namespace recharge {

// One request as the handler sees it. Every view points into the listener's
// buffers and is valid until the handler's coroutine completes.
struct HttpRequestView {
  std::string_view method;  // "POST"
  std::string_view target;  // "/webhooks/card?x=1", as sent
  std::string_view path;    // "/webhooks/card": the target without the query
  std::string_view query;   // "x=1"; empty when there is none
  std::string_view body;
  std::string_view client;  // the peer's IP address
  // The value of a header (name compared case-insensitively); nullopt when
  // absent. The first one when a header repeats.
  std::function<std::optional<std::string_view>(std::string_view)> header;
};

// The handler's answer. Content-Length, Cache-Control and the connection
// headers are added by the listener.
struct HttpAnswer {
  int status = 200;  // 200..599; anything else is answered 500 (and logged)
  std::string body;
  std::string content_type = "application/json";
};

class HttpsListener {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // an IP address ("0.0.0.0", "::" for all)
    uint16_t port = 0;               // 0: a free port, see port()
    std::string cert_file;           // PEM certificate chain, leaf first
    std::string key_file;            // PEM private key
    // Plain HTTP, no TLS (cert_file and key_file unused): only for a port on
    // a loopback address that serves nothing secret (the /metrics scrape).
    bool plaintext = false;
    size_t max_body_bytes = 64 * 1024;  // larger bodies: 413
    int max_connections = 256;          // open at once, at least 1
    double rate_per_second = 200;  // requests a second, whole listener; 0: no limit
    double rate_burst = 400;       // requests at once, at least 1 (unless no limit)
    std::chrono::seconds io_timeout{30};  // each handshake, read (idle
                                          // keep-alive included) and write
    std::string log_name = "webhooks";    // the "listener" field of its log lines
  };
  // Called once per request that passed the checks above; its answer is
  // sent as is. It may throw (500).
  using Handler = std::function<asio::awaitable<HttpAnswer>(const HttpRequestView&)>;

  // Loads the certificate and key, binds and listens, and starts accepting
  // on `ioc` (which the caller runs). Errors: INVALID_ARGUMENT for bad
  // options or an unreadable certificate or key (naming the file);
  // UNAVAILABLE when the address cannot be bound (naming it).
  static absl::StatusOr<std::unique_ptr<HttpsListener>> Start(asio::io_context& ioc,
                                                              Options options, Handler handler);
  // Stop()s.
  ~HttpsListener();
  HttpsListener(const HttpsListener&) = delete;
  HttpsListener& operator=(const HttpsListener&) = delete;

  // The port listened on (the one chosen when Options::port was 0).
  uint16_t port() const;

  // Closes the listening socket and the connections waiting for a request;
  // requests in progress are answered (with Connection: close), then their
  // connections close. Returns at once; idempotent. Needs the io_context
  // running to take effect.
  void Stop();

  // Waits until Stop() has taken effect (the address refuses connections)
  // and every connection is closed, or until `deadline`; true when drained.
  // Blocks the calling thread. REQUIRES: Stop() was called, and the caller
  // is not a thread of the io_context (the drain needs those threads).
  bool WaitDrained(std::chrono::steady_clock::time_point deadline);

 private:
  class Core;
  class Connection;
  explicit HttpsListener(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  // Shared with the accept and connection coroutines, which may outlive the
  // listener until the io_context drops them.
  std::shared_ptr<Core> core_;
};

}  // namespace recharge
