// StrCat / StrAppend / StrJoin over std::string_view and numbers.
//
// Debian's Abseil is built with its own absl::string_view (not an alias of
// std::string_view), so StrCat does not take std::string_view; these
// small helpers do. Thread-safe (pure functions).
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace recharge {
namespace strings_internal {

template <typename T>
void AppendOne(std::string* out, const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    out->append(value ? "true" : "false");
  } else if constexpr (std::is_same_v<T, char>) {
    out->push_back(value);
  } else if constexpr (std::is_arithmetic_v<T>) {
    out->append(std::to_string(value));
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out->append(std::string_view(value));
  } else {  // absl::string_view and other views with data() and size()
    out->append(value.data(), value.size());
  }
}

}  // namespace strings_internal

template <typename... Args>
void StrAppend(std::string* out, const Args&... args) {
  (strings_internal::AppendOne(out, args), ...);
}

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::string out;
  StrAppend(&out, args...);
  return out;
}

template <typename Container>
std::string StrJoin(const Container& items, std::string_view sep) {
  std::string out;
  bool first = true;
  for (const auto& item : items) {
    if (!first) out.append(sep);
    first = false;
    strings_internal::AppendOne(&out, item);
  }
  return out;
}

// The first `n` characters of UTF-8 `text`, cut at a character boundary
// (a provider's limit in characters, e.g. 255 for a refund reason).
inline std::string_view FirstChars(std::string_view text, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool starts_char = (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
    if (starts_char && count++ == n) return text.substr(0, i);
  }
  return text;
}

}  // namespace recharge
