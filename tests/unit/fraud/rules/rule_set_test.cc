// Loading rule files: every error with the file's line and column (for a
// condition, of the offending token inside the YAML scalar), the parsed
// counters, rules and settings, and the decision (block > review > allow,
// flag_seller, shadow and demoted rules never deciding).
#include "fraud/rules/rule_set.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_split.h"
#include "tests/unit/test_files.h"

namespace recharge::rules {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<std::shared_ptr<const RuleSet>> Parse(const std::string& text) {
  return RuleSet::Parse(text, "r.yaml");
}

// The error message of loading `text`, or "ok".
std::string LoadError(const std::string& text) {
  auto set = Parse(text);
  if (set.ok()) return "ok";
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(set.status().message());
}

// A file whose only rule has the condition `when` on line 7, starting at
// column 11.
std::string WithCondition(const std::string& when) {
  const std::string header =
      "version: \"1\"\n"                                                        // 1
      "counters:\n"                                                             // 2
      "  seller_users_1h: { distinct: user_id, per: seller_id, window: 1h }\n"  // 3
      "rules:\n"                                                                // 4
      "  - id: r\n"                                                             // 5
      "    action: review\n";                                                   // 6
  return header + "    when: " + when + "\n";                                   // 7
}

// --- Condition errors, with the line and column in the file. -------------

struct ConditionCase {
  std::string when;
  int column;
  std::string message;
};

class ConditionErrorTest : public ::testing::TestWithParam<ConditionCase> {};

TEST_P(ConditionErrorTest, NamesFileLineAndColumnOfTheToken) {
  const ConditionCase& c = GetParam();
  EXPECT_EQ(LoadError(WithCondition(c.when)),
            "r.yaml:7:" + std::to_string(c.column) + ": rules[0].when: " + c.message)
      << c.when;
}

// One case per error kind; the column is 11 + the token's offset.
INSTANTIATE_TEST_SUITE_P(
    EveryKind, ConditionErrorTest,
    ::testing::Values(
        ConditionCase{"region == US$", 23, "unexpected character '$'"},
        ConditionCase{"coins = 3", 17, "'=' is not an operator; use '=='"},
        ConditionCase{"card_blocked or !seller_flagged", 27,
                      "'!' is not an operator; use 'not' or '!='"},
        ConditionCase{"card_blocked && device_blocked", 24, "unexpected '&'; use 'and'"},
        ConditionCase{"card_blocked || device_blocked", 24, "unexpected '|'; use 'or'"},
        ConditionCase{"region == 'US'", 21, "strings are written in double quotes: \"like this\""},
        ConditionCase{"region == \"US", 21, "unterminated string: missing the closing '\"'"},
        ConditionCase{"region == \"a\\nb\"", 23,
                      "unknown escape in a string: only \\\" and \\\\ are allowed"},
        ConditionCase{"coins > 1.", 19,
                      "malformed number '1.': a decimal point needs digits after it"},
        ConditionCase{"coins > 12abc", 19, "malformed number '12abc'"},
        ConditionCase{"coins > " + std::string(400, '9'), 19,
                      "number '" + std::string(400, '9') + "' is out of range"},
        ConditionCase{"coins >", 18, "unexpected end of the condition: expected a value"},
        ConditionCase{"coins > > 3", 19, "expected a value, got '>'"},
        ConditionCase{"(coins > 3", 21, "expected ')' to close '(', got the end of the condition"},
        ConditionCase{"coins > 3 )", 21, "unexpected ')' after a complete condition"},
        ConditionCase{"1 < coins < 3", 21,
                      "comparisons do not chain: combine them with 'and', or use parentheses"},
        ConditionCase{"seller_userz_1h > 25", 11,
                      "unknown name 'seller_userz_1h': not a request field, a counter of "
                      "this file or a flag"},
        ConditionCase{"region > 3", 18, "'>' compares numbers, got string and number"},
        ConditionCase{"region == 3", 18,
                      "'==' compares two values of one type, got string and number"},
        ConditionCase{"seller_flagged + 1 > 0", 26, "'+' needs numbers, got bool and number"},
        ConditionCase{"-region == \"x\"", 11, "unary '-' needs a number, got string"},
        ConditionCase{"coins and card_blocked", 17,
                      "'and' needs true/false on both sides, got number and bool"},
        ConditionCase{"not coins", 11, "'not' needs true/false, got number"},
        ConditionCase{"region in \"US\"", 21, "expected '[' after 'in', got the string \"US\""},
        ConditionCase{"region in [\"US\", currency]", 28,
                      "a list after 'in' holds literals (numbers, \"strings\", true, false), "
                      "got 'currency'"},
        ConditionCase{"region in [\"US\", 1]", 28,
                      "a list holds values of one type: expected string, got number"},
        ConditionCase{"region in [1, 2]", 18, "'in' looks for a string in a list of numbers"},
        ConditionCase{"region in []", 22, "an empty list never matches: list at least one value"},
        ConditionCase{"region in [\"US\"", 26, "unterminated list: missing ']'"},
        ConditionCase{"region in [\"US\" \"SG\"]", 27,
                      "expected ',' or ']' in a list, got the string \"SG\""},
        ConditionCase{std::string(33, '(') + "true" + std::string(33, ')'), 43,
                      "the condition nests more than 32 levels deep"},
        ConditionCase{"coins + seller_users_1h", 11,
                      "a condition must be true or false, and this one is a number"},
        ConditionCase{"region", 11,
                      "a condition must be true or false, and this one is a string"}));

// --- Condition errors in other YAML scalar styles. ------------------------

std::string RuleWithWhenLines(const std::string& lines) {
  return "version: \"1\"\n"     // 1
         "rules:\n"             // 2
         "  - id: r\n"          // 3
         "    action: block\n"  // 4
         + lines;               // from line 5
}

TEST(RuleConditionPosition, SingleQuotedScalarWithDoubledQuote) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: 'region != \"''\" and nope > 1'\n")),
              ::testing::StartsWith("r.yaml:5:31: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, DoubleQuotedScalarWithEscapes) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: \"region == \\\"US\\\" and nope > 1\"\n")),
              ::testing::StartsWith("r.yaml:5:33: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, PlainScalarOverTwoLines) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: seller_id != \"\"\n"
                                          "      and nope > 1\n")),
              ::testing::StartsWith("r.yaml:6:11: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, LiteralBlockScalar) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: |\n"
                                          "      seller_id != \"\"\n"
                                          "        and nope > 1\n")),
              ::testing::StartsWith("r.yaml:7:13: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, FoldedBlockScalar) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: >-  # a comment\n"
                                          "      seller_id != \"\" and\n"
                                          "      nope > 1\n")),
              ::testing::StartsWith("r.yaml:7:7: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, UnexpectedEndOfABlockScalar) {
  EXPECT_EQ(LoadError(RuleWithWhenLines("    when: |\n"
                                        "      seller_id != \"\" and\n")),
            "r.yaml:6:26: rules[0].when: unexpected end of the condition: expected a value");
}

