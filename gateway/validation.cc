#include "gateway/validation.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>

#include "io/strings.h"

namespace recharge {
namespace {

using recharge::v1::RecordRechargeRequest;

constexpr size_t kMaxIdBytes = 128;
constexpr size_t kMaxPackageIdBytes = 64;
constexpr size_t kMaxEchoBytes = 64;
constexpr size_t kMaxMetadataKeys = 20;
constexpr size_t kMaxMetadataKeyBytes = 40;
constexpr size_t kMaxMetadataValueBytes = 500;
constexpr size_t kMaxNoteBytes = 1024;
// A run of this many digits could be a card number: never in a message.
constexpr size_t kMinMaskedDigitRun = 12;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Every digit of a run of 12 or more becomes '*'.
std::string MaskDigitRuns(std::string s) {
  size_t i = 0;
  while (i < s.size()) {
    if (!IsDigit(s[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < s.size() && IsDigit(s[end])) ++end;
    if (end - i >= kMinMaskedDigitRun) std::fill(s.begin() + i, s.begin() + end, '*');
    i = end;
  }
  return s;
}

// The one way an error is made here: the field path first, and nothing that
// could be a card number.
absl::Status Bad(std::string_view field, std::string_view message) {
  return absl::InvalidArgumentError(MaskDigitRuns(StrCat(field, ": ", message)));
}

// Decodes the code point at s[*i] and advances *i past it; -1 (and *i past
// the bad byte) if the sequence there is ill-formed (RFC 3629, table 3-7 of
// the Unicode standard).
int32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(*i);
  if (b0 < 0x80) {
    ++*i;
    return b0;
  }
  int len = 0;
  int32_t cp = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {  // C0 and C1 would be overlong
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    ++*i;  // a continuation byte, C0, C1 or F5..FF
    return -1;
  }
  if (s.size() - *i < static_cast<size_t>(len)) {
    ++*i;
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    const unsigned char b = byte(*i + k);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  *i += len;
  return cp;
}

// C0, DEL and C1.
bool IsControl(int32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

enum class TextProblem { kNone, kNotUtf8, kControl };

TextProblem ScanText(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const int32_t cp = NextCodePoint(s, &i);
    if (cp < 0) return TextProblem::kNotUtf8;
    if (IsControl(cp)) return TextProblem::kControl;
  }
  return TextProblem::kNone;
}

// `value` quoted for an error message: at most its first 64 bytes (cut at a
// character boundary, "..." marks the cut), and only if those are valid
// UTF-8 with no control characters; "(unprintable)" otherwise. Reads at most
// 64 bytes of `value`, whatever its size.
std::string Printable(std::string_view value) {
  std::string_view shown = value;
  if (shown.size() > kMaxEchoBytes) {
    size_t cut = kMaxEchoBytes;
    // Back up over continuation bytes to the start of a character.
    const auto continuation = [&](size_t k) {
      return (static_cast<unsigned char>(value[k]) & 0xC0) == 0x80;
    };
    while (cut > kMaxEchoBytes - 3 && continuation(cut)) --cut;
    shown = value.substr(0, cut);
  }
  if (ScanText(shown) != TextProblem::kNone) return "(unprintable)";
  return StrCat("\"", shown, shown.size() < value.size() ? "...\"" : "\"");
}

bool AllDigits(std::string_view s) {
  for (char c : s) {
    if (!IsDigit(c)) return false;
  }
  return !s.empty();
}

bool IdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-' || c == '@';
}

absl::Status ValidateText(std::string_view field, std::string_view value, size_t max, bool required) {
  if (value.empty()) return required ? Bad(field, "is required") : absl::OkStatus();
  if (value.size() > max) return Bad(field, StrCat("must be at most ", max, " bytes"));
  switch (ScanText(value)) {
    case TextProblem::kNone:
      return absl::OkStatus();
    case TextProblem::kNotUtf8:
      return Bad(field, "must be valid UTF-8");
    case TextProblem::kControl:
      return Bad(field, "must not contain control characters");
  }
  return absl::OkStatus();
}

// A string field's size bound, checked before anything else is done with
// it. `too_long` is the field's own message where it has a fixed format.
struct Bound {
  std::string_view field;
  std::string_view value;
  size_t max;
  std::string_view too_long;
};

// Step 0 of ValidateRecharge: every string field within its size and valid
// UTF-8, and `metadata` within its bounds. Cheap: sizes first, then at most
// a few kB of UTF-8 to scan.
absl::Status ValidateSizes(const RecordRechargeRequest& req) {
  constexpr std::string_view kId = "must be at most 128 characters";
  const Bound bounds[] = {
      {"idempotency_key", req.idempotency_key(), 128, "must be 8 to 128 characters"},
      {"user_id", req.user_id(), kMaxIdBytes, kId},
      {"package_id", req.package_id(), kMaxPackageIdBytes, "must be at most 64 characters"},
      {"amount.currency", req.amount().currency(), 3, "must be an ISO 4217 code such as \"USD\""},
      {"region", req.region(), 2, "must be an ISO 3166-1 alpha-2 code such as \"US\""},
      {"card.number", req.card().number(), 19, "must be 12 to 19 digits"},
      {"card.cvc", req.card().cvc(), 4, "must be 3 or 4 digits"},
      {"card.holder_name", req.card().holder_name(), 128, ""},
      {"paypal.order_id", req.paypal().order_id(), kMaxIdBytes, kId},
      {"paypal.payer_id", req.paypal().payer_id(), kMaxIdBytes, kId},
      {"ewallet.provider", req.ewallet().provider(), 32,
       "must be a provider name such as \"gcash\""},
      {"ewallet.account_id", req.ewallet().account_id(), kMaxIdBytes, kId},
      {"seller_id", req.seller_id(), kMaxIdBytes, kId},
      {"client.ip", req.client().ip(), 45, "must be an IPv4 or IPv6 address"},
      {"client.device_id", req.client().device_id(), 128, ""},
      {"client.user_agent", req.client().user_agent(), 512, ""},
  };
  for (const Bound& b : bounds) {
    if (b.value.size() > b.max) {
      return Bad(b.field, b.too_long.empty() ? StrCat("must be at most ", b.max, " bytes")
                                             : std::string(b.too_long));
    }
  }
  for (const Bound& b : bounds) {
    if (!ValidUtf8(b.value)) return Bad(b.field, "must be valid UTF-8");
  }

  const auto& metadata = req.metadata();
  if (metadata.size() > kMaxMetadataKeys) {
    return Bad("metadata", StrCat("at most ", kMaxMetadataKeys, " keys, got ", metadata.size()));
  }
  for (const auto& [key, value] : metadata) {
    if (key.empty()) return Bad("metadata", "keys must not be empty");
    if (key.size() > kMaxMetadataKeyBytes) {
      return Bad("metadata", StrCat("key ", Printable(key), " is longer than ",
                                    kMaxMetadataKeyBytes, " bytes"));
    }
    switch (ScanText(key)) {
      case TextProblem::kNone:
        break;
      case TextProblem::kNotUtf8:
        return Bad("metadata", "a key is not valid UTF-8");
      case TextProblem::kControl:
        return Bad("metadata", "a key contains control characters");
    }
    // The key is now short, printable text: safe in the field path.
    const std::string field = StrCat("metadata.", key);
    if (absl::Status s = ValidateText(field, value, kMaxMetadataValueBytes, false); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateCard(const recharge::v1::Card& card, YearMonth today) {
  const std::string& number = card.number();
  if (number.empty()) return Bad("card.number", "is required");
  if (!AllDigits(number) || number.size() < 12 || number.size() > 19) {
    return Bad("card.number", "must be 12 to 19 digits");
  }
  if (!LuhnValid(number)) return Bad("card.number", "fails the Luhn check");
  if (card.exp_month() < 1 || card.exp_month() > 12) {
    return Bad("card.exp_month", "must be between 1 and 12");
  }
  if (card.exp_year() < 2000 || card.exp_year() > today.year + 25) {
    return Bad("card.exp_year", StrCat("must be a four-digit year up to ", today.year + 25));
  }
  if (card.exp_year() < today.year ||
      (card.exp_year() == today.year && card.exp_month() < today.month)) {
    return Bad("card.exp_year", "the card has expired");
  }
  if (!AllDigits(card.cvc()) || card.cvc().size() < 3 || card.cvc().size() > 4) {
    return Bad("card.cvc", "must be 3 or 4 digits");
  }
  return ValidateText("card.holder_name", card.holder_name(), 128, false);
}

}  // namespace

YearMonth CurrentYearMonth() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return YearMonth{tm.tm_year + 1900, tm.tm_mon + 1};
}

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t word;
      std::memcpy(&word, s.data() + i, sizeof word);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= s.size()) break;
    if (NextCodePoint(s, &i) < 0) return false;
  }
  return true;
}

absl::Status ValidateNote(std::string_view field, std::string_view value) {
  return ValidateText(field, value, kMaxNoteBytes, false);
}

bool LuhnValid(std::string_view digits) {
  int sum = 0;
  bool double_it = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = *it - '0';
    if (double_it) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double_it = !double_it;
  }
  return sum % 10 == 0;
}

