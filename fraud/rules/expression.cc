#include "fraud/rules/expression.h"

#include <algorithm>
#include <functional>
#include <optional>

#include "absl/status/status.h"
#include "fraud/rules/lexer.h"
#include "io/strings.h"

namespace recharge::rules {

using internal::Token;
using internal::TokenKind;

// Recursive-descent parser that type-checks as it goes and emits postfix
// code; one instance per Compile call.
class Compiler {
 public:
  Compiler(std::vector<Token> tokens, std::span<const std::string> counters, Program* program)
      : tokens_(std::move(tokens)), counters_(counters), program_(program) {}

  absl::Status Run(size_t* error_offset) {
    absl::StatusOr<ValueType> type = ParseOr();
    if (type.ok() && Peek().kind != TokenKind::kEnd) {
      type = Fail(Peek(), StrCat("unexpected ", internal::DescribeToken(Peek()),
                                 " after a complete condition"));
    }
    if (!type.ok()) {
      *error_offset = error_offset_;
      return type.status();
    }
    program_->type_ = *type;
    return absl::OkStatus();
  }

 private:
  const Token& Peek() const { return tokens_[pos_]; }
  const Token& Next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }

  absl::Status Fail(const Token& at, std::string message) {
    return FailAt(at.offset, std::move(message));
  }
  absl::Status FailAt(size_t offset, std::string message) {
    error_offset_ = offset;
    return absl::InvalidArgumentError(std::move(message));
  }

  // Appends an instruction and tracks the stack depths it leaves.
  absl::Status Emit(Program::Op op, uint32_t arg, size_t offset) {
    using Op = Program::Op;
    switch (op) {
      case Op::kPushNumber:
      case Op::kLoadNumber:
      case Op::kLoadCounter: ++numbers_; break;
      case Op::kPushString:
      case Op::kLoadString: ++strings_; break;
      case Op::kPushBool:
      case Op::kLoadFlag: ++bools_; break;
      case Op::kNeg:
      case Op::kNot:
      case Op::kInBools: break;
      case Op::kAdd:
      case Op::kSub:
      case Op::kMul:
      case Op::kDiv: --numbers_; break;
      case Op::kEqNumber:
      case Op::kNeNumber:
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe:
        numbers_ -= 2;
        ++bools_;
        break;
      case Op::kEqString:
      case Op::kNeString:
        strings_ -= 2;
        ++bools_;
        break;
      case Op::kEqBool:
      case Op::kNeBool:
      case Op::kAnd:
      case Op::kOr: --bools_; break;
      case Op::kInNumbers:
        --numbers_;
        ++bools_;
        break;
      case Op::kInStrings:
        --strings_;
        ++bools_;
        break;
    }
    if (numbers_ > Program::kMaxStackDepth || bools_ > Program::kMaxStackDepth ||
        strings_ > Program::kMaxStackDepth) {
      // Impossible with kMaxNesting (see the static_assert in expression.h).
      error_offset_ = offset;
      return absl::InternalError("the condition overflows the evaluation stack");
    }
    program_->code_.push_back({op, arg});
    return absl::OkStatus();
  }

  absl::Status Enter(const Token& at) {
    if (++nesting_ > Program::kMaxNesting) {
      return Fail(at,
                  StrCat("the condition nests more than ", Program::kMaxNesting, " levels deep"));
    }
    return absl::OkStatus();
  }

  static std::string_view OpName(TokenKind kind) {
    switch (kind) {
      case TokenKind::kOr: return "or";
      case TokenKind::kAnd: return "and";
      case TokenKind::kNot: return "not";
      case TokenKind::kEq: return "==";
      case TokenKind::kNe: return "!=";
      case TokenKind::kLt: return "<";
      case TokenKind::kLe: return "<=";
      case TokenKind::kGt: return ">";
      case TokenKind::kGe: return ">=";
      case TokenKind::kPlus: return "+";
      case TokenKind::kMinus: return "-";
      case TokenKind::kStar: return "*";
      case TokenKind::kSlash: return "/";
      default: return "?";
    }
  }