TEST(RuleConditionPosition, ScalarOnTheNextLine) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when:\n"
                                          "      card_blocked or nope\n")),
              ::testing::StartsWith("r.yaml:6:23: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, ExclamationMarkAtTheStartIsAYamlTag) {
  EXPECT_EQ(LoadError(RuleWithWhenLines("    when: !seller_flagged\n")),
            "r.yaml:5:11: rules[0].when: YAML reads '!seller_flagged' as a tag, not as part of "
            "the condition: write 'not' instead of '!', or quote the condition");
}

TEST(RuleConditionPosition, TaggedScalar) {
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: !!str nope > 1\n")),
              ::testing::StartsWith("r.yaml:5:17: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, FlowMapping) {
  EXPECT_THAT(LoadError("version: \"1\"\nrules:\n"
                        "  - { id: r, action: block, when: card_blocked or nope }\n"),
              ::testing::StartsWith("r.yaml:3:51: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, FallsBackToTheScalarWhenAnEscapeIsNotOneByte) {
  // \u00e9 is two bytes in the value: the documented limitation. The error
  // then points at the scalar's opening quote.
  EXPECT_THAT(LoadError(RuleWithWhenLines("    when: \"region == \\\"\\u00e9\\\" or nope\"\n")),
              ::testing::StartsWith("r.yaml:5:11: rules[0].when: unknown name 'nope'"));
}

TEST(RuleConditionPosition, NoEnvironmentExpansionInConditions) {
  setenv("RECHARGE_RULES_TEST_VAR", "true", 1);
  EXPECT_EQ(LoadError(RuleWithWhenLines("    when: ${RECHARGE_RULES_TEST_VAR}\n")),
            "r.yaml:5:11: rules[0].when: unexpected character '$'");
}

// --- Structural errors. ---------------------------------------------------

TEST(RuleFileErrors, YamlSyntaxErrorHasLineAndColumn) {
  EXPECT_THAT(LoadError("version: \"1\"\nrules: [\n  - id: x\n"), HasSubstr("r.yaml:3:"));
}

TEST(RuleFileErrors, KeyThatIsNotAStringIsAnErrorNotACrash) {
  // Found by the fuzzer: yaml-cpp throws when ConfigNode reads such a key.
  EXPECT_EQ(LoadError("version: \"1\"\n? [a, b]\n: 1\n"),
            "r.yaml:2:3: a key must be a name, not a list or a mapping");
  EXPECT_EQ(LoadError("version: \"1\"\ncounters:\n  ? { a: 1 }\n  : 1\n"),
            "r.yaml:3:5: a key must be a name, not a list or a mapping");
}

TEST(RuleFileErrors, FileMustBeAMapping) {
  EXPECT_EQ(LoadError("- a\n- b\n"), "r.yaml:1:1: the file must be a YAML mapping");
}

TEST(RuleFileErrors, UnknownTopLevelKey) {
  EXPECT_EQ(LoadError("version: \"1\"\nrulez: []\n"),
            "r.yaml:2:8: rulez: unknown option (expected one of: version, fail_mode, "
            "blast_radius, links, counters, rules)");
}

TEST(RuleFileErrors, VersionIsRequired) {
  EXPECT_EQ(LoadError("fail_mode: open\n"), "r.yaml:1:1: version: is required");
  EXPECT_EQ(LoadError("version: \"\"\n"), "r.yaml:1:10: version: must not be empty");
}

TEST(RuleFileErrors, FailModeIsOpenOrClosed) {
  EXPECT_EQ(LoadError("version: \"1\"\nfail_mode: ajar\n"),
            "r.yaml:2:12: fail_mode: must be open or closed, got \"ajar\"");
}

TEST(RuleFileErrors, BlastRadius) {
  EXPECT_EQ(LoadError("version: \"1\"\nblast_radius: { max_block_share: 0 }\n"),
            "r.yaml:2:34: blast_radius.max_block_share: must be a share of traffic greater "
            "than 0 and at most 1 (0.2 = 20%), got \"0\"");
  EXPECT_EQ(LoadError("version: \"1\"\nblast_radius: { max_block_share: 1.5 }\n"),
            "r.yaml:2:34: blast_radius.max_block_share: must be a share of traffic greater "
            "than 0 and at most 1 (0.2 = 20%), got \"1.5\"");
  EXPECT_EQ(LoadError("version: \"1\"\nblast_radius: { window: 0s }\n"),
            "r.yaml:2:25: blast_radius.window: must be longer than 0");
  EXPECT_EQ(LoadError("version: \"1\"\nblast_radius: { min_requests: 0 }\n"),
            "r.yaml:2:31: blast_radius.min_requests: must be between 1 and 1000000000");
  EXPECT_EQ(LoadError("version: \"1\"\nblast_radius: { share: 0.1 }\n"),
            "r.yaml:2:24: blast_radius.share: unknown option (expected one of: "
            "max_block_share, window, min_requests)");
}

std::string WithCounter(const std::string& counter) {
  return "version: \"1\"\ncounters:\n  " + counter + "\n";  // the counter on line 3
}

TEST(RuleFileErrors, CounterNeedsExactlyOneKind) {
  const std::string message =
      ": needs exactly one of count: true, sum: <number field>, distinct: <string field>";
  EXPECT_EQ(LoadError(WithCounter("c: { per: user_id, window: 1h }")),
            "r.yaml:3:6: counters.c" + message);
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, sum: coins, per: user_id, window: 1h }")),
            "r.yaml:3:6: counters.c" + message);
  EXPECT_EQ(LoadError(WithCounter("c: { count: false, per: user_id, window: 1h }")),
            "r.yaml:3:15: counters.c.count: must be true (count: true counts events)");
}

TEST(RuleFileErrors, CounterFieldsHaveTheRightType) {
  EXPECT_EQ(LoadError(WithCounter("c: { sum: region, per: user_id, window: 1h }")),
            "r.yaml:3:13: counters.c.sum: sum adds up a number field, and 'region' is a string");
  EXPECT_EQ(LoadError(WithCounter("c: { distinct: coins, per: user_id, window: 1h }")),
            "r.yaml:3:18: counters.c.distinct: distinct counts values of a string field, and "
            "'coins' is a number");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: amount_usd, window: 1h }")),
            "r.yaml:3:26: counters.c.per: per names the entity, a string field, and "
            "'amount_usd' is a number");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: seller, window: 1h }")),
            "r.yaml:3:26: counters.c.per: unknown request field 'seller'");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, window: 1h }")),
            "r.yaml:3:6: counters.c.per: is required");
}

