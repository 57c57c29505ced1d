// libFuzzer target: arbitrary bytes as a fraud rule file (README.md).
//
// Loading must never crash, hang or read out of bounds; a refused file must
// be refused with errors (one per line of the message) that each name the
// file and a line inside it; a
// loaded file's rules are evaluated over contexts made from the same bytes,
// and the result must be consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fraud/rules/rule_set.h"

namespace {

using recharge::rules::Action;
using recharge::rules::EvalContext;
using recharge::rules::EvalResult;
using recharge::rules::kNumNumberFields;
using recharge::rules::kNumStringFields;
using recharge::rules::RuleMask;
using recharge::rules::RuleSet;

constexpr std::string_view kName = "fuzz.yaml";

void Check(bool ok) {
  if (!ok) std::abort();
}

// "fuzz.yaml:12:3: ..." names a line of the text (or the line after it).
void CheckError(std::string_view message, std::string_view text) {
  Check(message.substr(0, kName.size()) == kName);
  message.remove_prefix(kName.size());
  if (message.empty() || message[0] != ':') return;
  message.remove_prefix(1);
  long line = 0;
  size_t i = 0;
  while (i < message.size() && message[i] >= '0' && message[i] <= '9' && line < 1'000'000'000) {
    line = line * 10 + (message[i++] - '0');
  }
  if (i == 0) return;  // "fuzz.yaml: message"
  long lines = 1;
  for (char c : text) lines += c == '\n' || c == '\r';
  Check(line >= 1 && line <= lines + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto set = RuleSet::Parse(text, std::string(kName));
  if (!set.ok()) {
    const auto message = set.status().message();  // absl::string_view on Debian
    std::string_view rest(message.data(), message.size());
    Check(!rest.empty());
    while (!rest.empty()) {  // every error, one per line
      const size_t end = rest.find('\n');
      Check(end != 0);
      CheckError(rest.substr(0, end), text);
      if (end == std::string_view::npos) break;
      rest.remove_prefix(end + 1);
      Check(!rest.empty());
    }
    return 0;
  }
  const RuleSet& rules = **set;
  std::vector<double> counters(rules.counters().size());
  const double kValues[] = {0, 1, 3, 4, 25, 26, -1, 0.5, 1e308};
  EvalContext context;
  for (size_t round = 0; round < 4; ++round) {
    for (size_t i = 0; i < counters.size(); ++i) {
      counters[i] = kValues[(i + round + (size ? data[i % size] : 0)) % std::size(kValues)];
    }
    for (size_t i = 0; i < kNumStringFields; ++i) {
      const size_t start = size ? (i * 7 + round) % size : 0;
      context.strings[i] = std::string_view(text).substr(start, round * 3);
    }
    for (size_t i = 0; i < kNumNumberFields; ++i) context.numbers[i] = kValues[(i + round) % 9];
    context.counters = counters;
    context.seller_flagged = round & 1;
    context.card_blocked = round & 2;
    context.device_blocked = round == 3;
    RuleMask demoted;
    if (round == 2) demoted.set();
    EvalResult result;
    rules.Evaluate(context, &result, &demoted);
    Check(result.enforced.size() + result.shadow.size() <= rules.rules().size());
    Check(result.decision.action != Action::kFlagSeller);
    if (round == 2) Check(result.enforced.empty() && result.decision.rule == -1);
    for (uint16_t i : result.enforced) Check(rules.rules()[i].Matches(context));
  }
  return 0;
}
