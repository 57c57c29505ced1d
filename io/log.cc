#include "io/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include <nlohmann/json.hpp>

namespace recharge {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

void Write(std::string_view level, std::string_view event, LogFields fields) {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[64];
  const int ms = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  nlohmann::ordered_json j;
  j["ts"] = ts;
  j["level"] = level;
  j["event"] = event;
  for (const auto& [k, v] : fields) j[std::string(k)] = v;
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
bool DebugLogging() { return g_level.load(std::memory_order_relaxed) <= static_cast<int>(LogLevel::kDebug); }

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

namespace {
bool Enabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}
}  // namespace

void LogDebug(std::string_view event, LogFields fields) {
  if (Enabled(LogLevel::kDebug)) Write("debug", event, fields);
}
void LogInfo(std::string_view event, LogFields fields) {
  if (Enabled(LogLevel::kInfo)) Write("info", event, fields);
}
void LogWarn(std::string_view event, LogFields fields) {
  if (Enabled(LogLevel::kWarn)) Write("warn", event, fields);
}
void LogError(std::string_view event, LogFields fields) { Write("error", event, fields); }

}  // namespace recharge
