// Structured log lines on stderr: one JSON object a line, with a timestamp,
// a level and an event name. Callers must never pass a secret: values are
// plain strings, and Secret has no conversion to one.
//
// Thread-safety: each line is written with one write(2); lines from
// concurrent threads do not interleave.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace recharge {

using LogFields = std::initializer_list<std::pair<std::string_view, std::string>>;

void LogInfo(std::string_view event, LogFields fields = {});
void LogWarn(std::string_view event, LogFields fields = {});
void LogError(std::string_view event, LogFields fields = {});

}  // namespace recharge
