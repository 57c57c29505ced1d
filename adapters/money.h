// Money helpers shared by adapters whose providers want decimal amounts
// ("0.99") rather than minor units. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace recharge {

// ISO 4217 minor-unit digits: 0 for JPY, KRW, VND..., 3 for BHD, KWD..., else 2.
int MinorUnitDigits(std::string_view currency);
// 99 USD -> "0.99"; 160 JPY -> "160".
std::string MinorUnitsToDecimal(int64_t minor_units, std::string_view currency);
// "0.99" USD -> 99. nullopt if malformed or with more digits than the currency has.
std::optional<int64_t> DecimalToMinorUnits(std::string_view value, std::string_view currency);

}  // namespace recharge
