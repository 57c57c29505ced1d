#include "gateway/config.h"

#include <cstdio>
#include <cstdlib>

#include "io/strings.h"
#include "io/config_node.h"
#include "io/log.h"
#include "io/redis_client.h"

namespace recharge {

#define CONFIG_ASSIGN(lhs, expr)        \
  do {                                  \
    auto _v = (expr);                   \
    if (!_v.ok()) return _v.status();   \
    lhs = *std::move(_v);               \
  } while (0)

namespace {

bool HexDigest(std::string_view hex, std::string* out) {
  if (hex.size() != 64) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char ch = hex[i + k];
      int d = 0;
      if (ch >= '0' && ch <= '9') d = ch - '0';
      else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
      else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
      else return false;
      v = v * 16 + d;
    }
    out->push_back(static_cast<char>(v));
  }
  return true;
}

absl::Status LoadCaller(const ConfigNode& node, CallerConfig* out) {
  if (!node.IsMap()) return node.Error("must be a map with name, roles and token_sha256 or certificate_subjects");
  if (absl::Status s = node.CheckKeys({"name", "roles", "token_sha256", "certificate_subjects", "rate_limit"});
      !s.ok()) {
    return s;
  }
  CONFIG_ASSIGN(out->name, node.GetString("name"));
  if (out->name.empty()) return node.Child("name").Error("must not be empty");
  if (!node.Has("roles")) return node.Error("roles: is required (app, ops)");
  std::vector<std::string> roles;
  CONFIG_ASSIGN(roles, node.Child("roles").AsStringList());
  for (const std::string& r : roles) {
    std::optional<Role> role = ParseRole(r);
    if (!role) return node.Child("roles").Error(StrCat("unknown role \"", r, "\" (app, ops)"));
    out->roles |= *role;
  }
  if (out->roles == 0) return node.Child("roles").Error("needs at least one role (app, ops)");
  if (node.Has("token_sha256")) {
    std::vector<std::string> hashes;
    CONFIG_ASSIGN(hashes, node.Child("token_sha256").AsStringList());
    for (const std::string& h : hashes) {
      if (h.empty()) continue;  // an unset ${VAR:-}: that token is not configured
      std::string digest;
      if (!HexDigest(h, &digest)) {
        return node.Child("token_sha256").Error(
            "each entry must be the SHA-256 of a token, 64 hex characters (never the token itself)");
      }
      out->token_sha256.push_back(std::move(digest));
    }
  }
  if (node.Has("certificate_subjects")) {
    CONFIG_ASSIGN(out->certificate_subjects, node.Child("certificate_subjects").AsStringList());
  }
  if (out->token_sha256.empty() && out->certificate_subjects.empty()) {
    return node.Error("needs token_sha256 or certificate_subjects (no way to authenticate)");
  }
  if (node.Has("rate_limit")) {
    ConfigNode rl = node.Child("rate_limit");
    if (absl::Status s = rl.CheckKeys({"per_second", "burst"}); !s.ok()) return s;
    int64_t per_second = 0;
    int64_t burst = 0;
    CONFIG_ASSIGN(per_second, rl.GetInt("per_second", std::nullopt, 1, 10'000'000));
    CONFIG_ASSIGN(burst, rl.GetInt("burst", per_second, 1, 10'000'000));
    out->rate_per_second = static_cast<double>(per_second);
    out->rate_burst = static_cast<double>(burst);
  }
  return absl::OkStatus();
}

