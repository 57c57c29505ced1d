#include "gateway/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/test_files.h"
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace recharge {
namespace {

using ::testing::HasSubstr;

using ::recharge::testing::WriteTemp;

TEST(GatewayConfig, ShippedExampleLoadsWithDocumentedDefaults) {
  unsetenv("GATEWAY_PORT");
  auto c = GatewayConfig::Load(RECHARGE_SOURCE_DIR "/configs/gateway.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->ledger_backend, "sqlite");
  EXPECT_EQ(c->key_retention, std::chrono::hours(24));
  EXPECT_EQ(c->shutdown_grace, std::chrono::seconds(10));
  EXPECT_EQ(c->max_recharges_deciding, 64);
  EXPECT_EQ(c->max_recharges_waiting, 20000);
}

TEST(GatewayConfig, ListenTakesPortFromEnvironment) {
  setenv("GATEWAY_PORT", "50999", 1);
  auto c = GatewayConfig::Load(RECHARGE_SOURCE_DIR "/configs/gateway.yaml");
  unsetenv("GATEWAY_PORT");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->listen, "127.0.0.1:50999");
}

TEST(GatewayConfig, ErrorsNameFileLineAndField) {
  auto c = GatewayConfig::Load(WriteTemp("gw_bad.yaml", "listen: 127.0.0.1:1\nledger:\n  path: \"\"\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("gw_bad.yaml:3:"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("ledger.path"));

  auto d = GatewayConfig::Load(WriteTemp("gw_dur.yaml", "shutdown_grace: 10\n"));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("gw_dur.yaml:1:17: shutdown_grace: must be a duration"));

  auto e = GatewayConfig::Load(WriteTemp("gw_typo.yaml", "ledgr: {path: x}\n"));
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("ledgr: unknown option"));

  auto f = GatewayConfig::Load(WriteTemp("gw_ret.yaml", "ledger: {key_retention: 1h}\n"));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("at least 24h"));
}

constexpr const char* kCallers =
    "callers:\n"
    "  - name: app\n"
    "    roles: [app]\n"
    "    token_sha256: [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\n";

TEST(GatewayConfig, ShippedExampleDefinesDevCallersWithTokensFromTheEnvironment) {
  unsetenv("RECHARGE_DEV_APP_TOKEN_SHA256");
  setenv("RECHARGE_DEV_OPS_TOKEN_SHA256", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", 1);
  unsetenv("GATEWAY_TRANSPORT");
  auto c = GatewayConfig::Load(RECHARGE_SOURCE_DIR "/configs/gateway.yaml");
  unsetenv("RECHARGE_DEV_OPS_TOKEN_SHA256");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transport, Transport::kTls);  // the secure default
  ASSERT_EQ(c->callers.size(), 2u);
  EXPECT_EQ(c->callers[0].name, "dev-app");
  EXPECT_EQ(c->callers[0].roles, kRoleApp);
  EXPECT_TRUE(c->callers[0].token_sha256.empty());  // unset variable: skipped
  EXPECT_EQ(c->callers[0].certificate_subjects, std::vector<std::string>{"app-client"});
  EXPECT_EQ(c->callers[1].token_sha256.size(), 1u);
  EXPECT_EQ(c->callers[1].rate_per_second, 50);
  EXPECT_EQ(c->max_request_bytes, 65536);
  EXPECT_EQ(c->call_deadline, std::chrono::seconds(30));
}

TEST(GatewayConfig, PlaintextOnlyOnLoopbackAndOnlyWhenSaid) {
  auto ok = GatewayConfig::Load(WriteTemp("gw_plain.yaml", std::string("listen: 127.0.0.1:1\ntransport: plaintext\n") + kCallers));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->transport, Transport::kPlaintext);
  auto pub = GatewayConfig::Load(WriteTemp("gw_pub.yaml", std::string("listen: 0.0.0.0:1\ntransport: plaintext\n") + kCallers));
  ASSERT_FALSE(pub.ok());
  EXPECT_THAT(std::string(pub.status().message()), HasSubstr("gw_pub.yaml:2:"));
  EXPECT_THAT(std::string(pub.status().message()), HasSubstr("only on a loopback listen address"));
  auto tls = GatewayConfig::Load(WriteTemp("gw_tls.yaml", std::string("listen: 0.0.0.0:1\n") + kCallers));
  ASSERT_FALSE(tls.ok());  // tls by default: the certificate is required
  EXPECT_THAT(std::string(tls.status().message()), HasSubstr("tls.cert_file and tls.key_file: are required"));
  auto mtls = GatewayConfig::Load(WriteTemp("gw_mtls.yaml",
      std::string("transport: mtls\ntls: {cert_file: a.pem, key_file: a.key}\n") + kCallers));
  EXPECT_THAT(std::string(mtls.status().message()), HasSubstr("tls.client_ca_file: is required"));
  EXPECT_TRUE(IsLoopbackListen("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackListen("127.8.9.10:1"));
  EXPECT_TRUE(IsLoopbackListen("[::1]:50051"));
  EXPECT_TRUE(IsLoopbackListen("localhost:50051"));
  EXPECT_FALSE(IsLoopbackListen("0.0.0.0:50051"));
  EXPECT_FALSE(IsLoopbackListen("[::]:50051"));
  EXPECT_FALSE(IsLoopbackListen("10.0.0.1:50051"));
  EXPECT_FALSE(IsLoopbackListen("127.0.0.1.evil.example:50051"));
}

TEST(GatewayConfig, PostgresLedgerTakesADsnAndAPasswordFromAFileOrTheEnvironment) {
  const std::string base = std::string("listen: 127.0.0.1:1\ntransport: plaintext\n") + kCallers;
  const int ledger_line = 1 + static_cast<int>(std::count(base.begin(), base.end(), '\n'));
  const std::string pw = WriteTemp("gw_pg_password", "s3cret-pw\n");
  auto ok = GatewayConfig::Load(WriteTemp("gw_pg.yaml", base + "ledger:\n  backend: postgres\n  postgres:\n    dsn: host=127.0.0.1 dbname=r\n"
                    "    password_file: " + pw + "\n    read_connections: 3\n    timeout: 2s\n"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->ledger_backend, "postgres");
  EXPECT_EQ(ok->ledger_postgres_dsn, "host=127.0.0.1 dbname=r");
  EXPECT_EQ(ok->ledger_postgres_password.Reveal(), "s3cret-pw");
  EXPECT_EQ(ok->ledger_postgres_read_connections, 3);
  EXPECT_EQ(ok->ledger_postgres_timeout, std::chrono::seconds(2));

  setenv("GW_TEST_PG_PASSWORD", "from-env", 1);
  auto env = GatewayConfig::Load(WriteTemp("gw_pg_env.yaml", base + "ledger:\n  backend: postgres\n  postgres: {dsn: dbname=r, "
                        "password_env: GW_TEST_PG_PASSWORD}\n"));
  unsetenv("GW_TEST_PG_PASSWORD");
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->ledger_postgres_password.Reveal(), "from-env");

  auto no_section = GatewayConfig::Load(WriteTemp("gw_pg_none.yaml", base + "ledger: {backend: postgres}\n"));
  ASSERT_FALSE(no_section.ok());
  EXPECT_THAT(std::string(no_section.status().message()), HasSubstr("needs a postgres: section"));
  auto in_dsn = GatewayConfig::Load(WriteTemp("gw_pg_dsn.yaml", base + "ledger:\n  backend: postgres\n  postgres: {dsn: dbname=r password=x}\n"));
  ASSERT_FALSE(in_dsn.ok());
  EXPECT_THAT(std::string(in_dsn.status().message()),
              HasSubstr("gw_pg_dsn.yaml:" + std::to_string(ledger_line + 2) +
                        ":19: ledger.postgres.dsn: must not hold the password"));
  EXPECT_THAT(std::string(in_dsn.status().message()), ::testing::Not(HasSubstr("password=x")));
  auto unset = GatewayConfig::Load(WriteTemp("gw_pg_unset.yaml", base + "ledger:\n  backend: postgres\n  postgres: {dsn: dbname=r, password_env: GW_TEST_UNSET_PW}\n"));
  ASSERT_FALSE(unset.ok());
  EXPECT_THAT(std::string(unset.status().message()), HasSubstr("GW_TEST_UNSET_PW is not set"));
  auto other = GatewayConfig::Load(WriteTemp("gw_pg_other.yaml", base + "ledger: {backend: mysql}\n"));
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(std::string(other.status().message()),
              HasSubstr("ledger.backend: must be sqlite or postgres, got \"mysql\""));
  // A sqlite node does not read the postgres password.
  auto sqlite = GatewayConfig::Load(WriteTemp("gw_pg_sqlite.yaml", base + "ledger:\n  backend: sqlite\n  postgres: {dsn: dbname=r, password_file: /nonexistent/pw}\n"));
  EXPECT_TRUE(sqlite.ok()) << sqlite.status();
}

TEST(GatewayConfig, RedisIsOneServerOrAClusterBySeeds) {
  const std::string base = std::string("listen: 127.0.0.1:1\ntransport: plaintext\n") + kCallers;
  const int redis_line = 1 + static_cast<int>(std::count(base.begin(), base.end(), '\n'));
  unsetenv("REDIS_CLUSTER");
  auto shipped = GatewayConfig::Load(RECHARGE_SOURCE_DIR "/configs/gateway.yaml");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_EQ(shipped->redis_cluster, "");  // ${REDIS_CLUSTER:-} unset: one server
  setenv("REDIS_CLUSTER", "127.0.0.1:7001,127.0.0.1:7002", 1);
  auto from_env = GatewayConfig::Load(RECHARGE_SOURCE_DIR "/configs/gateway.yaml");
  unsetenv("REDIS_CLUSTER");
  ASSERT_TRUE(from_env.ok()) << from_env.status();
  EXPECT_EQ(from_env->redis_cluster, "127.0.0.1:7001,127.0.0.1:7002");

  auto bad_seed = GatewayConfig::Load(
      WriteTemp("gw_cluster.yaml", base + "redis:\n  cluster: 127.0.0.1:7001,localhost\n"));
  ASSERT_FALSE(bad_seed.ok());
  EXPECT_THAT(std::string(bad_seed.status().message()),
              HasSubstr("gw_cluster.yaml:" + std::to_string(redis_line + 1) + ":12: redis.cluster:"));
  EXPECT_THAT(std::string(bad_seed.status().message()), HasSubstr("localhost"));
  auto bad_address = GatewayConfig::Load(
      WriteTemp("gw_redis_addr.yaml", base + "redis: {address: \"127.0.0.1:notaport\"}\n"));
  ASSERT_FALSE(bad_address.ok());
  EXPECT_THAT(std::string(bad_address.status().message()), HasSubstr("redis.address:"));
  EXPECT_THAT(std::string(bad_address.status().message()), HasSubstr("notaport"));
}

TEST(GatewayConfig, AdmissionLimitsAreCheckedAtTheirLine) {
  const std::string base = std::string("listen: 127.0.0.1:1\ntransport: plaintext\n") + kCallers;
  auto c = GatewayConfig::Load(
      WriteTemp("gw_admit.yaml", base + "limits:\n  max_recharges_deciding: 0\n"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("gw_admit.yaml:8:27: limits.max_recharges_deciding"));
  auto d = GatewayConfig::Load(WriteTemp(
      "gw_admit2.yaml",
      base + "limits:\n  max_recharges_deciding: 8\n  max_recharges_waiting: 0\n"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->max_recharges_deciding, 8);
  EXPECT_EQ(d->max_recharges_waiting, 0);
}

TEST(GatewayConfig, CallersAreRequiredAndCheckedAtTheirLine) {
  auto none = GatewayConfig::Load(WriteTemp("gw_nocallers.yaml", "transport: plaintext\n"));
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("callers: is required"));
  auto raw = GatewayConfig::Load(WriteTemp("gw_raw.yaml",
      "transport: plaintext\ncallers:\n  - name: a\n    roles: [app]\n    token_sha256: [hunter2]\n"));
  ASSERT_FALSE(raw.ok());
  EXPECT_THAT(std::string(raw.status().message()), HasSubstr("gw_raw.yaml:5:"));
  EXPECT_THAT(std::string(raw.status().message()), HasSubstr("64 hex characters"));
  EXPECT_THAT(std::string(raw.status().message()), ::testing::Not(HasSubstr("hunter2")));
  auto role = GatewayConfig::Load(WriteTemp("gw_role.yaml",
      "transport: plaintext\ncallers:\n  - name: a\n    roles: [admin]\n    certificate_subjects: [x]\n"));
  EXPECT_THAT(std::string(role.status().message()), HasSubstr("unknown role \"admin\""));
  auto typo = GatewayConfig::Load(WriteTemp("gw_ctypo.yaml",
      "transport: plaintext\ncallers:\n  - name: a\n    roles: [app]\n    tokens: [x]\n"));
  EXPECT_THAT(std::string(typo.status().message()), HasSubstr("tokens: unknown option"));
  auto dup = GatewayConfig::Load(WriteTemp("gw_cdup.yaml",
      "transport: plaintext\ncallers:\n  - {name: a, roles: [app], certificate_subjects: [x]}\n"
      "  - {name: a, roles: [ops], certificate_subjects: [y]}\n"));
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("duplicate name"));
  auto rate = GatewayConfig::Load(WriteTemp("gw_rate.yaml",
      "transport: plaintext\ncallers:\n  - {name: a, roles: [app], certificate_subjects: [x], rate_limit: {per_second: 0}}\n"));
  EXPECT_FALSE(rate.ok());
  auto level = GatewayConfig::Load(WriteTemp("gw_level.yaml", std::string("transport: plaintext\nlog_level: loud\n") + kCallers));
  EXPECT_THAT(std::string(level.status().message()), HasSubstr("log_level: must be debug, info, warn or error"));
}

TEST(FingerprintKey, ComesFromEnvironmentOrFileAndMustBeLong) {
  setenv("RECHARGE_FINGERPRINT_KEY", "short", 1);
  auto k = LoadFingerprintKey("/nonexistent");
  ASSERT_FALSE(k.ok());
  EXPECT_THAT(std::string(k.status().message()), ::testing::Not(HasSubstr("short")));
  unsetenv("RECHARGE_FINGERPRINT_KEY");
  auto missing = LoadFingerprintKey("/nonexistent/key");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/key"));
  const std::string file = WriteTemp("fp.key", std::string(64, 'a') + "\n");
  auto ok = LoadFingerprintKey(file);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 64u);
}

}  // namespace
}  // namespace recharge
