#include "gateway/validation.h"

#include <arpa/inet.h>

#include <chrono>
#include <ctime>

#include "io/strings.h"

namespace recharge {
namespace {

using recharge::v1::RecordRechargeRequest;

absl::Status Bad(std::string_view field, std::string_view message) {
  return absl::InvalidArgumentError(StrCat(field, ": ", message));
}

bool AllDigits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
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
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) return Bad(field, "must not contain control characters");
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
  if (value.size() > 128) return Bad(field, "must be at most 128 characters");
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
  if (absl::Status s = ValidateIdempotencyKey(req.idempotency_key()); !s.ok()) return s;
  if (absl::Status s = ValidateId("user_id", req.user_id(), true); !s.ok()) return s;
  ValidatedRecharge out;
  if (req.package_id().empty()) return Bad("package_id", "is required");
  out.package = catalogue.FindPackage(req.package_id());
  if (out.package == nullptr) {
    return Bad("package_id", StrCat("unknown package \"", req.package_id().substr(0, 64), "\""));
  }
  if (absl::Status s = ValidateRegion(catalogue, "region", req.region()); !s.ok()) return s;
  if (!req.has_amount()) return Bad("amount", "is required");
  const std::string& currency = req.amount().currency();
  if (currency.empty()) return Bad("amount.currency", "is required");
  if (!catalogue.OffersCurrency(req.region(), currency)) {
    return Bad("amount.currency", StrCat("\"", currency.substr(0, 8),
                                               "\" is not offered in region ", req.region()));
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
    if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1) {
      return Bad("client.ip", "must be an IPv4 or IPv6 address");
    }
  }
  if (absl::Status s = ValidateText("client.device_id", req.client().device_id(), 128, false); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateText("client.user_agent", req.client().user_agent(), 512, false); !s.ok()) {
    return s;
  }
  if (req.metadata_size() > 32) return Bad("metadata", "at most 32 entries");
  for (const auto& [k, v] : req.metadata()) {
    if (k.empty() || k.size() > 64) return Bad("metadata", "keys must be 1 to 64 bytes");
    if (absl::Status s = ValidateText(StrCat("metadata.", k), v, 512, false); !s.ok()) return s;
  }
  return out;
}

}  // namespace recharge
