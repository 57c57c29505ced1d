// The condition language on its own: every compile error with the offset of
// the offending token, and the evaluator's semantics (precedence, lists,
// arithmetic, division by zero, strings with escapes, names).
#include "fraud/rules/expression.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace recharge::rules {
namespace {

const std::vector<std::string> kCounters = {"c0", "seller_users_1h", "card_users_24h"};

struct Failure {
  size_t offset;
  std::string message;
};

Failure CompileFailure(std::string_view text) {
  size_t offset = 999;
  absl::StatusOr<Program> p = Program::Compile(text, kCounters, &offset);
  if (p.ok()) return {999, "compiled"};
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  return {offset, std::string(p.status().message())};
}

Program Compile(std::string_view text) {
  absl::StatusOr<Program> p = Program::Compile(text, kCounters);
  EXPECT_TRUE(p.ok()) << text << ": " << p.status();
  return p.ok() ? *std::move(p) : Program();
}

bool Holds(std::string_view text, const EvalContext& context = EvalContext()) {
  Program p = Compile(text);
  EXPECT_EQ(p.type(), ValueType::kBool) << text;
  return p.Matches(context);
}

double Number(std::string_view text, const EvalContext& context = EvalContext()) {
  Program p = Compile(text);
  EXPECT_EQ(p.type(), ValueType::kNumber) << text;
  return p.Evaluate(context).number;
}

// --- Compile errors: one test per kind, each with its offset. -------------

TEST(ExpressionErrors, UnexpectedCharacter) {
  Failure f = CompileFailure("region == US$");
  EXPECT_EQ(f.offset, 12u);
  EXPECT_EQ(f.message, "unexpected character '$'");
  f = CompileFailure("coins > 3 \x01");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_EQ(f.message, "unexpected character byte 0x01");
}

TEST(ExpressionErrors, SingleEqualsSign) {
  Failure f = CompileFailure("coins = 3");
  EXPECT_EQ(f.offset, 6u);
  EXPECT_EQ(f.message, "'=' is not an operator; use '=='");
}

TEST(ExpressionErrors, ExclamationMarkAlone) {
  Failure f = CompileFailure("!seller_flagged");
  EXPECT_EQ(f.offset, 0u);
  EXPECT_EQ(f.message, "'!' is not an operator; use 'not' or '!='");
}

TEST(ExpressionErrors, CStyleLogicOperators) {
  Failure f = CompileFailure("card_blocked && device_blocked");
  EXPECT_EQ(f.offset, 13u);
  EXPECT_EQ(f.message, "unexpected '&'; use 'and'");
  f = CompileFailure("card_blocked || device_blocked");
  EXPECT_EQ(f.offset, 13u);
  EXPECT_EQ(f.message, "unexpected '|'; use 'or'");
}

TEST(ExpressionErrors, SingleQuotedString) {
  Failure f = CompileFailure("region == 'US'");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_THAT(f.message, ::testing::StartsWith("strings are written in double quotes"));
}

TEST(ExpressionErrors, UnterminatedString) {
  Failure f = CompileFailure("region == \"US");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_EQ(f.message, "unterminated string: missing the closing '\"'");
  f = CompileFailure(R"(region == "US\")");  // the escaped quote does not close it
  EXPECT_EQ(f.offset, 10u);
}

TEST(ExpressionErrors, UnknownEscape) {
  Failure f = CompileFailure(R"(region == "a\nb")");
  EXPECT_EQ(f.offset, 12u);
  EXPECT_EQ(f.message, "unknown escape in a string: only \\\" and \\\\ are allowed");
}

TEST(ExpressionErrors, MalformedNumbers) {
  Failure f = CompileFailure("coins > 1.");
  EXPECT_EQ(f.offset, 8u);
  EXPECT_EQ(f.message, "malformed number '1.': a decimal point needs digits after it");
  f = CompileFailure("coins > 12abc");
  EXPECT_EQ(f.offset, 8u);
  EXPECT_EQ(f.message, "malformed number '12abc'");
  f = CompileFailure("coins > 1.2.3");
  EXPECT_EQ(f.offset, 8u);
  EXPECT_EQ(f.message, "malformed number '1.2.3'");
}

TEST(ExpressionErrors, NumberOutOfRange) {
  Failure f = CompileFailure("coins > " + std::string(400, '9'));
  EXPECT_EQ(f.offset, 8u);
  EXPECT_THAT(f.message, ::testing::EndsWith("is out of range"));
}

TEST(ExpressionErrors, UnexpectedEnd) {
  Failure f = CompileFailure("coins >");
  EXPECT_EQ(f.offset, 7u);
  EXPECT_EQ(f.message, "unexpected end of the condition: expected a value");
  f = CompileFailure("");
  EXPECT_EQ(f.offset, 0u);
  f = CompileFailure("   ");
  EXPECT_EQ(f.offset, 0u);
  f = CompileFailure("coins >  \n");  // just after the last token
  EXPECT_EQ(f.offset, 7u);
}

TEST(ExpressionErrors, ValueExpected) {
  Failure f = CompileFailure("coins > > 3");
  EXPECT_EQ(f.offset, 8u);
  EXPECT_EQ(f.message, "expected a value, got '>'");
  f = CompileFailure("seller_flagged and or card_blocked");
  EXPECT_EQ(f.offset, 19u);
  EXPECT_EQ(f.message, "expected a value, got 'or'");
}

TEST(ExpressionErrors, MissingClosingParenthesis) {
  Failure f = CompileFailure("(coins > 3");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_EQ(f.message, "expected ')' to close '(', got the end of the condition");
  f = CompileFailure("(coins > 3 card_blocked");
  EXPECT_EQ(f.offset, 11u);
  EXPECT_EQ(f.message, "expected ')' to close '(', got 'card_blocked'");
}

TEST(ExpressionErrors, TrailingTokens) {
  Failure f = CompileFailure("coins > 3 )");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_EQ(f.message, "unexpected ')' after a complete condition");
  f = CompileFailure("card_blocked device_blocked");
  EXPECT_EQ(f.offset, 13u);
  EXPECT_EQ(f.message, "unexpected 'device_blocked' after a complete condition");
}

TEST(ExpressionErrors, ChainedComparison) {
  Failure f = CompileFailure("1 < coins < 3");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_EQ(f.message, "comparisons do not chain: combine them with 'and', or use parentheses");
  f = CompileFailure("coins in [1] == true");
  EXPECT_EQ(f.offset, 13u);
  f = CompileFailure("(1 < coins == true)");
  EXPECT_EQ(f.offset, 11u);
}

TEST(ExpressionErrors, UnknownName) {
  Failure f = CompileFailure("seller_userz_1h > 25");
  EXPECT_EQ(f.offset, 0u);
  EXPECT_EQ(f.message,
            "unknown name 'seller_userz_1h': not a request field, a counter of this file or a "
            "flag");
  f = CompileFailure("coins > 3 and amount > 1");
  EXPECT_EQ(f.offset, 14u);
}

TEST(ExpressionErrors, OrderingComparisonNeedsNumbers) {
  Failure f = CompileFailure("region > 3");
  EXPECT_EQ(f.offset, 7u);
  EXPECT_EQ(f.message, "'>' compares numbers, got string and number");
  f = CompileFailure("seller_flagged <= card_blocked");
  EXPECT_EQ(f.offset, 15u);
  EXPECT_EQ(f.message, "'<=' compares numbers, got bool and bool");
}

TEST(ExpressionErrors, EqualityNeedsOneType) {
  Failure f = CompileFailure("region == 3");
  EXPECT_EQ(f.offset, 7u);
  EXPECT_EQ(f.message, "'==' compares two values of one type, got string and number");
  f = CompileFailure("seller_flagged != \"x\"");
  EXPECT_EQ(f.offset, 15u);
  EXPECT_EQ(f.message, "'!=' compares two values of one type, got bool and string");
}

TEST(ExpressionErrors, ArithmeticNeedsNumbers) {
  Failure f = CompileFailure("seller_flagged + 1 > 0");
  EXPECT_EQ(f.offset, 15u);
  EXPECT_EQ(f.message, "'+' needs numbers, got bool and number");
  f = CompileFailure("coins * region > 0");
  EXPECT_EQ(f.offset, 6u);
  EXPECT_EQ(f.message, "'*' needs numbers, got number and string");
}

TEST(ExpressionErrors, UnaryMinusNeedsANumber) {
  Failure f = CompileFailure("-region == \"x\"");
  EXPECT_EQ(f.offset, 0u);
  EXPECT_EQ(f.message, "unary '-' needs a number, got string");
}

TEST(ExpressionErrors, LogicNeedsBools) {
  Failure f = CompileFailure("coins and card_blocked");
  EXPECT_EQ(f.offset, 6u);
  EXPECT_EQ(f.message, "'and' needs true/false on both sides, got number and bool");
  f = CompileFailure("card_blocked or region");
  EXPECT_EQ(f.offset, 13u);
  EXPECT_EQ(f.message, "'or' needs true/false on both sides, got bool and string");
  f = CompileFailure("not coins");
  EXPECT_EQ(f.offset, 0u);
  EXPECT_EQ(f.message, "'not' needs true/false, got number");
}

TEST(ExpressionErrors, InNeedsABracketedList) {
  Failure f = CompileFailure("region in \"US\"");
  EXPECT_EQ(f.offset, 10u);
  EXPECT_EQ(f.message, "expected '[' after 'in', got the string \"US\"");
}

TEST(ExpressionErrors, ListHoldsLiteralsOnly) {
  Failure f = CompileFailure("region in [\"US\", currency]");
  EXPECT_EQ(f.offset, 17u);
  EXPECT_EQ(f.message,
            "a list after 'in' holds literals (numbers, \"strings\", true, false), got "
            "'currency'");
}

TEST(ExpressionErrors, ListOfMixedTypes) {
  Failure f = CompileFailure("region in [\"US\", 1]");
  EXPECT_EQ(f.offset, 17u);
  EXPECT_EQ(f.message, "a list holds values of one type: expected string, got number");
}

TEST(ExpressionErrors, ListOfAnotherType) {
  Failure f = CompileFailure("region in [1, 2]");
  EXPECT_EQ(f.offset, 7u);
  EXPECT_EQ(f.message, "'in' looks for a string in a list of numbers");
  f = CompileFailure("coins not in [\"a\"]");
  EXPECT_EQ(f.offset, 10u);
}

TEST(ExpressionErrors, EmptyList) {
  Failure f = CompileFailure("region in []");
  EXPECT_EQ(f.offset, 11u);
  EXPECT_EQ(f.message, "an empty list never matches: list at least one value");
}

TEST(ExpressionErrors, UnterminatedList) {
  Failure f = CompileFailure("region in [\"US\"");
  EXPECT_EQ(f.offset, 15u);
  EXPECT_EQ(f.message, "unterminated list: missing ']'");
  f = CompileFailure("region in [\"US\",");
  EXPECT_EQ(f.offset, 16u);
  EXPECT_EQ(f.message, "unterminated list: missing ']'");
}

TEST(ExpressionErrors, ListWithoutComma) {
  Failure f = CompileFailure("region in [\"US\" \"SG\"]");
  EXPECT_EQ(f.offset, 16u);
  EXPECT_EQ(f.message, "expected ',' or ']' in a list, got the string \"SG\"");
}

TEST(ExpressionErrors, NestingTooDeep) {
  const std::string text = std::string(40, '(') + "card_blocked" + std::string(40, ')');
  Failure f = CompileFailure(text);
  EXPECT_EQ(f.offset, 32u);  // the 33rd '('
  EXPECT_EQ(f.message, "the condition nests more than 32 levels deep");
  f = CompileFailure(std::string(100, '-') + "1 > 0");
  EXPECT_EQ(f.offset, 32u);
  std::string nots;
  for (int i = 0; i < 40; ++i) nots += "not ";
  f = CompileFailure(nots + "card_blocked");
  EXPECT_EQ(f.offset, 128u);  // the 33rd 'not'
  // 32 levels are fine.
  EXPECT_TRUE(Holds(std::string(32, '(') + "true" + std::string(32, ')')));
}

// --- Evaluation. ----------------------------------------------------------

TEST(ExpressionEval, ArithmeticPrecedence) {
  EXPECT_EQ(Number("1 + 2 * 3"), 7);
  EXPECT_EQ(Number("(1 + 2) * 3"), 9);
  EXPECT_EQ(Number("10 - 4 - 3"), 3);  // left to right
  EXPECT_EQ(Number("24 / 4 / 2"), 3);  // left to right
  EXPECT_EQ(Number("2 * 3 / 4"), 1.5);
  EXPECT_EQ(Number("-2 * 3"), -6);
  EXPECT_EQ(Number("- -2"), 2);
  EXPECT_EQ(Number("2 - -2"), 4);
  EXPECT_EQ(Number("-(1 + 2) * 2"), -6);
  EXPECT_EQ(Number("7 - 2 * 3 + 1"), 2);
}

TEST(ExpressionEval, LogicPrecedence) {
  EXPECT_TRUE(Holds("true or false and false"));  // and binds tighter than or
  EXPECT_FALSE(Holds("(true or false) and false"));
  EXPECT_FALSE(Holds("not false and false"));  // not binds tighter than and
  EXPECT_TRUE(Holds("not (false and false)"));
  EXPECT_TRUE(Holds("not 1 > 2"));  // comparison binds tighter than not
  EXPECT_TRUE(Holds("not not true"));
  EXPECT_TRUE(Holds("1 + 1 in [2]"));  // arithmetic binds tighter than in
}

TEST(ExpressionEval, Comparisons) {
  EXPECT_TRUE(Holds("1 < 2"));
  EXPECT_FALSE(Holds("2 < 2"));
  EXPECT_TRUE(Holds("2 <= 2"));
  EXPECT_TRUE(Holds("3 > 2"));
  EXPECT_FALSE(Holds("2 > 2"));
  EXPECT_TRUE(Holds("2 >= 2"));
  EXPECT_TRUE(Holds("2 == 2.0"));
  EXPECT_TRUE(Holds("2 != 3"));
  EXPECT_TRUE(Holds("true == true"));
  EXPECT_TRUE(Holds("true != false"));
  EXPECT_TRUE(Holds("(1 < 2) == (3 < 4)"));
  EXPECT_TRUE(Holds("0.1 + 0.2 > 0.3"));  // binary floating point, as documented
}

TEST(ExpressionEval, DivisionByZeroIsZero) {
  EXPECT_EQ(Number("5 / 0"), 0);
  EXPECT_EQ(Number("0 / 0"), 0);
  EXPECT_EQ(Number("-5 / (2 - 2)"), 0);
  EXPECT_EQ(Number("5 / 2"), 2.5);
  // A share of a counter that is still zero.
  EXPECT_FALSE(Holds("c0 / seller_users_1h > 0.5"));
  EXPECT_TRUE(Holds("c0 / seller_users_1h == 0"));
}

TEST(ExpressionEval, StringsWithEscapes) {
  EvalContext c;
  c.set_string(Field::kPackageId, "say \"hi\"\\now");
  EXPECT_TRUE(Holds(R"(package_id == "say \"hi\"\\now")", c));
  EXPECT_FALSE(Holds(R"(package_id == "say \"hi\"")", c));
  Program p = Compile(R"("a\"b\\c")");
  EXPECT_EQ(p.type(), ValueType::kString);
  EXPECT_EQ(p.Evaluate(c).text, "a\"b\\c");
  EXPECT_TRUE(Holds(R"("" == "")"));
  EXPECT_TRUE(Holds(R"(seller_id == "")"));  // an absent field is empty
  EXPECT_TRUE(Holds(R"("é" != "e")"));       // bytes, compared exactly
}

TEST(ExpressionEval, StringLists) {
  EvalContext c;
  c.set_string(Field::kRegion, "SG");
  EXPECT_TRUE(Holds(R"(region in ["US", "SG", "PH"])", c));
  EXPECT_FALSE(Holds(R"(region in ["US", "PH"])", c));
  EXPECT_FALSE(Holds(R"(region not in ["US", "SG"])", c));
  EXPECT_TRUE(Holds(R"(region not in ["US", "PH",])", c));  // trailing comma
  EXPECT_TRUE(Holds(R"(region in ["SG", "SG"])", c));       // duplicates are harmless
  EXPECT_FALSE(Holds(R"(region in ["sg"])", c));            // case matters
  EXPECT_TRUE(Holds(R"(currency in [""])", c));
  EXPECT_TRUE(Holds(R"(not region in ["US"])", c));
}

TEST(ExpressionEval, NumberAndBoolLists) {
  EvalContext c;
  c.set_number(Field::kCoins, 500);
  c.set_number(Field::kAmountUsd, 0.99);
  EXPECT_TRUE(Holds("coins in [100, 500, 1000]", c));
  EXPECT_FALSE(Holds("coins in [100, 1000]", c));
  EXPECT_TRUE(Holds("amount_usd in [0.99, 4.99]", c));
  EXPECT_TRUE(Holds("-coins in [-500]", c));
  EXPECT_TRUE(Holds("coins - 501 in [-1, -2]", c));
  EXPECT_TRUE(Holds("card_blocked in [false]", c));
  EXPECT_FALSE(Holds("card_blocked in [true]", c));
  EXPECT_TRUE(Holds("card_blocked in [true, false]", c));
  c.card_blocked = true;
  EXPECT_TRUE(Holds("card_blocked in [true]", c));
  EXPECT_TRUE(Holds("card_blocked not in [false]", c));
}

TEST(ExpressionEval, ReadsFieldsCountersAndFlags) {
  EvalContext c;
  const double counters[] = {1, 26, 3};
  c.counters = counters;
  c.set_string(Field::kSellerId, "s-1");
  c.set_number(Field::kAmountUsd, 0.99);
  EXPECT_TRUE(Holds(R"(seller_id != "" and seller_users_1h > 25)", c));
  EXPECT_FALSE(Holds("card_users_24h > 3", c));
  EXPECT_TRUE(Holds("amount_usd == 0.99", c));
  EXPECT_EQ(Number("c0 + seller_users_1h * card_users_24h", c), 79);
  EXPECT_FALSE(Holds("seller_flagged or card_blocked or device_blocked", c));
  c.seller_flagged = true;
  EXPECT_TRUE(Holds("seller_flagged and not card_blocked", c));
  c.seller_flagged = false;
  c.device_blocked = true;
  EXPECT_TRUE(Holds("device_blocked", c));
  // A counter past the end of the span reads 0.
  c.counters = std::span<const double>(counters, 1);
  EXPECT_EQ(Number("card_users_24h", c), 0);
}

TEST(ExpressionEval, EveryFieldHasItsName) {
  for (size_t i = 0; i < kNumFields; ++i) {
    const Field f = static_cast<Field>(i);
    EXPECT_EQ(FieldByName(FieldName(f)), f);
    EvalContext c;
    if (FieldType(f) == ValueType::kString) {
      c.set_string(f, "v");
      EXPECT_TRUE(Holds(std::string(FieldName(f)) + " == \"v\"", c)) << FieldName(f);
    } else {
      c.set_number(f, 7);
      EXPECT_TRUE(Holds(std::string(FieldName(f)) + " == 7", c)) << FieldName(f);
    }
  }
  EXPECT_EQ(FieldByName("amount"), std::nullopt);
  EXPECT_EQ(FlagByName("card_blocked"), Flag::kCardBlocked);
}

TEST(ExpressionEval, ResultTypes) {
  EXPECT_EQ(Compile("coins + 1").type(), ValueType::kNumber);
  EXPECT_EQ(Compile("region").type(), ValueType::kString);
  EXPECT_EQ(Compile("coins > 1").type(), ValueType::kBool);
}

TEST(ExpressionEval, CompilesToPostfix) {
  EXPECT_EQ(Compile("1 + coins * c0 > 2 and not card_blocked").Disassemble(),
            "push_number 1.000000\nload_number coins\nload_counter 0\nmul\nadd\n"
            "push_number 2.000000\ngt\nload_flag card_blocked\nnot\nand\n");
}

}  // namespace
}  // namespace recharge::rules
