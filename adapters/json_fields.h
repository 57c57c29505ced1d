// Reading provider JSON answers without exceptions: the one helper every
// adapter's transformers use. Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace recharge {

// Parses `body`; a discarded value (is_discarded()) when it is not JSON.
inline nlohmann::json ParseJson(std::string_view body) {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

// j[key] if `j` is an object and the member is a string, else "".
inline std::string JsonString(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// True if the answer states that nothing was charged ("charged": false).
inline bool SaysNotCharged(const nlohmann::json& j) {
  return j.is_object() && j.contains("charged") && j["charged"].is_boolean() &&
         !j["charged"].get<bool>();
}

}  // namespace recharge
