#include "gateway/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/test_files.h"
#include <stdlib.h>

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