absl::Status LoadSecurity(const ConfigNode& root, GatewayConfig* c) {
  std::string transport = "tls";
  CONFIG_ASSIGN(transport, root.GetString("transport", transport));
  if (transport == "plaintext") {
    c->transport = Transport::kPlaintext;
  } else if (transport == "tls") {
    c->transport = Transport::kTls;
  } else if (transport == "mtls") {
    c->transport = Transport::kMtls;
  } else {
    return root.Child("transport").Error("must be plaintext, tls or mtls");
  }
  if (root.Has("tls")) {
    ConfigNode tls = root.Child("tls");
    if (absl::Status s = tls.CheckKeys({"cert_file", "key_file", "client_ca_file"}); !s.ok()) return s;
    CONFIG_ASSIGN(c->tls_cert_file, tls.GetString("cert_file", ""));
    CONFIG_ASSIGN(c->tls_key_file, tls.GetString("key_file", ""));
    CONFIG_ASSIGN(c->tls_client_ca_file, tls.GetString("client_ca_file", ""));
  }
  if (c->transport != Transport::kPlaintext) {
    if (c->tls_cert_file.empty() || c->tls_key_file.empty()) {
      return root.Error(StrCat("tls.cert_file and tls.key_file: are required with transport: ", transport));
    }
  }
  if (c->transport == Transport::kMtls && c->tls_client_ca_file.empty()) {
    return root.Error("tls.client_ca_file: is required with transport: mtls");
  }
  if (absl::Status s = CheckPlaintextListen(c->transport, c->listen); !s.ok()) {
    return root.Child("transport").Error(std::string(s.message()));
  }
  if (!root.Has("callers")) {
    return root.Error("callers: is required: every call is authenticated (see docs/security.md)");
  }
  ConfigNode callers = root.Child("callers");
  if (!callers.IsSequence()) return callers.Error("must be a list of callers");
  for (const ConfigNode& item : callers.Items()) {
    CallerConfig caller;
    if (absl::Status s = LoadCaller(item, &caller); !s.ok()) return s;
    c->callers.push_back(std::move(caller));
  }
  if (c->callers.empty()) return callers.Error("must list at least one caller");
  // Duplicates and other cross-caller checks: CallerRegistry::Create, run
  // here so that a bad file fails at load with its name.
  std::vector<CallerConfig> copy = c->callers;
  if (absl::StatusOr<std::unique_ptr<CallerRegistry>> reg = CallerRegistry::Create(std::move(copy));
      !reg.ok()) {
    return callers.Error(std::string(reg.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsLoopbackListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost" || host == "::1") return true;
  unsigned a = 0, b = 0, c = 0, d = 0;
  char tail = 0;
  if (std::sscanf(host.c_str(), "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4) {
    return a == 127 && b <= 255 && c <= 255 && d <= 255;
  }
  return false;
}

absl::Status CheckPlaintextListen(Transport transport, const std::string& listen) {
  if (transport != Transport::kPlaintext || IsLoopbackListen(listen)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      StrCat("plaintext is accepted only on a loopback listen address (listen is ", listen, ")"));
}

absl::StatusOr<GatewayConfig> GatewayConfig::Load(const std::string& path) {
  absl::StatusOr<ConfigNode> root = ConfigNode::LoadFile(path);
  if (!root.ok()) return root.status();
  if (absl::Status s = root->CheckKeys({"listen", "io_threads", "shutdown_grace", "catalogue",
                                        "adapters", "ledger", "redis", "fingerprint_key_file",
                                        "recovery", "fraud", "transport", "tls", "callers",
                                        "limits", "log_level", "review", "webhooks", "metrics"});
      !s.ok()) {
    return s;
  }
  GatewayConfig c;
  CONFIG_ASSIGN(c.listen, root->GetString("listen", c.listen));
  if (c.listen.find(':') == std::string::npos) {
    return root->Child("listen").Error("must be host:port");
  }
  int64_t threads = 0;
  CONFIG_ASSIGN(threads, root->GetInt("io_threads", 0, 0, 256));
  c.io_threads = static_cast<int>(threads);
  CONFIG_ASSIGN(c.shutdown_grace, root->GetDuration("shutdown_grace", c.shutdown_grace));
  CONFIG_ASSIGN(c.catalogue_path, root->GetString("catalogue", c.catalogue_path));
  CONFIG_ASSIGN(c.adapters_path, root->GetString("adapters", c.adapters_path));
  CONFIG_ASSIGN(c.fingerprint_key_file, root->GetString("fingerprint_key_file", c.fingerprint_key_file));

  CONFIG_ASSIGN(c.log_level, root->GetString("log_level", c.log_level));
  if (!ParseLogLevel(c.log_level)) {
    return root->Child("log_level").Error("must be debug, info, warn or error");
  }
  if (root->Has("limits")) {
    ConfigNode limits = root->Child("limits");
    if (absl::Status s = limits.CheckKeys({"max_request_bytes", "call_deadline",
                                           "max_recharges_deciding", "max_recharges_waiting"});
        !s.ok()) {
      return s;
    }
    CONFIG_ASSIGN(c.max_recharges_deciding,
                  limits.GetInt("max_recharges_deciding", c.max_recharges_deciding, 1, 1'000'000));
    CONFIG_ASSIGN(c.max_recharges_waiting,
                  limits.GetInt("max_recharges_waiting", c.max_recharges_waiting, 0, 10'000'000));
    CONFIG_ASSIGN(c.max_request_bytes,
                  limits.GetInt("max_request_bytes", c.max_request_bytes, 1024, 16 * 1024 * 1024));
    CONFIG_ASSIGN(c.call_deadline, limits.GetDuration("call_deadline", c.call_deadline));
    if (c.call_deadline < std::chrono::seconds(1)) {
      return limits.Child("call_deadline").Error("must be at least 1s");
    }
  }

  if (root->Has("ledger")) {
    ConfigNode ledger = root->Child("ledger");
    if (absl::Status s = ledger.CheckKeys({"backend", "path", "postgres", "group_commit_max",
                                           "key_retention", "event_retention"});
        !s.ok()) {
      return s;
    }
    CONFIG_ASSIGN(c.ledger_backend, ledger.GetString("backend", c.ledger_backend));
    if (c.ledger_backend != "sqlite" && c.ledger_backend != "postgres") {
      return ledger.Child("backend")
          .Error(StrCat("must be sqlite or postgres, got \"", c.ledger_backend, "\""));
    }
    CONFIG_ASSIGN(c.ledger_path, ledger.GetString("path", c.ledger_path));
    if (c.ledger_path.empty()) return ledger.Child("path").Error("must not be empty");
    if (c.ledger_backend == "postgres" && !ledger.Has("postgres")) {
      return ledger.Error("backend postgres needs a postgres: section (dsn, password_file)");
    }
    if (ledger.Has("postgres")) {
      ConfigNode pg = ledger.Child("postgres");
      if (absl::Status s = pg.CheckKeys(
              {"dsn", "password_file", "password_env", "read_connections", "timeout"});
          !s.ok()) {
        return s;
      }
      CONFIG_ASSIGN(c.ledger_postgres_dsn, pg.GetString("dsn"));
      // The password is never written in the file: a DSN holding one is refused.
      for (std::string_view word : {"password=", "password ="}) {
        if (c.ledger_postgres_dsn.find(word) != std::string::npos) {
          return pg.Child("dsn").Error(
              "must not hold the password: give it in password_file or password_env");
        }
      }
      if (pg.Has("password_file") && pg.Has("password_env")) {
        return pg.Child("password_env").Error("give password_file or password_env, not both");
      }
      // The password is read only for the backend in use (a sqlite node
      // needs no password file).
      const bool used = c.ledger_backend == "postgres";
      if (used && pg.Has("password_file")) {
        std::string path;
        CONFIG_ASSIGN(path, pg.GetString("password_file"));
        absl::StatusOr<Secret> password = ReadSecretFile(path);
        if (!password.ok()) {
          return pg.Child("password_file").Error(std::string(password.status().message()));
        }
        c.ledger_postgres_password = *std::move(password);
      }
      if (used && pg.Has("password_env")) {
        std::string name;
        CONFIG_ASSIGN(name, pg.GetString("password_env"));
        const char* value = std::getenv(name.c_str());
        if (value == nullptr || *value == '\0') {
          return pg.Child("password_env").Error(StrCat("environment variable ", name, " is not set"));
        }
        c.ledger_postgres_password = Secret(value);
      }
      int64_t readers = 0;
      CONFIG_ASSIGN(readers, pg.GetInt("read_connections", c.ledger_postgres_read_connections, 1, 64));
      c.ledger_postgres_read_connections = static_cast<int>(readers);
      CONFIG_ASSIGN(c.ledger_postgres_timeout, pg.GetDuration("timeout", c.ledger_postgres_timeout));
      if (c.ledger_postgres_timeout <= std::chrono::milliseconds(0)) {
        return pg.Child("timeout").Error("must be longer than 0");
      }
    }
    int64_t gcm = 0;
    CONFIG_ASSIGN(gcm, ledger.GetInt("group_commit_max", c.group_commit_max, 1, 100'000));
    c.group_commit_max = static_cast<int>(gcm);
    CONFIG_ASSIGN(c.key_retention, ledger.GetDuration("key_retention", c.key_retention));
    if (c.key_retention < std::chrono::hours(24)) {
      return ledger.Child("key_retention").Error("must be at least 24h");
    }
    CONFIG_ASSIGN(c.event_retention, ledger.GetDuration("event_retention", c.event_retention));
    if (c.event_retention < std::chrono::hours(1)) {
      return ledger.Child("event_retention").Error("must be at least 1h");
    }
  }
  if (root->Has("redis")) {
    ConfigNode redis = root->Child("redis");
    if (absl::Status s = redis.CheckKeys({"address", "cluster", "timeout", "key_prefix"}); !s.ok()) {
      return s;
    }
    CONFIG_ASSIGN(c.redis_address, redis.GetString("address", c.redis_address));
    if (absl::StatusOr<RedisClient::Options> a = ParseRedisAddress(c.redis_address); !a.ok()) {
      return redis.Child("address").Error(std::string(a.status().message()));
    }
    CONFIG_ASSIGN(c.redis_cluster, redis.GetString("cluster", c.redis_cluster));
    if (!c.redis_cluster.empty()) {
      absl::StatusOr<std::vector<RedisClient::Options>> seeds = ParseRedisAddresses(c.redis_cluster);
      if (!seeds.ok()) return redis.Child("cluster").Error(std::string(seeds.status().message()));
    }
    CONFIG_ASSIGN(c.redis_prefix, redis.GetString("key_prefix", c.redis_prefix));
    if (c.redis_prefix.empty()) return redis.Child("key_prefix").Error("must not be empty");
    CONFIG_ASSIGN(c.redis_timeout, redis.GetDuration("timeout", c.redis_timeout));
  }
  if (root->Has("fraud")) {
    ConfigNode fraud = root->Child("fraud");
    if (absl::Status s = fraud.CheckKeys({"rules"}); !s.ok()) return s;
    CONFIG_ASSIGN(c.fraud_rules_path, fraud.GetString("rules", c.fraud_rules_path));
  }
  if (root->Has("recovery")) {
    ConfigNode rec = root->Child("recovery");
    if (absl::Status s = rec.CheckKeys({"interval", "settle_after"}); !s.ok()) return s;
    CONFIG_ASSIGN(c.recovery_interval, rec.GetDuration("interval", c.recovery_interval));
    CONFIG_ASSIGN(c.recovery_settle_after, rec.GetDuration("settle_after", c.recovery_settle_after));
    if (c.recovery_interval.count() <= 0) return rec.Child("interval").Error("must be positive");
  }
  if (root->Has("review")) {
    ConfigNode review = root->Child("review");
    if (absl::Status s = review.CheckKeys({"hold_expiry"}); !s.ok()) return s;
    CONFIG_ASSIGN(c.review_hold_expiry, review.GetDuration("hold_expiry", c.review_hold_expiry));
    if (c.review_hold_expiry < std::chrono::seconds(1)) {
      return review.Child("hold_expiry").Error("must be at least 1s");
    }
  }
  if (root->Has("webhooks")) {
    ConfigNode wh = root->Child("webhooks");
    if (absl::Status s = wh.CheckKeys({"listen", "cert_file", "key_file", "max_body_bytes",
                                       "max_connections", "rate_per_second", "rate_burst"});
        !s.ok()) {
      return s;
    }
    CONFIG_ASSIGN(c.webhook_listen, wh.GetString("listen", c.webhook_listen));
    if (!c.webhook_listen.empty() && c.webhook_listen.find(':') == std::string::npos) {
      return wh.Child("listen").Error("must be host:port (or empty: no webhook port)");
    }
    CONFIG_ASSIGN(c.webhook_cert_file, wh.GetString("cert_file", c.webhook_cert_file));
    CONFIG_ASSIGN(c.webhook_key_file, wh.GetString("key_file", c.webhook_key_file));
    CONFIG_ASSIGN(c.webhook_max_body_bytes,
                  wh.GetInt("max_body_bytes", c.webhook_max_body_bytes, 1024, 16 << 20));
    CONFIG_ASSIGN(c.webhook_max_connections,
                  wh.GetInt("max_connections", c.webhook_max_connections, 1, 100'000));
    CONFIG_ASSIGN(c.webhook_rate_per_second,
                  wh.GetInt("rate_per_second", c.webhook_rate_per_second, 1, 1'000'000));
    CONFIG_ASSIGN(c.webhook_rate_burst,
                  wh.GetInt("rate_burst", c.webhook_rate_per_second * 2, 1, 1'000'000));
    if (!c.webhook_listen.empty() && (c.webhook_cert_file.empty() || c.webhook_key_file.empty())) {
      return wh.Error("cert_file and key_file are required: providers call over HTTPS");
    }
  }
  if (root->Has("metrics")) {
    ConfigNode m = root->Child("metrics");
    if (absl::Status s = m.CheckKeys({"listen"}); !s.ok()) return s;
    CONFIG_ASSIGN(c.metrics_listen, m.GetString("listen", c.metrics_listen));
    if (!c.metrics_listen.empty() && !IsLoopbackListen(c.metrics_listen)) {
      // Plain HTTP, unauthenticated: loopback only (a Prometheus on the host).
      return m.Child("listen").Error("must be a loopback host:port (plain HTTP, no auth)");
    }
  }
  // Last, so that a file missing callers still reports its other errors.
  if (absl::Status s = LoadSecurity(*root, &c); !s.ok()) return s;
  return c;
}

absl::StatusOr<Secret> LoadFingerprintKey(const std::string& file) {
  Secret key;
  if (const char* env = std::getenv("RECHARGE_FINGERPRINT_KEY"); env != nullptr && *env != '\0') {
    key = Secret(env);
    if (key.size() < 32) {
      return absl::InvalidArgumentError("RECHARGE_FINGERPRINT_KEY: must be at least 32 bytes");
    }
    return key;
  }
  absl::StatusOr<Secret> from_file = ReadSecretFile(file);
  if (!from_file.ok()) {
    return absl::InvalidArgumentError(StrCat(
        "fingerprint_key_file: ", from_file.status().message(),
        " (set RECHARGE_FINGERPRINT_KEY or create the file; ./scripts/run.sh makes one)"));
  }
  if (from_file->size() < 32) {
    return absl::InvalidArgumentError(
        StrCat("fingerprint_key_file: \"", file, "\" must hold at least 32 bytes"));
  }
  return from_file;
}

}  // namespace recharge