TEST(RuleFileErrors, CounterWindowAndBuckets) {
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip }")),
            "r.yaml:3:6: counters.c.window: is required");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 1 }")),
            "r.yaml:3:38: counters.c.window: must be a duration such as 250ms, 5s, 10m or 24h, "
            "got \"1\"");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 0s }")),
            "r.yaml:3:38: counters.c.window: must be longer than 0");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 1h, buckets: 7 }")),
            "r.yaml:3:51: counters.c.buckets: the window does not split into 7 buckets of a "
            "whole number of seconds");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 5s }")),
            "r.yaml:3:38: counters.c.window: the window does not split into 12 buckets of a "
            "whole number of seconds");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 1h, buckets: 0 }")),
            "r.yaml:3:51: counters.c.buckets: must be between 1 and 1000");
}

TEST(RuleFileErrors, CounterEvent) {
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 1h, on: refund }")),
            "r.yaml:3:46: counters.c.on: must be request, decline or chargeback, got \"refund\"");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 1h, every: 1 }")),
            "r.yaml:3:49: counters.c.every: unknown option (expected one of: count, sum, "
            "distinct, per, window, buckets, on, when, only_if)");
}

TEST(RuleFile, CounterWhenAndOnlyIfAreParsed) {
  auto set = Parse(
      "version: \"1\"\n"
      "counters:\n"
      "  card_users_24h: { distinct: user_id, per: card_fingerprint, window: 24h }\n"
      "  seller_top_1h:\n"
      "    count: true\n"
      "    per: seller_id\n"
      "    window: 1h\n"
      "    when: package_id in [\"coins_3303\", \"coins_6607\"]\n"
      "  seller_shared_1h: { count: true, per: seller_id, window: 1h, only_if: card_users_24h > 1 }\n"
      "  seller_new_1h: { count: true, per: seller_id, window: 1h, only_if: 'card_users_24h<=1.5' }\n");
  ASSERT_TRUE(set.ok()) << set.status();
  const auto& c = (*set)->counters();
  ASSERT_EQ(c.size(), 4u);
  ASSERT_TRUE(c[1].when.has_value());
  EXPECT_EQ(c[1].when_text, "package_id in [\"coins_3303\", \"coins_6607\"]");
  EvalContext top;
  top.set_string(Field::kPackageId, "coins_6607");
  EXPECT_TRUE(c[1].when->Matches(top));
  EvalContext small;
  small.set_string(Field::kPackageId, "coins_65");
  EXPECT_FALSE(c[1].when->Matches(small));
  EXPECT_FALSE(c[1].only_if.has_value());
  ASSERT_TRUE(c[2].only_if.has_value());
  EXPECT_EQ(c[2].only_if->counter, 0u);
  EXPECT_EQ(c[2].only_if->op, CompareOp::kGt);
  EXPECT_EQ(c[2].only_if->value, 1);
  ASSERT_TRUE(c[3].only_if.has_value());
  EXPECT_EQ(c[3].only_if->op, CompareOp::kLe);
  EXPECT_EQ(c[3].only_if->value, 1.5);
  EXPECT_TRUE(Compare(2, CompareOp::kGt, 1));
  EXPECT_FALSE(Compare(1, CompareOp::kGt, 1));
  EXPECT_TRUE(Compare(1, CompareOp::kLe, 1.5));
  EXPECT_TRUE(Compare(3, CompareOp::kNe, 1));
  EXPECT_TRUE(Compare(1, CompareOp::kEq, 1));
}

