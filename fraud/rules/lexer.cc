#include "fraud/rules/lexer.h"

#include <charconv>
#include <cmath>

#include "absl/status/status.h"
#include "io/strings.h"

namespace recharge::rules::internal {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A character as shown in an error message: 'x', or its byte value when it
// is not printable ASCII.
std::string DescribeChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x21 && u < 0x7f) return StrCat("'", c, "'");
  constexpr char kHex[] = "0123456789ABCDEF";
  return StrCat("byte 0x", kHex[u >> 4], kHex[u & 0xf]);
}

TokenKind KeywordOrName(std::string_view word) {
  if (word == "and") return TokenKind::kAnd;
  if (word == "or") return TokenKind::kOr;
  if (word == "not") return TokenKind::kNot;
  if (word == "in") return TokenKind::kIn;
  if (word == "true") return TokenKind::kTrue;
  if (word == "false") return TokenKind::kFalse;
  return TokenKind::kName;
}

absl::Status Fail(size_t offset, size_t* error_offset, std::string message) {
  *error_offset = offset;
  return absl::InvalidArgumentError(std::move(message));
}

}  // namespace

std::string DescribeToken(const Token& token) {
  switch (token.kind) {
    case TokenKind::kEnd: return "the end of the condition";
    case TokenKind::kString: return StrCat("the string \"", token.text, "\"");
    default: return StrCat("'", token.text, "'");
  }
}

absl::StatusOr<std::vector<Token>> Lex(std::string_view text, size_t* error_offset) {
  std::vector<Token> tokens;
  size_t i = 0;
  const size_t n = text.size();
  while (true) {
    while (i < n && IsSpace(text[i])) ++i;
    if (i == n) break;
    const size_t start = i;
    const char c = text[i];
    Token token{TokenKind::kEnd, start, "", 0};

    if (IsDigit(c)) {
      while (i < n && IsDigit(text[i])) ++i;
      if (i < n && text[i] == '.') {
        ++i;
        if (i == n || !IsDigit(text[i])) {
          return Fail(start, error_offset,
                      StrCat("malformed number '", text.substr(start, i - start),
                             "': a decimal point needs digits after it"));
        }
        while (i < n && IsDigit(text[i])) ++i;
      }
      if (i < n && (IsNameChar(text[i]) || text[i] == '.')) {
        size_t end = i;
        while (end < n && (IsNameChar(text[end]) || text[end] == '.')) ++end;
        return Fail(start, error_offset,
                    StrCat("malformed number '", text.substr(start, end - start), "'"));
      }
      token.kind = TokenKind::kNumber;
      token.text = std::string(text.substr(start, i - start));
      auto [ptr, ec] = std::from_chars(text.data() + start, text.data() + i, token.number);
      if (ec != std::errc() || ptr != text.data() + i || !std::isfinite(token.number)) {
        return Fail(start, error_offset, StrCat("number '", token.text, "' is out of range"));
      }
    } else if (IsNameStart(c)) {
      while (i < n && IsNameChar(text[i])) ++i;
      token.text = std::string(text.substr(start, i - start));
      token.kind = KeywordOrName(token.text);
    } else if (c == '"') {
      ++i;
      std::string value;
      bool closed = false;
      while (i < n) {
        const char d = text[i];
        if (d == '"') {
          closed = true;
          ++i;
          break;
        }
        if (d == '\\') {
          if (i + 1 < n && (text[i + 1] == '"' || text[i + 1] == '\\')) {
            value += text[i + 1];
            i += 2;
            continue;
          }
          return Fail(i, error_offset,
                      "unknown escape in a string: only \\\" and \\\\ are allowed");
        }
        value += d;
        ++i;
      }
      if (!closed)
        return Fail(start, error_offset, "unterminated string: missing the closing '\"'");
      token.kind = TokenKind::kString;
      token.text = std::move(value);
    } else {
      const char next = i + 1 < n ? text[i + 1] : '\0';
      auto two = [&](TokenKind kind) {
        token.kind = kind;
        token.text = std::string(text.substr(start, 2));
        i += 2;
      };
      auto one = [&](TokenKind kind) {
        token.kind = kind;
        token.text = std::string(1, c);
        i += 1;
      };
      switch (c) {
        case '=':
          if (next != '=') return Fail(start, error_offset, "'=' is not an operator; use '=='");
          two(TokenKind::kEq);
          break;
        case '!':
          if (next != '=')
            return Fail(start, error_offset, "'!' is not an operator; use 'not' or '!='");
          two(TokenKind::kNe);
          break;
        case '<':
          if (next == '=')
            two(TokenKind::kLe);
          else
            one(TokenKind::kLt);
          break;
        case '>':
          if (next == '=')
            two(TokenKind::kGe);
          else
            one(TokenKind::kGt);
          break;
        case '&': return Fail(start, error_offset, "unexpected '&'; use 'and'");
        case '|': return Fail(start, error_offset, "unexpected '|'; use 'or'");
        case '\'':
          return Fail(start, error_offset, "strings are written in double quotes: \"like this\"");
        case '+': one(TokenKind::kPlus); break;
        case '-': one(TokenKind::kMinus); break;
        case '*': one(TokenKind::kStar); break;
        case '/': one(TokenKind::kSlash); break;
        case '(': one(TokenKind::kLParen); break;
        case ')': one(TokenKind::kRParen); break;
        case '[': one(TokenKind::kLBracket); break;
        case ']': one(TokenKind::kRBracket); break;
        case ',': one(TokenKind::kComma); break;
        default: return Fail(start, error_offset, StrCat("unexpected character ", DescribeChar(c)));
      }
    }
    tokens.push_back(std::move(token));
  }
  // The end is reported just after the last token, not after trailing
  // whitespace (a block scalar's final line break, say).
  size_t end = n;
  while (end > 0 && IsSpace(text[end - 1])) --end;
  tokens.push_back(Token{TokenKind::kEnd, end, "", 0});
  return tokens;
}

}  // namespace recharge::rules::internal