std::string MaskPan(std::string_view pan) {
  if (pan.size() < 10) return std::string(pan.size(), '*');
  return StrCat(pan.substr(0, 6), std::string(pan.size() - 10, '*'),
                      pan.substr(pan.size() - 4));
}

absl::Status ValidateIdempotencyKey(std::string_view key) {
  constexpr std::string_view kField = "idempotency_key";
  if (key.empty()) return Bad(kField, "is required");
  if (key.size() < 8 || key.size() > 128) return Bad(kField, "must be 8 to 128 characters");
  for (char c : key) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return Bad(kField, "may contain only A-Z a-z 0-9 _ . : -");
  }
  return absl::OkStatus();
}

absl::Status ValidateId(std::string_view field, std::string_view value, bool required) {
  if (value.empty()) return required ? Bad(field, "is required") : absl::OkStatus();
  if (value.size() > kMaxIdBytes) return Bad(field, "must be at most 128 characters");
  if (!ValidUtf8(value)) return Bad(field, "must be valid UTF-8");
  for (char c : value) {
    if (!IdChar(c)) return Bad(field, "may contain only A-Z a-z 0-9 _ . : - @");
  }
  return absl::OkStatus();
}

absl::Status ValidateRegion(const Catalogue& catalogue, std::string_view field,
                            const std::string& region) {
  if (region.empty()) return Bad(field, "is required");
  if (region.size() != 2 || !std::isupper(static_cast<unsigned char>(region[0])) ||
      !std::isupper(static_cast<unsigned char>(region[1]))) {
    return Bad(field, "must be an ISO 3166-1 alpha-2 code such as \"US\"");
  }
  if (!catalogue.HasRegion(region)) {
    return Bad(field, StrCat("region \"", region, "\" is not served"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ValidatedRecharge> ValidateRecharge(const RecordRechargeRequest& req,
                                                   const Catalogue& catalogue, YearMonth today) {
  // 0. Sizes and encodings, before anything looks at a value.
  if (absl::Status s = ValidateSizes(req); !s.ok()) return s;
  // 1. Each field's meaning, in field order.
  if (absl::Status s = ValidateIdempotencyKey(req.idempotency_key()); !s.ok()) return s;
  if (absl::Status s = ValidateId("user_id", req.user_id(), true); !s.ok()) return s;
  ValidatedRecharge out;
  if (req.package_id().empty()) return Bad("package_id", "is required");
  out.package = catalogue.FindPackage(req.package_id());
  if (out.package == nullptr) {
    return Bad("package_id", StrCat("unknown package ", Printable(req.package_id())));
  }
  if (absl::Status s = ValidateRegion(catalogue, "region", req.region()); !s.ok()) return s;
  if (!req.has_amount()) return Bad("amount", "is required");
  const std::string& currency = req.amount().currency();
  if (currency.empty()) return Bad("amount.currency", "is required");
  if (!catalogue.OffersCurrency(req.region(), currency)) {
    return Bad("amount.currency",
               StrCat(Printable(currency), " is not offered in region ", req.region()));
  }
  std::optional<int64_t> price = catalogue.Price(req.region(), currency, req.package_id());
  if (!price) return Bad("package_id", "has no price in this region and currency");
  if (req.amount().minor_units() != *price) {
    return Bad("amount.minor_units",
               StrCat("must be ", *price, " (the price of ", req.package_id(), " in ",
                            req.region(), " ", currency, "), got ", req.amount().minor_units()));
  }
  out.price = *price;

  switch (req.payment_method_case()) {
    case RecordRechargeRequest::kCard:
      if (absl::Status s = ValidateCard(req.card(), today); !s.ok()) return s;
      out.method = out.method_label = "card";
      out.card_masked = MaskPan(req.card().number());
      break;
    case RecordRechargeRequest::kPaypal:
      if (absl::Status s = ValidateId("paypal.order_id", req.paypal().order_id(), true); !s.ok()) return s;
      if (absl::Status s = ValidateId("paypal.payer_id", req.paypal().payer_id(), true); !s.ok()) return s;
      out.method = out.method_label = "paypal";
      break;
    case RecordRechargeRequest::kEwallet: {
      const std::string& provider = req.ewallet().provider();
      if (provider.empty()) return Bad("ewallet.provider", "is required");
      for (char c : provider) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') || provider.size() > 32) {
          return Bad("ewallet.provider", "must be a provider name such as \"gcash\"");
        }
      }
      if (absl::Status s = ValidateId("ewallet.account_id", req.ewallet().account_id(), true); !s.ok()) {
        return s;
      }
      out.method = "ewallet";
      out.method_label = StrCat("ewallet:", provider);
      out.wallet_provider = provider;
      break;
    }
    case RecordRechargeRequest::PAYMENT_METHOD_NOT_SET:
      return Bad("payment_method", "one of card, paypal or ewallet is required");
  }

  if (absl::Status s = ValidateId("seller_id", req.seller_id(), false); !s.ok()) return s;
  if (!req.client().ip().empty()) {
    unsigned char buf[16];
    const std::string& ip = req.client().ip();
    // inet_pton reads up to a NUL: "10.0.0.1\0anything" must not pass.
    if (ip.find('\0') != std::string::npos ||
        (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1)) {
      return Bad("client.ip", "must be an IPv4 or IPv6 address");
    }
  }
  if (absl::Status s = ValidateText("client.device_id", req.client().device_id(), 128, false); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateText("client.user_agent", req.client().user_agent(), 512, false); !s.ok()) {
    return s;
  }
  // metadata: all checked in step 0.
  return out;
}

}  // namespace recharge