TEST(RuleFile, LinksAndFlagLinkedAreParsed) {
  auto set = Parse(
      "version: \"1\"\n"
      "links: { by: [card_fingerprint, device_id], window: 12h }\n"
      "rules:\n"
      "  - { id: a, when: seller_flagged, action: flag_seller, flag_ttl: 1h, flag_linked: true }\n"
      "  - { id: b, when: seller_flagged, action: flag_seller, flag_ttl: 1h }\n");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ((*set)->links().by, (std::vector<Field>{Field::kCardFingerprint, Field::kDeviceId}));
  EXPECT_EQ((*set)->links().window, hours(12));
  EXPECT_TRUE((*set)->links().enabled());
  EXPECT_TRUE((*set)->rules()[0].flag_linked());
  EXPECT_FALSE((*set)->rules()[1].flag_linked());
  auto none = Parse("version: \"1\"\n");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE((*none)->links().enabled());
}

TEST(RuleFileErrors, LinksNameInstrumentFieldsAndFlagLinkedNeedsThem) {
  EXPECT_EQ(LoadError("version: \"1\"\nlinks: { by: [user_id] }\n"),
            "r.yaml:2:14: links.by: 'user_id' cannot link sellers: use card_fingerprint, "
            "device_id, ip or instrument_fingerprint");
  EXPECT_EQ(LoadError("version: \"1\"\nlinks: { by: [ip, ip] }\n"),
            "r.yaml:2:14: links.by: 'ip' is listed twice");
  EXPECT_EQ(LoadError("version: \"1\"\nlinks: { window: 1h }\n"),
            "r.yaml:2:8: links: by: is required (e.g. [card_fingerprint, device_id])");
  EXPECT_EQ(LoadError("version: \"1\"\nrules:\n"
                      "  - { id: a, when: seller_flagged, action: flag_seller, flag_ttl: 1h, flag_linked: true }\n"),
            "r.yaml:3:84: rules[0].flag_linked: needs a links: section (which instruments link "
            "sellers)");
  EXPECT_EQ(LoadError("version: \"1\"\nlinks: { by: [ip] }\nrules:\n"
                      "  - { id: a, when: seller_flagged, action: review, flag_linked: true }\n"),
            "r.yaml:4:65: rules[0].flag_linked: applies only to action flag_seller");
}

TEST(RuleFileErrors, CounterWhenReadsRequestFieldsOnlyAndPointsAtTheToken) {
  const std::string header =
      "version: \"1\"\n"
      "counters:\n"
      "  a: { count: true, per: user_id, window: 1h }\n";
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, when: pakage_id == \"x\" }\n"),
            "r.yaml:4:55: counters.b.when: unknown name 'pakage_id': not a request field, a "
            "counter of this file or a flag");
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, when: coins + 1 }\n"),
            "r.yaml:4:55: counters.b.when: a condition must be true or false, and this one is a "
            "number");
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, when: seller_flagged }\n"),
            "r.yaml:4:55: counters.b.when: a counter's condition may read request fields only "
            "(no counters or flags)");
  // A counter name in a counter's `when` is not known there.
  EXPECT_THAT(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, when: a > 1 }\n"),
              HasSubstr("unknown name 'a'"));
}

