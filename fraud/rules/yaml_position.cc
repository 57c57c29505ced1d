#include "fraud/rules/yaml_position.h"

namespace recharge::rules::internal {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

SourcePosition PositionOf(std::string_view source, size_t pos) {
  SourcePosition p{1, 1};
  size_t line_start = 0;
  for (size_t k = 0; k < pos && k < source.size(); ++k) {
    if (source[k] == '\n') {
      ++p.line;
      line_start = k + 1;
    }
  }
  p.column = static_cast<int>(pos - line_start) + 1;
  return p;
}

}  // namespace

SourcePosition MapScalarOffset(std::string_view source, size_t scalar_pos, int scalar_line,
                               int scalar_column, std::string_view value, size_t offset) {
  const SourcePosition fallback{scalar_line + 1, scalar_column + 1};
  const size_t n = source.size();
  if (scalar_pos >= n || offset > value.size()) return fallback;
  // The mark must describe the same place as the byte offset (it does not,
  // e.g., for a UTF-16 file that yaml-cpp converted).
  const SourcePosition start = PositionOf(source, scalar_pos);
  if (start.line != fallback.line || start.column != fallback.column) return fallback;

  size_t j = scalar_pos;
  // Tags (!!str) and anchors (&name) come before the scalar itself.
  while (j < n && (source[j] == '!' || source[j] == '&')) {
    while (j < n && !IsSpace(source[j])) ++j;
    while (j < n && IsSpace(source[j])) ++j;
  }
  if (j >= n) return fallback;
  char style = source[j];
  if (style == '"' || style == '\'') {
    ++j;
  } else if (style == '|' || style == '>') {
    while (j < n && source[j] != '\n') ++j;  // the header, with its indicators and comment
    ++j;
  } else {
    style = 'p';
  }

  size_t i = 0;
  while (i < offset) {
    if (j >= n) return fallback;
    if (style == '"' && source[j] == '\\') {
      const char e = j + 1 < n ? source[j + 1] : '\0';
      if (e == '\n' || e == '\r') {  // an escaped line break stands for nothing
        ++j;
        while (j < n && IsSpace(source[j])) ++j;
        continue;
      }
      j += e == 'x' ? 4 : e == 'u' ? 6 : e == 'U' ? 10 : 2;
      ++i;
      continue;
    }
    if (style == '\'' && source[j] == '\'') {
      if (j + 1 < n && source[j + 1] == '\'') {  // '' stands for '
        j += 2;
        ++i;
        continue;
      }
      return fallback;  // the closing quote, before the offset was reached
    }
    if (IsSpace(value[i])) {
      // A run of whitespace in the value (a folded line break, an indented
      // block line) matches a run of whitespace in the source.
      if (!IsSpace(source[j])) return fallback;
      while (i < offset && IsSpace(value[i])) ++i;
      while (j < n && IsSpace(source[j])) ++j;
      continue;
    }
    if (IsSpace(source[j])) {  // indentation, not part of the value
      while (j < n && IsSpace(source[j])) ++j;
      continue;
    }
    if (source[j] != value[i]) return fallback;
    ++i;
    ++j;
  }
  if (offset < value.size()) {
    const char v = value[offset];
    while (!IsSpace(v) && j < n) {  // indentation and escaped line breaks before the token
      if (IsSpace(source[j])) {
        ++j;
      } else if (style == '"' && source[j] == '\\' && j + 1 < n &&
                 (source[j + 1] == '\n' || source[j + 1] == '\r')) {
        ++j;
      } else {
        break;
      }
    }
    if (j >= n) return fallback;
    const bool same = source[j] == v || (style == '"' && source[j] == '\\') ||
                      (style == '\'' && v == '\'' && source[j] == '\'');
    if (!same) return fallback;
  }
  if (j > n) return fallback;
  return PositionOf(source, j);
}

}  // namespace recharge::rules::internal
