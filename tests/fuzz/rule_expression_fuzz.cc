// libFuzzer target: arbitrary bytes as a bare `when:` condition (README.md).
//
// Compiling must never crash; an error's offset must lie inside the text;
// a compiled program must evaluate without fault, and Matches must agree
// with Evaluate.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "fraud/rules/expression.h"

namespace {

using recharge::rules::EvalContext;
using recharge::rules::kNumNumberFields;
using recharge::rules::kNumStringFields;
using recharge::rules::Program;
using recharge::rules::ValueType;

void Check(bool ok) {
  if (!ok) std::abort();
}

const std::vector<std::string> kCounters = {"c0", "c1", "seller_users_1h"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  size_t offset = 0;
  auto program = Program::Compile(text, kCounters, &offset);
  if (!program.ok()) {
    Check(offset <= size);
    Check(!program.status().message().empty());
    return 0;
  }
  const double kValues[] = {0,
                            -0.0,
                            1,
                            26,
                            -3.5,
                            std::numeric_limits<double>::infinity(),
                            std::numeric_limits<double>::quiet_NaN()};
  double counters[3];
  EvalContext context;
  for (size_t round = 0; round < std::size(kValues); ++round) {
    for (size_t i = 0; i < 3; ++i) counters[i] = kValues[(round + i) % std::size(kValues)];
    context.counters = counters;
    for (size_t i = 0; i < kNumStringFields; ++i) {
      context.strings[i] = round % 2 ? text.substr(0, i) : std::string_view("US");
    }
    for (size_t i = 0; i < kNumNumberFields; ++i) {
      context.numbers[i] = kValues[(round + 3 + i) % std::size(kValues)];
    }
    context.seller_flagged = round & 1;
    context.card_blocked = round & 2;
    context.device_blocked = round & 4;
    const Program::Value value = program->Evaluate(context);
    Check(value.type == program->type());
    if (program->type() == ValueType::kBool) Check(program->Matches(context) == value.boolean);
  }
  return 0;
}