TEST(RuleFileErrors, CounterOnlyIfNamesAnEarlierRequestCounterAndANumber) {
  const std::string header =
      "version: \"1\"\n"
      "counters:\n"
      "  a: { count: true, per: user_id, window: 1h }\n"
      "  d: { count: true, per: user_id, window: 1h, on: decline }\n";
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, only_if: a > x }\n"),
            "r.yaml:5:58: counters.b.only_if: 'x' is not a number; must be <counter> <op> "
            "<number>, e.g. card_users_24h > 1, with a counter declared above");
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, only_if: z > 1 }\n"),
            "r.yaml:5:58: counters.b.only_if: 'z' is not a counter declared above; must be "
            "<counter> <op> <number>, e.g. card_users_24h > 1, with a counter declared above");
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, only_if: a }\n"),
            "r.yaml:5:58: counters.b.only_if: must be <counter> <op> <number>, e.g. "
            "card_users_24h > 1, with a counter declared above");
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, only_if: d > 1 }\n"),
            "r.yaml:5:58: counters.b.only_if: 'd' is not updated on request, so it is not known yet");
  EXPECT_EQ(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, on: decline, only_if: a > 1 }\n"),
            "r.yaml:5:71: counters.b.only_if: applies only to counters updated on request");
  // Itself or a later counter: not declared above.
  EXPECT_THAT(LoadError(header + "  b: { count: true, per: seller_id, window: 1h, only_if: b > 1 }\n"),
              HasSubstr("'b' is not a counter declared above"));
}

TEST(RuleFileErrors, CounterNamesShareTheNamespaceOfFieldsAndFlags) {
  EXPECT_EQ(LoadError(WithCounter("user_id: { count: true, per: ip, window: 1h }")),
            "r.yaml:3:12: counters.user_id: counter name 'user_id' is already the name of a "
            "request field (counters, fields and flags share one namespace)");
  EXPECT_EQ(LoadError(WithCounter("card_blocked: { count: true, per: ip, window: 1h }")),
            "r.yaml:3:17: counters.card_blocked: counter name 'card_blocked' is already the "
            "name of a flag (counters, fields and flags share one namespace)");
  EXPECT_EQ(LoadError(WithCounter("not: { count: true, per: ip, window: 1h }")),
            "r.yaml:3:8: counters.not: counter name 'not' is a keyword");
  EXPECT_EQ(LoadError(WithCounter("ip-users: { count: true, per: ip, window: 1h }")),
            "r.yaml:3:13: counters.ip-users: counter name 'ip-users' must be letters, digits "
            "and '_', starting with a letter or '_'");
  EXPECT_EQ(LoadError(WithCounter("c: { count: true, per: ip, window: 1h }\n"
                                  "  c: { count: true, per: user_id, window: 1h }")),
            "r.yaml:4:6: counters.c: counter 'c' is defined twice");
}

TEST(RuleFileErrors, CountersMustBeAMapping) {
  EXPECT_EQ(LoadError("version: \"1\"\ncounters: [a, b]\n"),
            "r.yaml:2:11: counters: must be a mapping of counter names to counters");
}

// A file with one rule whose keys are `keys` (starting on line 3).
std::string WithRule(const std::string& keys) {
  return "version: \"1\"\nrules:\n  - " + keys + "\n";
}

TEST(RuleFileErrors, RulesMustBeAList) {
  EXPECT_EQ(LoadError("version: \"1\"\nrules: { id: a }\n"),
            "r.yaml:2:8: rules: must be a list of rules");
}

TEST(RuleFileErrors, RuleId) {
  EXPECT_EQ(LoadError(WithRule("{ action: block, when: card_blocked }")),
            "r.yaml:3:5: rules[0].id: is required");
  EXPECT_EQ(LoadError(WithRule("{ id: \"shared card\", action: block, when: card_blocked }")),
            "r.yaml:3:11: rules[0].id: rule id 'shared card' must be letters, digits, '-', '_' "
            "and '.', starting with a letter or digit");
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block, when: card_blocked }\n"
                               "  - { id: a, action: review, when: seller_flagged }")),
            "r.yaml:4:11: rules[1].id: duplicate rule id 'a' (also rules[0])");
}

TEST(RuleFileErrors, RuleAction) {
  EXPECT_EQ(LoadError(WithRule("{ id: a, when: card_blocked }")),
            "r.yaml:3:5: rules[0].action: is required");
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: deny, when: card_blocked }")),
            "r.yaml:3:22: rules[0].action: must be allow, review, block or flag_seller, got "
            "\"deny\"");
}

TEST(RuleFileErrors, FlagTtlBelongsToFlagSeller) {
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: flag_seller, when: card_blocked }")),
            "r.yaml:3:5: rules[0].flag_ttl: is required");
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: flag_seller, flag_ttl: 0h, when: card_blocked }")),
            "r.yaml:3:45: rules[0].flag_ttl: must be longer than 0");
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: review, flag_ttl: 1h, when: card_blocked }")),
            "r.yaml:3:40: rules[0].flag_ttl: applies only to action flag_seller");
}

