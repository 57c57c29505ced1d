#include "io/redis_slot.h"

#include <array>
#include <cctype>
#include <charconv>

namespace recharge {
namespace {

constexpr std::array<uint16_t, 256> MakeCrc16Table() {
  std::array<uint16_t, 256> table{};
  for (int byte = 0; byte < 256; ++byte) {
    uint16_t crc = static_cast<uint16_t>(byte << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = static_cast<uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    table[byte] = crc;
  }
  return table;
}

constexpr std::array<uint16_t, 256> kCrc16Table = MakeCrc16Table();

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) != b[i]) return false;
  }
  return true;
}

// Commands whose first argument is not a key (the ones this project sends
// without a key, or may send to a cluster node for its own sake).
constexpr std::string_view kKeyless[] = {"ASKING",    "AUTH",   "CLIENT", "CLUSTER",  "COMMAND",
                                         "CONFIG",    "DBSIZE", "ECHO",   "FUNCTION", "HELLO",
                                         "INFO",      "MULTI",  "EXEC",   "PING",     "READONLY",
                                         "READWRITE", "SCRIPT", "SELECT", "TIME",     "WAIT"};

}  // namespace

uint16_t Crc16Xmodem(std::string_view data) {
  uint16_t crc = 0;
  for (const char c : data) {
    crc = static_cast<uint16_t>((crc << 8) ^
                                kCrc16Table[((crc >> 8) ^ static_cast<uint8_t>(c)) & 0xFF]);
  }
  return crc;
}

uint16_t RedisKeySlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return static_cast<uint16_t>(Crc16Xmodem(key) % kRedisClusterSlots);
}

std::optional<std::string_view> RedisCommandKey(const std::vector<std::string>& args) {
  if (args.size() < 2) return std::nullopt;
  const std::string_view name = args[0];
  for (std::string_view keyless : kKeyless) {
    if (EqualsIgnoringCase(name, keyless)) return std::nullopt;
  }
  if (EqualsIgnoringCase(name, "EVAL") || EqualsIgnoringCase(name, "EVALSHA") ||
      EqualsIgnoringCase(name, "EVAL_RO") || EqualsIgnoringCase(name, "EVALSHA_RO") ||
      EqualsIgnoringCase(name, "FCALL") || EqualsIgnoringCase(name, "FCALL_RO")) {
    if (args.size() < 4) return std::nullopt;
    long numkeys = 0;
    const std::string& n = args[2];
    auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), numkeys);
    if (ec != std::errc() || ptr != n.data() + n.size() || numkeys <= 0) return std::nullopt;
    return std::string_view(args[3]);
  }
  return std::string_view(args[1]);
}

}  // namespace recharge
