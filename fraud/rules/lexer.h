// Lexer for the fraud-rule expression language (internal to
// fraud/rules/expression.cc; see expression.h for the language).
//
// Turns the text of a `when:` condition into tokens, each with its byte
// offset in the text so that errors can point at it. Runs once per rule at
// load, never per request.
//
// Thread-safety: pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace recharge::rules::internal {

enum class TokenKind : uint8_t {
  kNumber,  // 12, 0.99
  kString,  // "abc" (text holds the unescaped value)
  kName,    // user_id, seller_users_1h
  kTrue,
  kFalse,
  kAnd,
  kOr,
  kNot,
  kIn,
  kEq,  // ==
  kNe,  // !=
  kLt,
  kLe,
  kGt,
  kGe,
  kPlus,
  kMinus,
  kStar,
  kSlash,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kEnd,  // end of the text
};

struct Token {
  TokenKind kind;
  size_t offset;     // byte offset of the token's first character
  std::string text;  // the source text; for kString the unescaped value
  double number = 0;
};

// How a token is shown in an error message: 'and', "abc", the end.
std::string DescribeToken(const Token& token);

// Splits `text` into tokens ending with kEnd. On a lexical error returns
// INVALID_ARGUMENT with a message and sets *error_offset to the byte offset
// of the offending character.
absl::StatusOr<std::vector<Token>> Lex(std::string_view text, size_t* error_offset);

}  // namespace recharge::rules::internal
