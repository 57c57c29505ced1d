// Redis Cluster key hash slots (https://redis.io/docs/reference/cluster-spec/):
// a key's slot is CRC16 (XMODEM) of the key mod 16384, or of its hash tag —
// the text between the first '{' and the first '}' after it, when that text
// is not empty — so keys sharing a tag ("rc:{u:42}:n", "rc:{u:42}:usd") share
// a slot and can be used together in one command or script.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace recharge {

inline constexpr int kRedisClusterSlots = 16384;

// CRC16-CCITT, XMODEM variant (polynomial 0x1021, initial value 0), the
// checksum the cluster specification uses.
uint16_t Crc16Xmodem(std::string_view data);

// The hash slot of `key`, 0..16383, hash tags honoured.
uint16_t RedisKeySlot(std::string_view key);

// The key that picks the slot of a command (`args[0]` is its name): the first
// key after numkeys for EVAL, EVALSHA, FCALL and their _RO forms (none when
// numkeys is 0); nothing for commands that take no key (PING, INFO, SCRIPT,
// CLUSTER...); `args[1]` otherwise. A view into `args`.
std::optional<std::string_view> RedisCommandKey(const std::vector<std::string>& args);

}  // namespace recharge