  // Bool-only binary operators: or, and.
  absl::StatusOr<ValueType> ParseLogic(TokenKind kind) {
    const bool is_or = kind == TokenKind::kOr;
    absl::StatusOr<ValueType> left = is_or ? ParseLogic(TokenKind::kAnd) : ParseNot();
    if (!left.ok()) return left;
    while (Peek().kind == kind) {
      const Token& op = Next();
      absl::StatusOr<ValueType> right = is_or ? ParseLogic(TokenKind::kAnd) : ParseNot();
      if (!right.ok()) return right;
      if (*left != ValueType::kBool || *right != ValueType::kBool) {
        return Fail(op, StrCat("'", OpName(kind), "' needs true/false on both sides, got ",
                               ValueTypeName(*left), " and ", ValueTypeName(*right)));
      }
      absl::Status s = Emit(is_or ? Program::Op::kOr : Program::Op::kAnd, 0, op.offset);
      if (!s.ok()) return s;
    }
    return left;
  }

  absl::StatusOr<ValueType> ParseOr() { return ParseLogic(TokenKind::kOr); }

  absl::StatusOr<ValueType> ParseNot() {
    if (Peek().kind != TokenKind::kNot) return ParseCompare();
    const Token& op = Next();
    absl::Status s = Enter(op);
    if (!s.ok()) return s;
    absl::StatusOr<ValueType> operand = ParseNot();
    if (!operand.ok()) return operand;
    --nesting_;
    if (*operand != ValueType::kBool) {
      return Fail(op, StrCat("'not' needs true/false, got ", ValueTypeName(*operand)));
    }
    s = Emit(Program::Op::kNot, 0, op.offset);
    if (!s.ok()) return s;
    return ValueType::kBool;
  }

  static bool IsComparison(TokenKind kind) {
    return kind == TokenKind::kEq || kind == TokenKind::kNe || kind == TokenKind::kLt ||
           kind == TokenKind::kLe || kind == TokenKind::kGt || kind == TokenKind::kGe;
  }

  absl::StatusOr<ValueType> ParseCompare() {
    absl::StatusOr<ValueType> left = ParseSum();
    if (!left.ok()) return left;
    const TokenKind kind = Peek().kind;
    if (kind == TokenKind::kIn ||
        (kind == TokenKind::kNot && tokens_[pos_ + 1].kind == TokenKind::kIn)) {
      return ParseIn(*left);
    }
    if (!IsComparison(kind)) return left;
    const Token& op = Next();
    absl::StatusOr<ValueType> right = ParseSum();
    if (!right.ok()) return right;
    using Op = Program::Op;
    Op code;
    if (kind == TokenKind::kEq || kind == TokenKind::kNe) {
      if (*left != *right) {
        return Fail(op, StrCat("'", OpName(kind), "' compares two values of one type, got ",
                               ValueTypeName(*left), " and ", ValueTypeName(*right)));
      }
      const bool eq = kind == TokenKind::kEq;
      switch (*left) {
        case ValueType::kNumber: code = eq ? Op::kEqNumber : Op::kNeNumber; break;
        case ValueType::kString: code = eq ? Op::kEqString : Op::kNeString; break;
        default: code = eq ? Op::kEqBool : Op::kNeBool; break;
      }
    } else {
      if (*left != ValueType::kNumber || *right != ValueType::kNumber) {
        return Fail(op, StrCat("'", OpName(kind), "' compares numbers, got ", ValueTypeName(*left),
                               " and ", ValueTypeName(*right)));
      }
      code = kind == TokenKind::kLt   ? Op::kLt
             : kind == TokenKind::kLe ? Op::kLe
             : kind == TokenKind::kGt ? Op::kGt
                                      : Op::kGe;
    }
    absl::Status s = Emit(code, 0, op.offset);
    if (!s.ok()) return s;
    return CheckNoChain();
  }

