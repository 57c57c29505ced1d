// Where a character of a YAML scalar's value is in the YAML source: maps
// "offset 17 in the `when:` condition" to "line 12, column 30 of the file",
// so that a rule error points at the offending token in the file ops edit.
//
// Exact for the usual case, a plain (unquoted) scalar on one line, and for
// single-line quoted scalars. For a scalar spread over several lines (plain,
// quoted, or a `|`/`>` block) the value's whitespace differs from the
// source's; the mapping walks both texts in step and is exact unless an
// escape sequence in a double-quoted scalar stands for whitespace or a
// non-ASCII character. Whenever the walk loses its way it falls back to the
// scalar's own start. Columns count bytes.
//
// Thread-safety: pure function.
#pragma once

#include <cstddef>
#include <string_view>

namespace recharge::rules::internal {

struct SourcePosition {
  int line = 0;    // 1-based
  int column = 0;  // 1-based
};

// `source` is the whole YAML text; `scalar_pos`, `scalar_line` and
// `scalar_column` are the scalar node's YAML::Mark (0-based, as yaml-cpp
// gives them: the first character of the node, which for a quoted scalar is
// the quote, for a block scalar the `|` or `>`, and for a node with a tag or
// an anchor the tag or anchor); `value` is the scalar's value and `offset` a
// byte offset in it (value.size() for its end).
SourcePosition MapScalarOffset(std::string_view source, size_t scalar_pos, int scalar_line,
                               int scalar_column, std::string_view value, size_t offset);

}  // namespace recharge::rules::internal
