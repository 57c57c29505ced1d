// Program: a compiled `when:` condition of the fraud-rule language
// (DESIGN §6). The text is parsed and type-checked once, at load, into a flat
// postfix program over three small typed stacks (numbers, bools, strings)
// that lives in fixed arrays on the evaluating thread's stack: evaluating a
// Program never allocates.
//
// The language, lowest precedence first (docs/fraud-rules.md for ops):
//
//   or_expr  := and_expr ("or" and_expr)*
//   and_expr := not_expr ("and" not_expr)*
//   not_expr := "not" not_expr | compare
//   compare  := sum [ ("=="|"!="|"<"|"<="|">"|">=") sum
//                   | ["not"] "in" "[" literal ("," literal)* [","] "]" ]
//   sum      := product (("+"|"-") product)*
//   product  := unary (("*"|"/") unary)*
//   unary    := "-" unary | primary
//   primary  := NUMBER | STRING | "true" | "false" | NAME | "(" or_expr ")"
//   literal  := ["-"] NUMBER | STRING | "true" | "false"
//
// NUMBER is 12 or 0.99; STRING is double-quoted, with \" and \\ as its only
// escapes. A NAME is a request field (Field), a counter (number) or a flag
// (seller_flagged, card_blocked, device_blocked: bools). Types: arithmetic
// and < <= > >= take numbers; == and != take two values of one type; and, or,
// not take bools; `x in [...]` takes a list of literals of x's type.
// Comparisons do not chain (`a < b < c` is an error). Division by zero
// evaluates to 0. Every operand is evaluated (no short-circuit; nothing has
// side effects, so only the cost differs).
//
// Thread-safety: a Program is immutable after Compile; any number of threads
// may evaluate it at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fraud/rules/eval_context.h"

namespace recharge::rules {

class Program {
 public:
  // How deeply parentheses, `not` and unary minus may nest (a compile
  // error beyond), and how many values each evaluation stack holds. One
  // nesting level keeps at most 3 values of one type pending (the left
  // operands of `or`, `and` and a comparison, or of a comparison, + and *),
  // so the stacks cannot overflow.
  static constexpr int kMaxNesting = 32;
  static constexpr int kMaxStackDepth = 128;
  static_assert(kMaxStackDepth >= 3 * (kMaxNesting + 1) + 2);

  // The value of an expression (Evaluate). `text` may point into the
  // Program's constants or into the EvalContext.
  struct Value {
    ValueType type = ValueType::kBool;
    bool boolean = false;
    double number = 0;
    std::string_view text;
  };

  // Compiles `text`. `counters` are the counter names in counter-index order
  // (the index a counter's value has in EvalContext::counters).
  //
  // A syntax error, an unknown name or a type error returns INVALID_ARGUMENT
  // with a message that does not include a position; *error_offset (if not
  // null) is set to the byte offset in `text` of the offending token (the
  // operator, for an operator applied to the wrong types; text.size() for an
  // unexpected end). The result may be of any type: a `when:` condition
  // must be a bool, which the caller checks with type().
  static absl::StatusOr<Program> Compile(std::string_view text,
                                         std::span<const std::string> counters,
                                         size_t* error_offset = nullptr);

  ValueType type() const { return type_; }
  // Whether the program reads a flag (seller_flagged, card_blocked,
  // device_blocked) or a counter: a counter's `when:` may read neither.
  bool reads_flags_or_counters() const;

  // REQUIRES: type() == ValueType::kBool. Allocates nothing.
  bool Matches(const EvalContext& context) const;

  // Evaluates a program of any type. Allocates nothing.
  Value Evaluate(const EvalContext& context) const;

  // The program as text, one instruction per line (tests, debugging).
  std::string Disassemble() const;

  // Instructions: postfix over a number stack, a bool stack and a string stack.
  enum class Op : uint8_t {
    kPushNumber,   // arg: index in numbers_
    kPushString,   // arg: index in strings_
    kPushBool,     // arg: 0 or 1
    kLoadString,   // arg: string slot of a Field
    kLoadNumber,   // arg: number slot of a Field
    kLoadCounter,  // arg: counter index
    kLoadFlag,     // arg: Flag
    kNeg,
    kAdd,
    kSub,
    kMul,
    kDiv,
    kEqNumber,
    kNeNumber,
    kLt,
    kLe,
    kGt,
    kGe,
    kEqString,
    kNeString,
    kEqBool,
    kNeBool,
    kNot,
    kAnd,
    kOr,
    kInNumbers,  // arg: index in number_sets_
    kInStrings,  // arg: index in string_sets_
    kInBools,    // arg: bit 0 = false is in the list, bit 1 = true is
  };
  struct Instr {
    Op op;
    uint32_t arg;
  };

 private:
  friend class Compiler;
  struct Machine;
  void Run(const EvalContext& context, Machine* m) const;

  ValueType type_ = ValueType::kBool;
  std::vector<Instr> code_;
  std::vector<double> numbers_;
  std::vector<std::string> strings_;
  std::vector<std::vector<double>> number_sets_;       // each sorted
  std::vector<std::vector<std::string>> string_sets_;  // each sorted
};

}  // namespace recharge::rules
