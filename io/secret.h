// Secret: a string that must never be printed, logged, stored or sent
// anywhere but to the one place that needs it (a card number, a CVC, an API
// key). Printing it through operator<< or absl formatting shows "[redacted]";
// the value is reachable only through the explicitly named Reveal().
//
// Thread-safety: a const Secret may be read from any thread.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace recharge {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  Secret(const Secret&) = default;
  Secret(Secret&&) noexcept = default;
  Secret& operator=(const Secret&) = default;
  Secret& operator=(Secret&&) noexcept = default;
  ~Secret() { Wipe(); }

  // The plain value. Call it only where the value leaves for its one
  // legitimate destination (the provider's API, the HMAC).
  std::string_view Reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  size_t size() const { return value_.size(); }

  friend std::ostream& operator<<(std::ostream& os, const Secret&) {
    return os << "[redacted]";
  }
  template <typename Sink>
  friend void AbslStringify(Sink& sink, const Secret&) {
    sink.Append("[redacted]");
  }

 private:
  void Wipe() {
    volatile char* p = value_.data();
    for (size_t i = 0; i < value_.size(); ++i) p[i] = 0;
  }
  std::string value_;
};

// Reads a secret from a file, trimming surrounding whitespace. Errors name the
// file, never its content.
absl::StatusOr<Secret> ReadSecretFile(const std::string& path);

}  // namespace recharge
