#include "adapters/webhook_signature.h"

#include <openssl/crypto.h>

#include <charconv>

#include "io/crypto.h"
#include "io/strings.h"

namespace recharge {
namespace {

constexpr size_t kMaxHeaderBytes = 1024;

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<SignatureHeader> ParseSignatureHeader(std::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError("signature header: missing");
  if (value.size() > kMaxHeaderBytes) return absl::InvalidArgumentError("signature header: too long");
  SignatureHeader out;
  bool have_t = false;
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError("signature header: an entry without '='");
    }
    const std::string_view key = item.substr(0, eq);
    const std::string_view val = item.substr(eq + 1);
    if (key == "t") {
      int64_t t = 0;
      auto [ptr, ec] = std::from_chars(val.data(), val.data() + val.size(), t);
      if (have_t || ec != std::errc() || ptr != val.data() + val.size() || t <= 0) {
        return absl::InvalidArgumentError("signature header: t must be one positive unix time");
      }
      out.timestamp = t;
      have_t = true;
    } else if (key == "v1") {
      if (val.size() != 64 || !IsLowerHex(val)) {
        return absl::InvalidArgumentError("signature header: v1 must be 64 lowercase hex digits");
      }
      out.v1.emplace_back(val);
    }
  }
  if (!have_t) return absl::InvalidArgumentError("signature header: no t");
  if (out.v1.empty()) return absl::InvalidArgumentError("signature header: no v1");
  return out;
}

absl::Status VerifyWebhookSignature(const Secret& secret, std::string_view header,
                                    std::string_view body, std::chrono::system_clock::time_point now,
                                    std::chrono::seconds tolerance) {
  absl::StatusOr<SignatureHeader> parsed = ParseSignatureHeader(header);
  if (!parsed.ok()) return absl::UnauthenticatedError(parsed.status().message());
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  const int64_t skew = now_s > parsed->timestamp ? now_s - parsed->timestamp : parsed->timestamp - now_s;
  if (skew > tolerance.count()) {
    return absl::UnauthenticatedError(
        StrCat("signature: timestamp ", skew, " s away from now (tolerance ", tolerance.count(), " s)"));
  }
  const std::string expected =
      HexEncode(HmacSha256(secret, StrCat(parsed->timestamp, ".", body)));
  bool match = false;
  for (const std::string& v1 : parsed->v1) {
    // Every candidate is compared in full, in constant time.
    match |= CRYPTO_memcmp(v1.data(), expected.data(), expected.size()) == 0;
  }
  if (!match) return absl::UnauthenticatedError("signature: no v1 matches the body");
  return absl::OkStatus();
}

}  // namespace recharge