  // After a comparison or an `in`: `a < b < c` is an error, not (a < b) < c.
  absl::StatusOr<ValueType> CheckNoChain() {
    const TokenKind kind = Peek().kind;
    if (IsComparison(kind) || kind == TokenKind::kIn ||
        (kind == TokenKind::kNot && tokens_[pos_ + 1].kind == TokenKind::kIn)) {
      return Fail(Peek(), "comparisons do not chain: combine them with 'and', or use parentheses");
    }
    return ValueType::kBool;
  }

  // `x [not] in [literal, ...]`; the left operand is already emitted.
  absl::StatusOr<ValueType> ParseIn(ValueType left) {
    const bool negated = Peek().kind == TokenKind::kNot;
    if (negated) Next();
    const Token& in = Next();
    if (Peek().kind != TokenKind::kLBracket) {
      return Fail(Peek(), StrCat("expected '[' after 'in', got ", internal::DescribeToken(Peek())));
    }
    Next();
    std::vector<double> numbers;
    std::vector<std::string> strings;
    uint32_t bools = 0;
    std::optional<ValueType> type;
    while (Peek().kind != TokenKind::kRBracket) {
      const Token& first = Peek();
      ValueType item_type;
      if (first.kind == TokenKind::kMinus && tokens_[pos_ + 1].kind == TokenKind::kNumber) {
        Next();
        numbers.push_back(-Next().number);
        item_type = ValueType::kNumber;
      } else if (first.kind == TokenKind::kNumber) {
        numbers.push_back(Next().number);
        item_type = ValueType::kNumber;
      } else if (first.kind == TokenKind::kString) {
        strings.push_back(Next().text);
        item_type = ValueType::kString;
      } else if (first.kind == TokenKind::kTrue || first.kind == TokenKind::kFalse) {
        bools |= Next().kind == TokenKind::kTrue ? 2 : 1;
        item_type = ValueType::kBool;
      } else if (first.kind == TokenKind::kEnd) {
        return Fail(first, "unterminated list: missing ']'");
      } else {
        return Fail(first, StrCat("a list after 'in' holds literals (numbers, \"strings\", "
                                  "true, false), got ",
                                  internal::DescribeToken(first)));
      }
      if (type && *type != item_type) {
        return Fail(first, StrCat("a list holds values of one type: expected ",
                                  ValueTypeName(*type), ", got ", ValueTypeName(item_type)));
      }
      type = item_type;
      if (Peek().kind == TokenKind::kComma) {
        Next();
      } else if (Peek().kind != TokenKind::kRBracket) {
        return Fail(Peek(), Peek().kind == TokenKind::kEnd
                                ? std::string("unterminated list: missing ']'")
                                : StrCat("expected ',' or ']' in a list, got ",
                                         internal::DescribeToken(Peek())));
      }
    }
    const Token& close = Next();
    if (!type) return Fail(close, "an empty list never matches: list at least one value");
    if (*type != left) {
      return Fail(in, StrCat("'in' looks for a ", ValueTypeName(left), " in a list of ",
                             ValueTypeName(*type), "s"));
    }
    using Op = Program::Op;
    absl::Status s;
    switch (*type) {
      case ValueType::kNumber: {
        std::sort(numbers.begin(), numbers.end());
        numbers.erase(std::unique(numbers.begin(), numbers.end()), numbers.end());
        program_->number_sets_.push_back(std::move(numbers));
        s = Emit(Op::kInNumbers, static_cast<uint32_t>(program_->number_sets_.size() - 1),
                 in.offset);
        break;
      }
      case ValueType::kString: {
        std::sort(strings.begin(), strings.end());
        strings.erase(std::unique(strings.begin(), strings.end()), strings.end());
        program_->string_sets_.push_back(std::move(strings));
        s = Emit(Op::kInStrings, static_cast<uint32_t>(program_->string_sets_.size() - 1),
                 in.offset);
        break;
      }
      case ValueType::kBool: s = Emit(Op::kInBools, bools, in.offset); break;
    }
    if (s.ok() && negated) s = Emit(Op::kNot, 0, in.offset);
    if (!s.ok()) return s;
    return CheckNoChain();
  }

