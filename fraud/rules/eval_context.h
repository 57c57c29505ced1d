// The names a fraud rule can read, and EvalContext, the values they have for
// one request (DESIGN §6 "Fields").
//
// A rule reads three kinds of names: request fields (Field: eleven strings
// and two numbers), counters (numbers, declared in the rule file and indexed
// by RuleSet::counter_index), and three flags kept by the engine
// (seller_flagged, card_blocked, device_blocked). EvalContext holds their
// values in fixed arrays so that filling it and evaluating rules over it
// allocate nothing. String fields are views: whatever they point into (in
// the gateway, the FraudInput; see fraud_input_context.h) must outlive the
// evaluation.
//
// Thread-safety: the free functions are pure; an EvalContext is a plain value
// owned by one request.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace recharge::rules {

// The static type of an expression or a name.
enum class ValueType : uint8_t { kBool, kNumber, kString };

// "bool", "number" or "string", for error messages.
std::string_view ValueTypeName(ValueType type);

// A request field. The string fields come first, then the numbers; the
// order is part of EvalContext's layout, not of the rule file.
enum class Field : uint8_t {
  // Strings ("" when the request has none, e.g. no seller on a direct buy).
  kUserId,
  kSellerId,
  kIp,
  kDeviceId,
  kCardFingerprint,
  kInstrumentFingerprint,
  kPaymentMethod,  // card | paypal | ewallet
  kWalletProvider,
  kRegion,
  kCurrency,
  kPackageId,
  // Numbers.
  kCoins,
  kAmountUsd,  // decimal US dollars, e.g. 0.99
};

inline constexpr size_t kNumStringFields = 11;
inline constexpr size_t kNumNumberFields = 2;
inline constexpr size_t kNumFields = kNumStringFields + kNumNumberFields;

// The engine-kept flags a rule can read (all bools).
enum class Flag : uint8_t { kSellerFlagged, kCardBlocked, kDeviceBlocked };
inline constexpr size_t kNumFlags = 3;

// The name of `field` in the rule language ("user_id", "amount_usd", ...).
std::string_view FieldName(Field field);
ValueType FieldType(Field field);
// The field called `name`, or nullopt.
std::optional<Field> FieldByName(std::string_view name);

// "seller_flagged", "card_blocked", "device_blocked".
std::string_view FlagName(Flag flag);
std::optional<Flag> FlagByName(std::string_view name);

// Position of a string field in EvalContext::strings, and of a number field
// in EvalContext::numbers. REQUIRES: FieldType(field) is that type.
constexpr size_t StringSlot(Field field) { return static_cast<size_t>(field); }
constexpr size_t NumberSlot(Field field) { return static_cast<size_t>(field) - kNumStringFields; }

// The values of one evaluation. Default-constructed: every string empty,
// every number, counter and flag zero/false.
struct EvalContext {
  std::array<std::string_view, kNumStringFields> strings{};
  std::array<double, kNumNumberFields> numbers{};
  // Counter values by RuleSet::counter_index. A counter past the end of the
  // span reads as 0 (as does a counter whose `per` field is empty).
  std::span<const double> counters;
  bool seller_flagged = false;
  bool card_blocked = false;
  bool device_blocked = false;

  std::string_view string(Field field) const { return strings[StringSlot(field)]; }
  double number(Field field) const { return numbers[NumberSlot(field)]; }
  void set_string(Field field, std::string_view value) { strings[StringSlot(field)] = value; }
  void set_number(Field field, double value) { numbers[NumberSlot(field)] = value; }
  double counter(size_t index) const { return index < counters.size() ? counters[index] : 0.0; }
  bool flag(Flag flag) const {
    switch (flag) {
      case Flag::kSellerFlagged: return seller_flagged;
      case Flag::kCardBlocked: return card_blocked;
      case Flag::kDeviceBlocked: return device_blocked;
    }
    return false;
  }
};

}  // namespace recharge::rules
