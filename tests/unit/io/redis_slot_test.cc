// Key hash slots against the cluster specification's examples (the same keys
// are checked against a real server's CLUSTER KEYSLOT in
// tests/integration/redis_cluster_test.cc), and the key that routes a command.
#include "io/redis_slot.h"

#include <gtest/gtest.h>

namespace recharge {
namespace {

TEST(RedisSlot, Crc16IsTheXmodemVariant) {
  EXPECT_EQ(Crc16Xmodem("123456789"), 0x31C3);  // the spec's check value
  EXPECT_EQ(Crc16Xmodem(""), 0);
}

TEST(RedisSlot, PlainKeysHashWhole) {
  // Values CLUSTER KEYSLOT gives on redis-server 7.0.
  EXPECT_EQ(RedisKeySlot("foo"), 12182);
  EXPECT_EQ(RedisKeySlot("bar"), 5061);
  EXPECT_EQ(RedisKeySlot("hello"), 866);
  EXPECT_EQ(RedisKeySlot(""), 0);
  EXPECT_EQ(RedisKeySlot("123456789"), 0x31C3 % kRedisClusterSlots);
}

TEST(RedisSlot, KeysSharingAHashTagShareASlot) {
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("{user1000}.followers"));
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("user1000"));
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), 3443);
  // The counter store's keys: one slot per entity.
  EXPECT_EQ(RedisKeySlot("rc:{u:42}:user_recharges_1h"),
            RedisKeySlot("rc:{u:42}:user_spend_usd_24h"));
  EXPECT_EQ(RedisKeySlot("rc:{u:42}:n"), RedisKeySlot("u:42"));
  EXPECT_NE(RedisKeySlot("rc:{u:42}:n"), RedisKeySlot("rc:{u:43}:n"));
}

TEST(RedisSlot, HashTagEdgeCasesFollowTheSpec) {
  // "{}" is an empty tag: the whole key is hashed.
  EXPECT_EQ(RedisKeySlot("foo{}{bar}"), Crc16Xmodem("foo{}{bar}") % kRedisClusterSlots);
  EXPECT_EQ(RedisKeySlot("foo{}{bar}"), 8363);
  EXPECT_EQ(RedisKeySlot("{}"), Crc16Xmodem("{}") % kRedisClusterSlots);
  // The tag runs from the first '{' to the first '}' after it.
  EXPECT_EQ(RedisKeySlot("foo{{bar}}zap"), RedisKeySlot("{bar"));
  EXPECT_EQ(RedisKeySlot("foo{{bar}}zap"), Crc16Xmodem("{bar") % kRedisClusterSlots);
  EXPECT_EQ(RedisKeySlot("foo{bar}{zap}"), RedisKeySlot("bar"));
  // No closing brace: no tag.
  EXPECT_EQ(RedisKeySlot("{"), Crc16Xmodem("{") % kRedisClusterSlots);
  EXPECT_EQ(RedisKeySlot("a{b"), Crc16Xmodem("a{b") % kRedisClusterSlots);
  EXPECT_EQ(RedisKeySlot("a}b{c"), Crc16Xmodem("a}b{c") % kRedisClusterSlots);
  // Binary-safe.
  EXPECT_EQ(RedisKeySlot(std::string_view("x{\0}y", 5)),
            Crc16Xmodem(std::string_view("\0", 1)) % kRedisClusterSlots);
}

TEST(RedisCommandKey, OrdinaryCommandsRouteByTheirFirstArgument) {
  EXPECT_EQ(RedisCommandKey({"GET", "k"}), "k");
  EXPECT_EQ(RedisCommandKey({"hset", "h", "f", "v"}), "h");
  EXPECT_EQ(RedisCommandKey({"MGET", "{t}a", "{t}b"}), "{t}a");
  EXPECT_FALSE(RedisCommandKey({"GET"}).has_value());
  EXPECT_FALSE(RedisCommandKey({}).has_value());
}

TEST(RedisCommandKey, ScriptsRouteByTheirFirstKey) {
  EXPECT_EQ(RedisCommandKey({"EVALSHA", "abc", "2", "{u:1}:a", "{u:1}:b", "arg"}), "{u:1}:a");
  EXPECT_EQ(RedisCommandKey({"eval", "return 1", "1", "k"}), "k");
  EXPECT_EQ(RedisCommandKey({"FCALL", "f", "1", "k"}), "k");
  EXPECT_FALSE(RedisCommandKey({"EVALSHA", "abc", "0", "arg"}).has_value());
  EXPECT_FALSE(RedisCommandKey({"EVALSHA", "abc", "1"}).has_value());
  EXPECT_FALSE(RedisCommandKey({"EVALSHA", "abc", "x", "k"}).has_value());
}

TEST(RedisCommandKey, KeylessCommandsHaveNone) {
  EXPECT_FALSE(RedisCommandKey({"SCRIPT", "LOAD", "return 1"}).has_value());
  EXPECT_FALSE(RedisCommandKey({"CLUSTER", "SLOTS"}).has_value());
  EXPECT_FALSE(RedisCommandKey({"ping", "hello"}).has_value());
  EXPECT_FALSE(RedisCommandKey({"INFO", "replication"}).has_value());
}

}  // namespace
}  // namespace recharge