  // + - (sum) and * / (product): numbers only.
  absl::StatusOr<ValueType> ParseArith(bool sum) {
    absl::StatusOr<ValueType> left = sum ? ParseArith(false) : ParseUnary();
    if (!left.ok()) return left;
    while (true) {
      const TokenKind kind = Peek().kind;
      if (sum ? (kind != TokenKind::kPlus && kind != TokenKind::kMinus)
              : (kind != TokenKind::kStar && kind != TokenKind::kSlash)) {
        return left;
      }
      const Token& op = Next();
      absl::StatusOr<ValueType> right = sum ? ParseArith(false) : ParseUnary();
      if (!right.ok()) return right;
      if (*left != ValueType::kNumber || *right != ValueType::kNumber) {
        return Fail(op, StrCat("'", OpName(kind), "' needs numbers, got ", ValueTypeName(*left),
                               " and ", ValueTypeName(*right)));
      }
      using Op = Program::Op;
      const Op code = kind == TokenKind::kPlus    ? Op::kAdd
                      : kind == TokenKind::kMinus ? Op::kSub
                      : kind == TokenKind::kStar  ? Op::kMul
                                                  : Op::kDiv;
      absl::Status s = Emit(code, 0, op.offset);
      if (!s.ok()) return s;
    }
  }

  absl::StatusOr<ValueType> ParseSum() { return ParseArith(true); }

  absl::StatusOr<ValueType> ParseUnary() {
    if (Peek().kind != TokenKind::kMinus) return ParsePrimary();
    const Token& op = Next();
    absl::Status s = Enter(op);
    if (!s.ok()) return s;
    absl::StatusOr<ValueType> operand = ParseUnary();
    if (!operand.ok()) return operand;
    --nesting_;
    if (*operand != ValueType::kNumber) {
      return Fail(op, StrCat("unary '-' needs a number, got ", ValueTypeName(*operand)));
    }
    s = Emit(Program::Op::kNeg, 0, op.offset);
    if (!s.ok()) return s;
    return ValueType::kNumber;
  }

  absl::StatusOr<ValueType> ParsePrimary() {
    using Op = Program::Op;
    const Token& t = Next();
    absl::Status s;
    switch (t.kind) {
      case TokenKind::kNumber:
        program_->numbers_.push_back(t.number);
        s = Emit(Op::kPushNumber, static_cast<uint32_t>(program_->numbers_.size() - 1), t.offset);
        if (!s.ok()) return s;
        return ValueType::kNumber;
      case TokenKind::kString:
        program_->strings_.push_back(t.text);
        s = Emit(Op::kPushString, static_cast<uint32_t>(program_->strings_.size() - 1), t.offset);
        if (!s.ok()) return s;
        return ValueType::kString;
      case TokenKind::kTrue:
      case TokenKind::kFalse:
        s = Emit(Op::kPushBool, t.kind == TokenKind::kTrue ? 1 : 0, t.offset);
        if (!s.ok()) return s;
        return ValueType::kBool;
      case TokenKind::kName: return ParseName(t);
      case TokenKind::kLParen: {
        s = Enter(t);
        if (!s.ok()) return s;
        absl::StatusOr<ValueType> inner = ParseOr();
        if (!inner.ok()) return inner;
        --nesting_;
        if (Peek().kind != TokenKind::kRParen) {
          return Fail(Peek(),
                      StrCat("expected ')' to close '(', got ", internal::DescribeToken(Peek())));
        }
        Next();
        return inner;
      }
      case TokenKind::kEnd: return Fail(t, "unexpected end of the condition: expected a value");
      default: return Fail(t, StrCat("expected a value, got ", internal::DescribeToken(t)));
    }
  }