TEST(RuleFileErrors, RuleModeAndShare) {
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block, mode: dry-run, when: card_blocked }")),
            "r.yaml:3:35: rules[0].mode: must be enforce or shadow, got \"dry-run\"");
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block, max_block_share: x, when: card_blocked }")),
            "r.yaml:3:46: rules[0].max_block_share: must be a share of traffic greater than 0 "
            "and at most 1 (0.2 = 20%), got \"x\"");
}

TEST(RuleFileErrors, RuleWhen) {
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block }")),
            "r.yaml:3:5: rules[0].when: is required");
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block, when: [card_blocked] }")),
            "r.yaml:3:35: rules[0].when: must be a single value, not a list or a mapping");
  // `if:` for `when:`: the unknown key, and the condition then missing.
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block, if: card_blocked }")),
            "r.yaml:3:33: rules[0].if: unknown option (expected one of: id, when, action, "
            "flag_ttl, flag_linked, reason, mode, max_block_share)\n"
            "r.yaml:3:5: rules[0].when: is required");
}

// One load reports every mistake in the file, each with its line and column,
// and one mistake once: a broken counter does not make the rules that read
// it fail too, and an unknown action does not judge flag_ttl.
TEST(RuleFileErrors, EveryErrorInOnePass) {
  const std::string text =
      "version: \"1\"\n"                                                 // 1
      "fail_mode: ajar\n"                                                 // 2
      "counters:\n"                                                       // 3
      "  ok_1h: { count: true, per: user_id, window: 1h }\n"              // 4
      "  bad_1h: { count: true, per: no_such_field, window: 1h }\n"       // 5
      "  worse: { count: true, per: user_id, window: 7s, on: refund }\n"  // 6
      "rules:\n"                                                          // 7
      "  - { id: r1, action: blok, flag_ttl: 1h, when: bad_1h > 1 }\n"   // 8
      "  - { id: r2, action: block, mode: loud, when: ok_1h >> 2 }\n"     // 9
      "  - { id: r3, action: review, when: ok_1h > 2 }\n"                 // 10
      "  - { id: r3, action: review, when: card_blocked }\n";             // 11
  const std::vector<std::string> errors = absl::StrSplit(LoadError(text), '\n');
  EXPECT_THAT(errors,
              ElementsAre(
                  "r.yaml:2:12: fail_mode: must be open or closed, got \"ajar\"",
                  "r.yaml:5:31: counters.bad_1h.per: unknown request field 'no_such_field'",
                  "r.yaml:6:47: counters.worse.window: the window does not split into 12 "
                  "buckets of a whole number of seconds",
                  "r.yaml:6:55: counters.worse.on: must be request, decline or chargeback, "
                  "got \"refund\"",
                  "r.yaml:8:23: rules[0].action: must be allow, review, block or flag_seller, "
                  "got \"blok\"",
                  "r.yaml:9:36: rules[1].mode: must be enforce or shadow, got \"loud\"",
                  "r.yaml:9:55: rules[1].when: expected a value, got '>'",
                  "r.yaml:11:11: rules[3].id: duplicate rule id 'r3' (also rules[2])"));
  // A control character yaml-cpp quotes in its message is escaped: still one
  // line per error (found by rule_parser_fuzz).
  EXPECT_EQ(LoadError(std::string("fail_mode:\0\n", 12)),
            "r.yaml:2:1: unknown escape character: \\n");
  // A file with one mistake still gives exactly one line.
  EXPECT_EQ(LoadError(WithRule("{ id: a, action: block, mode: loud, when: card_blocked }")),
            "r.yaml:3:35: rules[0].mode: must be enforce or shadow, got \"loud\"");
}

TEST(RuleFileErrors, TooManyRules) {
  std::string text = "version: \"1\"\nrules:\n";
  for (size_t i = 0; i <= kMaxRules; ++i) {
    text += "  - { id: r" + std::to_string(i) + ", action: block, when: card_blocked }\n";
  }
  EXPECT_EQ(LoadError(text), "r.yaml:259:5: rules[256]: too many rules (at most 256)");
}

TEST(RuleFileErrors, UnreadableFile) {
  auto set = RuleSet::LoadFile("/nonexistent/fraud_rules.yaml");
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().message(), "/nonexistent/fraud_rules.yaml: cannot open the file");
}

// --- What a good file loads into. -----------------------------------------

constexpr char kFile[] = R"(version: "v7"
fail_mode: closed
blast_radius: { max_block_share: 0.3, window: 5m, min_requests: 20 }
counters:
  user_spend: { sum: amount_usd, per: user_id, window: 24h }
  seller_cards: { distinct: card_fingerprint, per: seller_id, window: 1h, buckets: 60 }
  seller_declines: { count: true, per: seller_id, window: 1h, on: decline }
  seller_chargebacks: { count: true, per: seller_id, window: 30d, on: chargeback }
