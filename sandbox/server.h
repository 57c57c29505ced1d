// Server: the sandbox's HTTPS/1.1 front end on Boost.Beast and OpenSSL.
//
// One io_context per thread (--threads, one thread per core); the acceptor
// hands connections round-robin to the threads, and a connection lives on
// its thread for good, as one coroutine: TLS handshake, then keep-alive
// requests read into a reused buffer, each answered with one write (status
// line, headers and body together). TCP_NODELAY is set; every socket
// operation has a 30 s timeout; bodies are limited to 64 KiB
// (Content-Length required for POST/PUT/PATCH, no Transfer-Encoding).
//
// Every request is logged as one JSON line (io/log.h) with the client, the
// method, the path, the status, the idempotency key and the time taken;
// the secrets given in ServerOptions::redact, any run of digits holding a
// card number (12-19 digits passing the Luhn check) and unprintable
// characters are masked.
//
// Stopping (SIGTERM/SIGINT): the listener closes, idle connections are
// closed, requests in flight get up to 5 s to finish (their journal write
// and response included); after that, requests still sleeping an injected
// latency are abandoned with nothing charged. Run() returns when every
// connection is gone.
//
// Thread-safety: construct, Listen and Run from one thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "io/asio.h"
#include "sandbox/api.h"
#include "sandbox/http.h"

namespace recharge::sandbox {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8443;  // 0: a free port
  int threads = 1;
  std::string cert_file;  // certificate chain (PEM)
  std::string key_file;   // private key (PEM)
  std::vector<std::string> redact;  // secrets never to appear in a log line
};

// Masks secrets, digit runs holding a card number and unprintable characters in
// a log value, and cuts it to 1000 characters.
std::string SanitizeForLog(std::string_view text, const std::vector<std::string>& redact);

class Server {
 public:
  // REQUIRES: router and stats outlive the server.
  Server(ServerOptions options, const Router& router, Stats& stats);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the certificate and key, binds and listens. Errors name what
  // failed (to be reported and exit 2).
  absl::Status LoadCertificates();
  absl::Status Listen();
  uint16_t port() const { return port_; }

  // Serves until SIGTERM or SIGINT, then stops as described above.
  void Run();

  // For log lines of the sandbox outside requests.
  std::string Sanitize(std::string_view text) const {
    return SanitizeForLog(text, options_.redact);
  }

  struct Impl;  // server.cc

 private:
  const ServerOptions options_;
  uint16_t port_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace recharge::sandbox
