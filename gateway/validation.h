// Validation of a RecordRechargeRequest against the catalogue, before
// anything is stored or charged. Every error is INVALID_ARGUMENT and starts
// with the field path ("card.number: ...", "amount.minor_units: ...").
// The message never contains a card number or CVC: nothing from the card is
// echoed, anything else echoed is cut to 64 bytes, and any run of 12 or more
// digits in a message is masked with '*'.
//
// Hostile input is refused cheaply: every string field's length is checked
// before anything else is done with it, then its UTF-8, then its meaning;
// `metadata` is bounded like the well-known payment APIs (at most 20 keys,
// keys of 1 to 40 bytes, values of at most 500 bytes).
//
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "gateway/catalogue.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

struct YearMonth {
  int year = 0;
  int month = 0;  // 1..12
};
YearMonth CurrentYearMonth();  // UTC

struct ValidatedRecharge {
  const CataloguePackage* package = nullptr;
  int64_t price = 0;              // minor units in amount.currency
  std::string method;             // "card" | "paypal" | "ewallet"
  std::string method_label;       // "card" | "paypal" | "ewallet:<provider>"
  std::string wallet_provider;
  std::string card_masked;        // cards only
};

absl::StatusOr<ValidatedRecharge> ValidateRecharge(const recharge::v1::RecordRechargeRequest& req,
                                                   const Catalogue& catalogue, YearMonth today);

// The checks for single fields, shared with the other RPCs.
absl::Status ValidateIdempotencyKey(std::string_view key);
absl::Status ValidateId(std::string_view field, std::string_view value, bool required);
absl::Status ValidateRegion(const Catalogue& catalogue, std::string_view field,
                            const std::string& region);

// True if `s` is well-formed UTF-8 (RFC 3629): no overlong forms, no
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence.
bool ValidUtf8(std::string_view s);
// Free text from an operator (an admin note or reason): at most 1024 bytes,
// valid UTF-8, no control characters (C0, DEL, C1; newlines included). Empty is OK.
absl::Status ValidateNote(std::string_view field, std::string_view value);

// The Luhn check digit test. REQUIRES: `digits` holds only 0-9.
bool LuhnValid(std::string_view digits);
// First 6 and last 4 digits, the rest as '*': "424242******4242".
std::string MaskPan(std::string_view pan);

}  // namespace recharge
