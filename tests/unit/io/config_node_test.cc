#include "io/config_node.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

namespace recharge {
namespace {

using ::testing::HasSubstr;

TEST(ConfigNode, ErrorNamesFileLineColumnAndField) {
  auto root = ConfigNode::LoadString("a: 1\nledger:\n  path: 12x\n", "test.yaml");
  ASSERT_TRUE(root.ok());
  auto v = root->Child("ledger").GetInt("path", std::nullopt, 0, 10);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(std::string(v.status().message()),
            "test.yaml:3:9: ledger.path: must be an integer, got \"12x\"");
}

TEST(ConfigNode, SyntaxErrorHasLine) {
  auto root = ConfigNode::LoadString("a: [1, 2\nb: 3\n", "bad.yaml");
  ASSERT_FALSE(root.ok());
  EXPECT_THAT(std::string(root.status().message()), HasSubstr("bad.yaml:"));
}

TEST(ConfigNode, UnknownKeyIsRejected) {
  auto root = ConfigNode::LoadString("listen: x\nlisten_port: 5\n", "g.yaml");
  ASSERT_TRUE(root.ok());
  absl::Status s = root->CheckKeys({"listen"});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("g.yaml:2:"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("listen_port: unknown option"));
}

TEST(ConfigNode, AKeyThatIsNotANameIsAnErrorAtItsPlace) {
  auto root = ConfigNode::LoadString("a: 1\nb:\n  ? [x, y]\n  : 2\n", "k.yaml");
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(std::string(root.status().message()),
            "k.yaml:3:5: a key must be a name, not a list or a mapping");
}

TEST(ConfigNode, DurationsNeedAUnit) {
  EXPECT_EQ(ParseDuration("250ms"), std::chrono::milliseconds(250));
  EXPECT_EQ(ParseDuration("5s"), std::chrono::seconds(5));
  EXPECT_EQ(ParseDuration("24h"), std::chrono::hours(24));
  EXPECT_EQ(ParseDuration("5"), std::nullopt);
  EXPECT_EQ(ParseDuration("s"), std::nullopt);
  EXPECT_EQ(ParseDuration("5 s"), std::nullopt);
}

TEST(ConfigNode, ExpandsEnvironmentWithDefaults) {
  setenv("RECHARGE_TEST_PORT", "7000", 1);
  unsetenv("RECHARGE_TEST_UNSET");
  EXPECT_EQ(ExpandEnv("h:${RECHARGE_TEST_PORT:-1}"), "h:7000");
  EXPECT_EQ(ExpandEnv("h:${RECHARGE_TEST_UNSET:-1}"), "h:1");
  EXPECT_EQ(ExpandEnv("h:${RECHARGE_TEST_UNSET}"), "h:");
}

}  // namespace
}  // namespace recharge
