// GatewayConfig: configs/gateway.yaml (every option is documented there,
// with its default). Errors name the file, the line and the field.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/auth.h"
#include "io/secret.h"

namespace recharge {

// How the gRPC port is secured.
enum class Transport {
  kPlaintext,  // no TLS: allowed only on a loopback listen address
  kTls,        // TLS; callers authenticate with bearer tokens
  kMtls,       // TLS, and the client must present a certificate the CA signed
};

struct GatewayConfig {
  std::string listen = "127.0.0.1:50051";
  Transport transport = Transport::kTls;
  std::string tls_cert_file;       // PEM: the server certificate (chain)
  std::string tls_key_file;        // PEM: its private key
  std::string tls_client_ca_file;  // PEM: the CA that signs client certificates (mtls)
  std::vector<CallerConfig> callers;
  int64_t max_request_bytes = 64 * 1024;
  std::chrono::milliseconds call_deadline{30'000};
  int64_t max_recharges_deciding = 64;
  int64_t max_recharges_waiting = 20'000;
  std::string log_level = "info";
  int io_threads = 0;  // 0 = one per core
  std::chrono::milliseconds shutdown_grace{10'000};
  std::string catalogue_path = "configs/packages.yaml";
  std::string adapters_path = "configs/adapters.yaml";
  std::string ledger_backend = "sqlite";  // sqlite | postgres
  std::string ledger_path = "var/ledger.db";
  // ledger.postgres: a libpq connection string without the password, which
  // comes from password_file or password_env (never from the file itself).
  std::string ledger_postgres_dsn;
  Secret ledger_postgres_password;
  int ledger_postgres_read_connections = 2;
  std::chrono::milliseconds ledger_postgres_timeout{5'000};
  int group_commit_max = 512;
  std::chrono::milliseconds key_retention{24 * 3'600'000};
  std::chrono::milliseconds event_retention{7 * 24 * 3'600'000};
  std::string redis_address = "127.0.0.1:6390";
  // redis.cluster: seed nodes of a Redis Cluster ("host:port,host:port...").
  // Set: the counters, flags and block lists live on that cluster and
  // redis.address is not used. Empty: one Redis server at redis.address.
  std::string redis_cluster;
  std::chrono::milliseconds redis_timeout{50};
  std::string fraud_rules_path;  // empty (no fraud section): the allow-all policy
  std::string redis_prefix = "rc";
  std::string fingerprint_key_file = "var/secrets/fingerprint.key";
  std::chrono::milliseconds recovery_interval{5'000};
  std::chrono::milliseconds recovery_settle_after{15'000};
  std::chrono::milliseconds review_hold_expiry{7 * 24 * 3'600'000};
  // Inbound provider notifications (webhooks): an HTTPS port of their own.
  // Empty listen (no `webhooks` section): no port, notifications refused.
  std::string webhook_listen;
  std::string webhook_cert_file;
  std::string webhook_key_file;
  int64_t webhook_max_body_bytes = 64 * 1024;
  int64_t webhook_max_connections = 256;
  int64_t webhook_rate_per_second = 200;
  int64_t webhook_rate_burst = 400;
  // Prometheus /metrics, plain HTTP on a loopback address. Empty: none.
  std::string metrics_listen;

  static absl::StatusOr<GatewayConfig> Load(const std::string& path);
};

// True if `listen` (host:port) names a loopback address: 127.0.0.0/8,
// [::1] or localhost.
bool IsLoopbackListen(const std::string& listen);

// OK, or INVALID_ARGUMENT when `transport` is plaintext and `listen` is not
// a loopback address (checked at load and again after --listen).
absl::Status CheckPlaintextListen(Transport transport, const std::string& listen);

// RECHARGE_FINGERPRINT_KEY from the environment, else the file. At least 32
// bytes. Errors name the source, never the key.
absl::StatusOr<Secret> LoadFingerprintKey(const std::string& file);

}  // namespace recharge
