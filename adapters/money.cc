#include "adapters/money.h"

#include <array>

namespace recharge {

int MinorUnitDigits(std::string_view currency) {
  static constexpr std::array<std::string_view, 17> kZero = {
      "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
      "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"};
  static constexpr std::array<std::string_view, 7> kThree = {"BHD", "IQD", "JOD", "KWD",
                                                             "LYD", "OMR", "TND"};
  for (std::string_view c : kZero) {
    if (c == currency) return 0;
  }
  for (std::string_view c : kThree) {
    if (c == currency) return 3;
  }
  return 2;
}

std::string MinorUnitsToDecimal(int64_t minor_units, std::string_view currency) {
  const int digits = MinorUnitDigits(currency);
  const bool negative = minor_units < 0;
  std::string s = std::to_string(negative ? -minor_units : minor_units);
  if (digits > 0) {
    if (static_cast<int>(s.size()) <= digits) s.insert(0, digits + 1 - s.size(), '0');
    s.insert(s.size() - digits, ".");
  }
  return negative ? "-" + s : s;
}

std::optional<int64_t> DecimalToMinorUnits(std::string_view value, std::string_view currency) {
  const int digits = MinorUnitDigits(currency);
  if (value.empty()) return std::nullopt;
  int64_t whole = 0, frac = 0;
  int frac_digits = 0;
  bool seen_dot = false, seen_digit = false;
  for (char c : value) {
    if (c == '.') {
      if (seen_dot || digits == 0) return std::nullopt;
      seen_dot = true;
      continue;
    }
    if (c < '0' || c > '9') return std::nullopt;
    seen_digit = true;
    if (seen_dot) {
      if (++frac_digits > digits) return std::nullopt;
      frac = frac * 10 + (c - '0');
    } else {
      if (whole > (INT64_MAX / 1000 - 9) / 10) return std::nullopt;
      whole = whole * 10 + (c - '0');
    }
  }
  if (!seen_digit) return std::nullopt;
  for (int i = frac_digits; i < digits; ++i) frac *= 10;
  int64_t scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  return whole * scale + frac;
}

}  // namespace recharge
