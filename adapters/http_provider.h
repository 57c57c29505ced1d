// HttpProvider: what every adapter that speaks HTTPS to a provider shares —
// the endpoint and its connection pool, the per-call timeout, and the
// deadline rule (an outgoing call never outlives the caller's deadline).
//
// Adapters own one and keep only their wire format and auth of their own.
// Thread-safety: Send may be called concurrently from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "io/config_node.h"
#include "io/https_client.h"
#include "io/secret.h"

namespace recharge {

class HttpProvider {
 public:
  struct Options {
    HttpsEndpoint endpoint;
    std::string ca_file;  // empty: the system store
    std::chrono::milliseconds timeout{5000};
    // Connections open to the provider at most (idle + busy): one per call
    // in flight; past it calls wait for one within their deadline.
    size_t pool_size = 256;
  };
  // Reads `endpoint` (required), `ca_file`, `timeout` (5s) and `pool_size`
  // (256, 1..65536).
  static absl::StatusOr<Options> ParseOptions(const ConfigNode& config);
  static absl::StatusOr<std::unique_ptr<HttpProvider>> Create(Options options);

  // The earlier of the caller's deadline and now + timeout.
  std::chrono::steady_clock::time_point Deadline(
      std::chrono::steady_clock::time_point caller) const;

  // Sends with Deadline(caller_deadline). `idempotent`: see HttpsClient::Send.
  asio::awaitable<HttpsResult> Send(http::request<http::string_body> request,
                                    std::chrono::steady_clock::time_point caller_deadline,
                                    bool idempotent);

  const Options& options() const { return options_; }

 private:
  HttpProvider(Options options, std::unique_ptr<HttpsClient> client)
      : options_(std::move(options)), client_(std::move(client)) {}
  Options options_;
  std::unique_ptr<HttpsClient> client_;
};

// The outcome of a call that got no complete answer: for a charge, kFailed if
// the request cannot have reached the provider, else kUnknown (it may have
// charged); for a lookup, always kUnknown (nothing could be learnt).
ChargeOutcome TransportFailure(const HttpsResult& result, bool lookup);

// Reads a secret file named by `key` in `config`; errors name the field.
absl::StatusOr<Secret> ReadSecretField(const ConfigNode& config, std::string_view key);

}  // namespace recharge
