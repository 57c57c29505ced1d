#include "gateway/config.h"

#include <cstdlib>

#include "io/strings.h"
#include "io/config_node.h"

namespace recharge {

#define CONFIG_ASSIGN(lhs, expr)        \
  do {                                  \
    auto _v = (expr);                   \
    if (!_v.ok()) return _v.status();   \
    lhs = *std::move(_v);               \
  } while (0)

absl::StatusOr<GatewayConfig> GatewayConfig::Load(const std::string& path) {
  absl::StatusOr<ConfigNode> root = ConfigNode::LoadFile(path);
  if (!root.ok()) return root.status();
  if (absl::Status s = root->CheckKeys({"listen", "io_threads", "shutdown_grace", "catalogue",
                                        "adapters", "ledger", "redis", "fingerprint_key_file",
                                        "recovery", "fraud"});
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

  if (root->Has("ledger")) {
    ConfigNode ledger = root->Child("ledger");
    if (absl::Status s = ledger.CheckKeys({"backend", "path", "group_commit_max", "key_retention"});
        !s.ok()) {
      return s;
    }
    CONFIG_ASSIGN(c.ledger_backend, ledger.GetString("backend", c.ledger_backend));
    if (c.ledger_backend != "sqlite") {
      return ledger.Child("backend").Error("must be sqlite");
    }
    CONFIG_ASSIGN(c.ledger_path, ledger.GetString("path", c.ledger_path));
    if (c.ledger_path.empty()) return ledger.Child("path").Error("must not be empty");
    int64_t gcm = 0;
    CONFIG_ASSIGN(gcm, ledger.GetInt("group_commit_max", c.group_commit_max, 1, 100'000));
    c.group_commit_max = static_cast<int>(gcm);
    CONFIG_ASSIGN(c.key_retention, ledger.GetDuration("key_retention", c.key_retention));
    if (c.key_retention < std::chrono::hours(24)) {
      return ledger.Child("key_retention").Error("must be at least 24h");
    }
  }
  if (root->Has("redis")) {
    ConfigNode redis = root->Child("redis");
    if (absl::Status s = redis.CheckKeys({"address", "timeout", "key_prefix"}); !s.ok()) return s;
    CONFIG_ASSIGN(c.redis_address, redis.GetString("address", c.redis_address));
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
