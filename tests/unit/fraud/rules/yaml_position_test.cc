// MapScalarOffset on its own: every scalar style, and the fallback to the
// scalar's start when the walk cannot follow the source.
#include "fraud/rules/yaml_position.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>

namespace recharge::rules::internal {
namespace {

// The position of `offset` in the value of the scalar at key `key` of the
// YAML mapping `source`, as "line:column".
std::string At(const std::string& source, const char* key, size_t offset) {
  const YAML::Node root = YAML::Load(source);
  const YAML::Node node = root[key];
  const YAML::Mark m = node.Mark();
  const SourcePosition p = MapScalarOffset(source, m.pos, m.line, m.column, node.Scalar(), offset);
  return std::to_string(p.line) + ":" + std::to_string(p.column);
}

TEST(MapScalarOffset, PlainSingleLineIsExact) {
  EXPECT_EQ(At("a: 1\nw: coins > 3\n", "w", 0), "2:4");
  EXPECT_EQ(At("a: 1\nw: coins > 3\n", "w", 8), "2:12");
  EXPECT_EQ(At("a: 1\nw: coins > 3\n", "w", 9), "2:13");  // the end
}

TEST(MapScalarOffset, QuotedSingleLine) {
  EXPECT_EQ(At("w: 'a ''b'' c'\n", "w", 6), "1:13");  // a 'b' c: the c
  EXPECT_EQ(At("w: \"a \\\"b\\\" c\"\n", "w", 6), "1:13");
  EXPECT_EQ(At("w: \"a \\\\ c\"\n", "w", 4), "1:10");
}

TEST(MapScalarOffset, MultiLineStyles) {
  EXPECT_EQ(At("w: ab\n   cd\n", "w", 3), "2:4");        // plain, folded
  EXPECT_EQ(At("w: |\n  ab\n    cd\n", "w", 5), "3:5");  // literal: "ab\n  cd\n"
  EXPECT_EQ(At("w: >\n  ab\n  cd\n", "w", 3), "3:3");    // folded: "ab cd\n"
  EXPECT_EQ(At("w: \"ab\n  cd\"\n", "w", 3), "2:3");     // double-quoted, folded
  EXPECT_EQ(At("w: \"ab\\\n  cd\"\n", "w", 2), "2:3");   // escaped line break
  EXPECT_EQ(At("w: 'ab\n\n  cd'\n", "w", 3), "3:3");     // empty line = "\n"
}

TEST(MapScalarOffset, TagsAndAnchorsAreSkipped) {
  EXPECT_EQ(At("w: !!str ab cd\n", "w", 3), "1:13");
  EXPECT_EQ(At("w: &x ab cd\n", "w", 3), "1:10");
}

TEST(MapScalarOffset, FallsBackToTheScalarStart) {
  // \u00e9 stands for two bytes of the value: the walk loses its way.
  EXPECT_EQ(At("w: \"\\u00e9 cd\"\n", "w", 3), "1:4");
  EXPECT_EQ(MapScalarOffset("w: x\n", 99, 0, 3, "x", 0).column, 4);     // position past the end
  EXPECT_EQ(MapScalarOffset("w: x\n", 3, 0, 3, "x", 5).column, 4);      // offset past the end
  EXPECT_EQ(MapScalarOffset("w: x\n", 3, 0, 2, "x", 0).column, 3);      // mark disagrees with pos
  EXPECT_EQ(MapScalarOffset("w: abc\n", 3, 0, 3, "xyz", 1).column, 4);  // value not in source
}

}  // namespace
}  // namespace recharge::rules::internal