rules:
  - id: vip
    when: user_id == "vip"
    action: allow
  - id: odd-region
    when: region in ["XX", "YY"]
    action: review
    reason: region we do not sell in
  - id: blocked-card
    when: card_blocked
    action: block
    max_block_share: 1
  - id: flagged
    when: seller_flagged
    action: flag_seller
    flag_ttl: 1h
  - id: flagged-blocked-device
    when: seller_flagged and device_blocked
    action: flag_seller
    flag_ttl: 2d
  - id: big
    when: coins > 100
    action: block
    mode: shadow
)";

std::shared_ptr<const RuleSet> LoadGood() {
  auto set = Parse(kFile);
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

TEST(RuleSet, LoadsHeaderAndGuard) {
  auto set = LoadGood();
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(set->name(), "r.yaml");
  EXPECT_EQ(set->version(), "v7");
  EXPECT_EQ(set->fail_mode(), FailMode::kClosed);
  EXPECT_EQ(set->blast_radius().max_block_share, 0.3);
  EXPECT_EQ(set->blast_radius().window, minutes(5));
  EXPECT_EQ(set->blast_radius().min_requests, 20);
}

TEST(RuleSet, DefaultsForAMinimalFile) {
  auto set = Parse("version: \"1\"\n");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ((*set)->fail_mode(), FailMode::kOpen);
  EXPECT_EQ((*set)->blast_radius().max_block_share, 0.2);
  EXPECT_EQ((*set)->blast_radius().window, minutes(10));
  EXPECT_EQ((*set)->blast_radius().min_requests, 50);
  EXPECT_TRUE((*set)->counters().empty());
  EXPECT_TRUE((*set)->rules().empty());
  EvalResult result;
  (*set)->Evaluate(EvalContext(), &result);
  EXPECT_EQ(result.decision.action, Action::kAllow);
}

TEST(RuleSet, LoadsCounters) {
  auto set = LoadGood();
  ASSERT_NE(set, nullptr);
  ASSERT_EQ(set->counters().size(), 4u);
  const CounterSpec& spend = set->counters()[0];
  EXPECT_EQ(spend.name, "user_spend");
  EXPECT_EQ(spend.kind, CounterKind::kSum);
  EXPECT_EQ(spend.value_field, Field::kAmountUsd);
  EXPECT_EQ(spend.per, Field::kUserId);
  EXPECT_EQ(spend.window, hours(24));
  EXPECT_EQ(spend.buckets, 12);
  EXPECT_EQ(spend.bucket_width(), hours(2));
  EXPECT_EQ(spend.on, CounterEvent::kRequest);
  const CounterSpec& cards = set->counters()[1];
  EXPECT_EQ(cards.kind, CounterKind::kDistinct);
  EXPECT_EQ(cards.value_field, Field::kCardFingerprint);
  EXPECT_EQ(cards.per, Field::kSellerId);
  EXPECT_EQ(cards.buckets, 60);
  EXPECT_EQ(cards.bucket_width(), minutes(1));
  EXPECT_EQ(set->counters()[2].kind, CounterKind::kCount);
  EXPECT_EQ(set->counters()[2].value_field, std::nullopt);
  EXPECT_EQ(set->counters()[2].on, CounterEvent::kDecline);
  EXPECT_EQ(set->counters()[3].on, CounterEvent::kChargeback);
  EXPECT_EQ(set->counter_index("seller_cards"), 1u);
  EXPECT_EQ(set->counter_index("seller_chargebacks"), 3u);
  EXPECT_EQ(set->counter_index("user_id"), std::nullopt);
}

TEST(RuleSet, LoadsRules) {
  auto set = LoadGood();
  ASSERT_NE(set, nullptr);
  ASSERT_EQ(set->rules().size(), 6u);
  const Rule& vip = set->rules()[0];
  EXPECT_EQ(vip.id(), "vip");
  EXPECT_EQ(vip.action(), Action::kAllow);
  EXPECT_EQ(vip.reason(), "vip");  // no reason: the id
  EXPECT_FALSE(vip.shadow());
  EXPECT_FALSE(vip.guarded());
  EXPECT_EQ(vip.when(), "user_id == \"vip\"");
  const Rule& odd = set->rules()[1];
  EXPECT_EQ(odd.reason(), "region we do not sell in");
  EXPECT_EQ(odd.max_block_share(), 0.3);  // the file's default
  EXPECT_FALSE(odd.guarded());             // a review keeps the sale open
  EXPECT_TRUE(set->rules()[2].guarded());  // block
  EXPECT_EQ(set->rules()[2].max_block_share(), 1.0);
  EXPECT_EQ(set->rules()[3].action(), Action::kFlagSeller);
  EXPECT_EQ(set->rules()[3].flag_ttl(), hours(1));
  EXPECT_EQ(set->rules()[2].flag_ttl(), milliseconds(0));
  EXPECT_TRUE(set->rules()[5].shadow());
  EXPECT_EQ(ActionName(set->rules()[3].action()), "flag_seller");
}

TEST(RuleSet, LoadFileReadsTheFile) {
  const std::string path = testing::WriteTemp("rule_set_test.yaml", kFile);
  auto set = RuleSet::LoadFile(path);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ((*set)->name(), path);
  EXPECT_EQ((*set)->rules().size(), 6u);
}

// --- Decisions. ------------------------------------------------------------

class Decisions : public ::testing::Test {
 protected:
  void SetUp() override {
    set_ = LoadGood();
    ASSERT_NE(set_, nullptr);
  }
  const EvalResult& Run(const RuleMask* demoted = nullptr) {
    set_->Evaluate(context_, &result_, demoted);
    return result_;
  }
  static std::vector<uint16_t> Hits(const RuleHits& hits) { return {hits.begin(), hits.end()}; }

  std::shared_ptr<const RuleSet> set_;
  EvalContext context_;
  EvalResult result_;
};

TEST_F(Decisions, NothingMatchesAllows) {
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kAllow);
  EXPECT_EQ(r.decision.rule, -1);
  EXPECT_FALSE(r.decision.flag_seller);
  EXPECT_TRUE(r.enforced.empty());
  EXPECT_TRUE(r.shadow.empty());
}

