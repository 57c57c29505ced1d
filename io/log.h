// Structured log lines on stderr: one JSON object a line, with a timestamp,
// a level and an event name. Callers must never pass a secret: values are
// plain strings, and Secret has no conversion to one.
//
// Thread-safety: each line is written with one write(2); lines from
// concurrent threads do not interleave.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace recharge {

using LogFields = std::initializer_list<std::pair<std::string_view, std::string>>;

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Lines below `level` are dropped (default kInfo). Set once at start-up.
void SetLogLevel(LogLevel level);
bool DebugLogging();  // true when debug lines are written
// "debug" | "info" | "warn" | "error"; nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view name);

void LogDebug(std::string_view event, LogFields fields = {});
void LogInfo(std::string_view event, LogFields fields = {});
void LogWarn(std::string_view event, LogFields fields = {});
void LogError(std::string_view event, LogFields fields = {});

}  // namespace recharge