  absl::StatusOr<ValueType> ParseName(const Token& t) {
    using Op = Program::Op;
    absl::Status s;
    if (std::optional<Field> field = FieldByName(t.text)) {
      if (FieldType(*field) == ValueType::kString) {
        s = Emit(Op::kLoadString, static_cast<uint32_t>(StringSlot(*field)), t.offset);
      } else {
        s = Emit(Op::kLoadNumber, static_cast<uint32_t>(NumberSlot(*field)), t.offset);
      }
      if (!s.ok()) return s;
      return FieldType(*field);
    }
    if (std::optional<Flag> flag = FlagByName(t.text)) {
      s = Emit(Op::kLoadFlag, static_cast<uint32_t>(*flag), t.offset);
      if (!s.ok()) return s;
      return ValueType::kBool;
    }
    for (size_t i = 0; i < counters_.size(); ++i) {
      if (counters_[i] == t.text) {
        s = Emit(Op::kLoadCounter, static_cast<uint32_t>(i), t.offset);
        if (!s.ok()) return s;
        return ValueType::kNumber;
      }
    }
    return Fail(t, StrCat("unknown name '", t.text,
                          "': not a request field, a counter of this file or a flag"));
  }

  std::vector<Token> tokens_;
  std::span<const std::string> counters_;
  Program* program_;
  size_t pos_ = 0;
  int nesting_ = 0;
  int numbers_ = 0;
  int bools_ = 0;
  int strings_ = 0;
  size_t error_offset_ = 0;
};

absl::StatusOr<Program> Program::Compile(std::string_view text,
                                         std::span<const std::string> counters,
                                         size_t* error_offset) {
  size_t ignored = 0;
  if (error_offset == nullptr) error_offset = &ignored;
  absl::StatusOr<std::vector<Token>> tokens = internal::Lex(text, error_offset);
  if (!tokens.ok()) return tokens.status();
  Program program;
  Compiler compiler(*std::move(tokens), counters, &program);
  absl::Status s = compiler.Run(error_offset);
  if (!s.ok()) return s;
  return program;
}

// The evaluation stacks, left uninitialised (the compiler checked that
// nothing is read before it is written). Strings are kept as plain pointer
// and size so that the array needs no construction.
struct Program::Machine {
  struct Str {
    const char* data;
    size_t size;
    std::string_view view() const { return {data, size}; }
  };
  double numbers[kMaxStackDepth];
  bool bools[kMaxStackDepth];
  Str strings[kMaxStackDepth];
  int n = 0;
  int b = 0;
  int s = 0;
};

void Program::Run(const EvalContext& context, Machine* m) const {
  double* num = m->numbers;
  bool* bit = m->bools;
  Machine::Str* str = m->strings;
  int n = 0, b = 0, s = 0;
  auto push = [&](std::string_view v) { str[s++] = {v.data(), v.size()}; };
  for (const Instr& in : code_) {
    switch (in.op) {
      case Op::kPushNumber: num[n++] = numbers_[in.arg]; break;
      case Op::kPushString: push(strings_[in.arg]); break;
      case Op::kPushBool: bit[b++] = in.arg != 0; break;
      case Op::kLoadString: push(context.strings[in.arg]); break;
      case Op::kLoadNumber: num[n++] = context.numbers[in.arg]; break;
      case Op::kLoadCounter: num[n++] = context.counter(in.arg); break;
      case Op::kLoadFlag: bit[b++] = context.flag(static_cast<Flag>(in.arg)); break;
      case Op::kNeg: num[n - 1] = -num[n - 1]; break;
      case Op::kAdd:
        --n;
        num[n - 1] += num[n];
        break;
      case Op::kSub:
        --n;
        num[n - 1] -= num[n];
        break;
      case Op::kMul:
        --n;
        num[n - 1] *= num[n];
        break;
      case Op::kDiv:
        --n;
        num[n - 1] = num[n] == 0 ? 0.0 : num[n - 1] / num[n];  // x / 0 is 0, by definition
        break;
      case Op::kEqNumber:
        n -= 2;
        bit[b++] = num[n] == num[n + 1];
        break;
      case Op::kNeNumber:
        n -= 2;
        bit[b++] = num[n] != num[n + 1];
        break;
      case Op::kLt:
        n -= 2;
        bit[b++] = num[n] < num[n + 1];
        break;
      case Op::kLe:
        n -= 2;
        bit[b++] = num[n] <= num[n + 1];
        break;
      case Op::kGt:
        n -= 2;
        bit[b++] = num[n] > num[n + 1];
        break;
      case Op::kGe:
        n -= 2;
        bit[b++] = num[n] >= num[n + 1];
        break;
      case Op::kEqString:
        s -= 2;
        bit[b++] = str[s].view() == str[s + 1].view();
        break;
      case Op::kNeString:
        s -= 2;
        bit[b++] = str[s].view() != str[s + 1].view();
        break;
      case Op::kEqBool:
        --b;
        bit[b - 1] = bit[b - 1] == bit[b];
        break;
      case Op::kNeBool:
        --b;
        bit[b - 1] = bit[b - 1] != bit[b];
        break;
      case Op::kNot: bit[b - 1] = !bit[b - 1]; break;
      case Op::kAnd:
        --b;
        bit[b - 1] = bit[b - 1] && bit[b];
        break;
      case Op::kOr:
        --b;
        bit[b - 1] = bit[b - 1] || bit[b];
        break;
      case Op::kInNumbers: {
        const std::vector<double>& set = number_sets_[in.arg];
        --n;
        bit[b++] = std::binary_search(set.begin(), set.end(), num[n]);
        break;
      }
      case Op::kInStrings: {
        const std::vector<std::string>& set = string_sets_[in.arg];
        --s;
        bit[b++] = std::binary_search(set.begin(), set.end(), str[s].view(), std::less<>());
        break;
      }
      case Op::kInBools: bit[b - 1] = (in.arg & (bit[b - 1] ? 2u : 1u)) != 0; break;
    }
  }
  m->n = n;
  m->b = b;
  m->s = s;
}