TEST_F(Decisions, AllowRuleIsNamedButDecidesNothingElse) {
  context_.set_string(Field::kUserId, "vip");
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kAllow);
  EXPECT_EQ(r.decision.rule, 0);
  EXPECT_EQ(Hits(r.enforced), std::vector<uint16_t>({0}));
}

TEST_F(Decisions, ReviewBeatsAllow) {
  context_.set_string(Field::kUserId, "vip");
  context_.set_string(Field::kRegion, "YY");
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kReview);
  EXPECT_EQ(r.decision.rule, 1);
  EXPECT_EQ(Hits(r.enforced), std::vector<uint16_t>({0, 1}));
}

TEST_F(Decisions, BlockBeatsReviewAndAllow) {
  context_.set_string(Field::kUserId, "vip");
  context_.set_string(Field::kRegion, "XX");
  context_.card_blocked = true;
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kBlock);
  EXPECT_EQ(r.decision.rule, 2);
  EXPECT_EQ(Hits(r.enforced), std::vector<uint16_t>({0, 1, 2}));
}

TEST_F(Decisions, FlagSellerReviewsAndFlags) {
  context_.seller_flagged = true;
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kReview);
  EXPECT_EQ(r.decision.rule, 3);
  EXPECT_TRUE(r.decision.flag_seller);
  EXPECT_EQ(r.decision.flag_rule, 3);
  EXPECT_EQ(r.decision.flag_ttl, hours(1));
}

TEST_F(Decisions, LongestFlagWinsAndBlockStillFlags) {
  context_.seller_flagged = true;
  context_.device_blocked = true;
  context_.card_blocked = true;
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kBlock);
  EXPECT_EQ(r.decision.rule, 2);
  EXPECT_TRUE(r.decision.flag_seller);
  EXPECT_EQ(r.decision.flag_rule, 4);
  EXPECT_EQ(r.decision.flag_ttl, hours(48));
}

TEST_F(Decisions, ShadowRuleIsReportedButNeverDecides) {
  context_.set_number(Field::kCoins, 500);
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kAllow);
  EXPECT_EQ(r.decision.rule, -1);
  EXPECT_TRUE(r.enforced.empty());
  EXPECT_EQ(Hits(r.shadow), std::vector<uint16_t>({5}));
}

TEST_F(Decisions, DemotedRuleCountsAsShadow) {
  context_.card_blocked = true;
  context_.set_string(Field::kRegion, "XX");
  RuleMask demoted;
  demoted.set(2);
  const EvalResult& r = Run(&demoted);
  EXPECT_EQ(r.decision.action, Action::kReview);
  EXPECT_EQ(r.decision.rule, 1);
  EXPECT_EQ(Hits(r.enforced), std::vector<uint16_t>({1}));
  EXPECT_EQ(Hits(r.shadow), std::vector<uint16_t>({2}));
}

TEST_F(Decisions, DecideHelperTakesAnyOrderAndIgnoresUnknownIndexes) {
  const uint16_t hits[] = {3, 999, 2, 1};
  const Decision d = set_->Decide(hits);
  EXPECT_EQ(d.action, Action::kBlock);
  EXPECT_EQ(d.rule, 2);
  EXPECT_TRUE(d.flag_seller);
  EXPECT_EQ(d.flag_rule, 3);
  const uint16_t reviews[] = {1, 3};
  EXPECT_EQ(set_->Decide(reviews).rule, 1);  // the first with the deciding action
  EXPECT_EQ(set_->Decide({}).action, Action::kAllow);
}

TEST_F(Decisions, EvaluateResetsTheResult) {
  context_.card_blocked = true;
  Run();
  context_.card_blocked = false;
  const EvalResult& r = Run();
  EXPECT_EQ(r.decision.action, Action::kAllow);
  EXPECT_TRUE(r.enforced.empty());
}

TEST(RuleSetNames, EnumNames) {
  EXPECT_EQ(FailModeName(FailMode::kClosed), "closed");
  EXPECT_EQ(CounterKindName(CounterKind::kDistinct), "distinct");
  EXPECT_EQ(CounterEventName(CounterEvent::kChargeback), "chargeback");
  EXPECT_EQ(ActionName(Action::kReview), "review");
}

}  // namespace
}  // namespace recharge::rules
