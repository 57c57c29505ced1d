#include "fraud/rules/eval_context.h"

namespace recharge::rules {
namespace {

constexpr std::array<std::string_view, kNumFields> kFieldNames = {
    "user_id",        "seller_id",        "ip",
    "device_id",      "card_fingerprint", "instrument_fingerprint",
    "payment_method", "wallet_provider",  "region",
    "currency",       "package_id",       "coins",
    "amount_usd",
};

constexpr std::array<std::string_view, kNumFlags> kFlagNames = {"seller_flagged", "card_blocked",
                                                                "device_blocked"};

}  // namespace

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kBool: return "bool";
    case ValueType::kNumber: return "number";
    case ValueType::kString: return "string";
  }
  return "?";
}

std::string_view FieldName(Field field) { return kFieldNames[static_cast<size_t>(field)]; }

ValueType FieldType(Field field) {
  return static_cast<size_t>(field) < kNumStringFields ? ValueType::kString : ValueType::kNumber;
}

std::optional<Field> FieldByName(std::string_view name) {
  for (size_t i = 0; i < kFieldNames.size(); ++i) {
    if (kFieldNames[i] == name) return static_cast<Field>(i);
  }
  return std::nullopt;
}

std::string_view FlagName(Flag flag) { return kFlagNames[static_cast<size_t>(flag)]; }

std::optional<Flag> FlagByName(std::string_view name) {
  for (size_t i = 0; i < kFlagNames.size(); ++i) {
    if (kFlagNames[i] == name) return static_cast<Flag>(i);
  }
  return std::nullopt;
}

}  // namespace recharge::rules