bool Program::reads_flags_or_counters() const {
  for (const Instr& in : code_) {
    if (in.op == Op::kLoadFlag || in.op == Op::kLoadCounter) return true;
  }
  return false;
}

bool Program::Matches(const EvalContext& context) const {
  Machine m;
  Run(context, &m);
  return m.b == 1 && m.bools[0];
}

Program::Value Program::Evaluate(const EvalContext& context) const {
  Machine m;
  Run(context, &m);
  Value v;
  v.type = type_;
  switch (type_) {
    case ValueType::kBool: v.boolean = m.b > 0 && m.bools[0]; break;
    case ValueType::kNumber: v.number = m.n > 0 ? m.numbers[0] : 0; break;
    case ValueType::kString: v.text = m.s > 0 ? m.strings[0].view() : std::string_view(); break;
  }
  return v;
}

std::string Program::Disassemble() const {
  static constexpr std::string_view kNames[] = {
      "push_number", "push_string", "push_bool",  "load_string", "load_number", "load_counter",
      "load_flag",   "neg",         "add",        "sub",         "mul",         "div",
      "eq_number",   "ne_number",   "lt",         "le",          "gt",          "ge",
      "eq_string",   "ne_string",   "eq_bool",    "ne_bool",     "not",         "and",
      "or",          "in_numbers",  "in_strings", "in_bools"};
  std::string out;
  for (const Instr& in : code_) {
    StrAppend(&out, kNames[static_cast<size_t>(in.op)]);
    switch (in.op) {
      case Op::kPushNumber: StrAppend(&out, " ", numbers_[in.arg]); break;
      case Op::kPushString: StrAppend(&out, " \"", strings_[in.arg], "\""); break;
      case Op::kLoadString: StrAppend(&out, " ", FieldName(static_cast<Field>(in.arg))); break;
      case Op::kLoadNumber:
        StrAppend(&out, " ", FieldName(static_cast<Field>(in.arg + kNumStringFields)));
        break;
      case Op::kLoadFlag: StrAppend(&out, " ", FlagName(static_cast<Flag>(in.arg))); break;
      case Op::kPushBool:
      case Op::kLoadCounter:
      case Op::kInNumbers:
      case Op::kInStrings:
      case Op::kInBools: StrAppend(&out, " ", in.arg); break;
      default: break;
    }
    out += '\n';
  }
  return out;
}

}  // namespace recharge::rules
