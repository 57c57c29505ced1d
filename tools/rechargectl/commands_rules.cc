// rechargectl rules: validate (offline), backtest, reload, stats.
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fraud/rules/rule_set.h"
#include "recharge/v1/recharge.grpc.pb.h"
#include "tools/rechargectl/cli.h"
#include "tools/rechargectl/output.h"

namespace recharge::ctl {
namespace {

using google::protobuf::util::TimeUtil;

// An error of the rule loader, "file:line:col: key.path: what", with its
// position when it has one.
struct RuleError {
  std::string message;
  int line = 0;
  int column = 0;
};

RuleError ParseRuleError(absl::string_view message) {
  RuleError error{std::string(message)};
  static const std::regex kPosition(R"(^.*?:(\d+):(\d+): )");
  std::smatch match;
  if (std::regex_search(error.message, match, kPosition)) {
    error.line = std::stoi(match[1].str());
    error.column = std::stoi(match[2].str());
  }
  return error;
}

// The errors of the rule loader, one per line of its message.
std::vector<RuleError> ParseRuleErrors(absl::string_view message) {
  std::vector<RuleError> errors;
  for (absl::string_view line : absl::StrSplit(message, '\n', absl::SkipEmpty())) {
    errors.push_back(ParseRuleError(line));
  }
  return errors;
}

// Loads the file with the gateway's own rule loader. On errors prints every
// one (stderr, or the JSON document when `json_on_error`) and returns nullptr.
std::shared_ptr<const rules::RuleSet> LoadRules(const std::string& path, bool json_on_error) {
  absl::StatusOr<std::shared_ptr<const rules::RuleSet>> loaded = rules::RuleSet::LoadFile(path);
  if (loaded.ok()) return *loaded;
  const std::vector<RuleError> errors = ParseRuleErrors(loaded.status().message());
  if (json_on_error) {
    nlohmann::json list = nlohmann::json::array();
    for (const RuleError& e : errors) {
      list.push_back({{"message", e.message}, {"line", e.line}, {"column", e.column}});
    }
    PrintJson({{"file", path}, {"valid", false}, {"errors", std::move(list)}});
  }
  for (const RuleError& e : errors) std::cerr << e.message << "\n";
  std::cerr << path << ": invalid rule file (" << errors.size()
            << (errors.size() == 1 ? " error)\n" : " errors)\n");
  return nullptr;
}

int Validate(Context& context, const Args& args) {
  const std::string& path = args.positional[0];
  std::shared_ptr<const rules::RuleSet> rule_set = LoadRules(path, context.options.json);
  if (rule_set == nullptr) return kExitRefused;
  if (context.options.json) {
    PrintJson({{"file", path},
               {"valid", true},
               {"version", rule_set->version()},
               {"counters", rule_set->counters().size()},
               {"rules", rule_set->rules().size()},
               {"errors", nlohmann::json::array()}});
  } else {
    std::cout << path << ": valid (version " << rule_set->version() << ", "
              << rule_set->counters().size() << " counters, " << rule_set->rules().size()
              << " rules)\n";
  }
  return kExitOk;
}

// Fills the period of the backtest from --since or --from/--to.
absl::Status SetPeriod(const Args& args, v1::BacktestRulesRequest& request) {
  if (args.Has("since") && (args.Has("from") || args.Has("to"))) {
    return absl::InvalidArgumentError("--since goes without --from and --to");
  }
  if (args.Has("since")) {
    absl::StatusOr<std::chrono::milliseconds> since = ParseDurationFlag("--since", args.Get("since"));
    if (!since.ok()) return since.status();
    absl::Time from = absl::Now() - absl::FromChrono(*since);
    *request.mutable_from() = TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(from));
  }
  for (const char* flag : {"from", "to"}) {
    if (!args.Has(flag)) continue;
    google::protobuf::Timestamp at;
    if (!TimeUtil::FromString(args.Get(flag), &at)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": not an RFC 3339 time: '", args.Get(flag), "' (e.g. 2026-12-01T00:00:00Z)"));
    }
    *(absl::string_view(flag) == "from" ? request.mutable_from() : request.mutable_to()) = at;
  }
  return absl::OkStatus();
}

void PrintChanges(const google::protobuf::RepeatedPtrField<v1::DecisionChange>& changes,
                  bool with_examples, int indent) {
  if (changes.empty()) {
    std::cout << std::string(indent, ' ') << "(no changed decisions)\n";
    return;
  }
  if (!with_examples) {
    Table table({"CHANGE", "COUNT"});
    for (const v1::DecisionChange& change : changes) {
      table.AddRow({ChangeName(change.from(), change.to()), absl::StrCat(change.count())});
    }
    table.Print(std::cout, indent);
    return;
  }
  for (const v1::DecisionChange& change : changes) {
    std::cout << std::string(indent, ' ') << ChangeName(change.from(), change.to()) << ": "
              << change.count() << "\n";
    if (change.examples().empty()) continue;
    Table table({"RECHARGE", "DECIDED AT", "OLD\u2192NEW", "RULES HIT", "COUNTERS"});
    for (const v1::BacktestExample& example : change.examples()) {
      std::string rules_hit;
      for (const std::string& rule : example.rules_hit()) {
        absl::StrAppend(&rules_hit, rules_hit.empty() ? "" : ",", rule);
      }
      table.AddRow({example.recharge_id(), FormatTime(example.decided_at()),
                    ChangeName(example.old_decision(), example.new_decision()),
                    rules_hit.empty() ? "-" : rules_hit, example.counters_json()});
    }
    table.Print(std::cout, indent + 2);
  }
}

int Backtest(Context& context, const Args& args) {
  const std::string& path = args.positional[0];
  v1::BacktestRulesRequest request;
  if (absl::Status s = SetPeriod(args, request); !s.ok()) return UsageError(s.message());
  if (args.Has("examples")) {
    absl::StatusOr<int> examples = ParsePositiveIntFlag("--examples", args.Get("examples"));
    if (!examples.ok()) return UsageError(examples.status().message());
    request.set_examples_per_change(*examples);
  }
  // Checked offline first: a broken file never reaches the gateway.
  if (LoadRules(path, context.options.json) == nullptr) return kExitRefused;
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  request.set_rules_yaml(text.str());
  request.set_file_name(path);

  v1::BacktestRulesResponse response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.BacktestRules(client_context, request, &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
    return kExitOk;
  }
  int64_t not_comparable = 0;
  for (const v1::NotComparable& n : response.not_comparable()) not_comparable += n.count();
  PrintFields(std::cout, {{"candidate version", response.candidate_version()},
                          {"live version", response.live_version()},
                          {"replayed", absl::StrCat(response.replayed())},
                          {"comparable", absl::StrCat(response.comparable())},
                          {"not comparable", absl::StrCat(not_comparable)},
                          {"changed", absl::StrCat(response.changed())}});
  if (!response.not_comparable().empty()) {
    std::cout << "\nNot comparable:\n";
    Table table({"REASON", "COUNT"});
    for (const v1::NotComparable& n : response.not_comparable()) {
      table.AddRow({n.reason(), absl::StrCat(n.count())});
    }
    table.Print(std::cout, 2);
  }
  std::cout << "\nChanges:\n";
  PrintChanges(response.changes(), /*with_examples=*/false, 2);
  std::cout << "\nBy rule:\n";
  for (const v1::RuleBacktest& rule : response.rules()) {
    std::cout << "  " << rule.rule_id() << ": " << rule.hits() << " hits\n";
    if (!rule.changes().empty()) PrintChanges(rule.changes(), /*with_examples=*/true, 4);
  }
  return kExitOk;
}

int Reload(Context& context, const Args&) {
  v1::ReloadRulesResponse response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.ReloadRules(client_context, v1::ReloadRulesRequest(), &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) PrintJson(ProtoJson(response));
  else std::cout << "rules reloaded: version " << response.rules_version() << "\n";
  return kExitOk;
}

int Stats(Context& context, const Args&) {
  v1::GetRuleStatsResponse response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.GetRuleStats(client_context, v1::GetRuleStatsRequest(), &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
    return kExitOk;
  }
  PrintFields(std::cout, {{"rules version", response.rules_version()},
                          {"degraded decisions", absl::StrCat(response.degraded_decisions())},
                          {"demoted rules", absl::StrCat(response.demoted_rules())}});
  std::cout << "\n";
  Table table({"RULE", "EVALUATED", "HITS", "SHADOW"});
  for (const v1::RuleStats& rule : response.rules()) {
    table.AddRow({rule.rule_id(), absl::StrCat(rule.evaluated()), absl::StrCat(rule.hits()),
                  YesNo(rule.shadow())});
  }
  table.Print(std::cout);
  return kExitOk;
}

}  // namespace

Group RulesCommands() {
  return {
      "rules",
      "the fraud rule file: check it, test it on past traffic, reload it, see its statistics",
      {
          {"validate", "FILE", "Check a rule file offline with the gateway's own loader.",
           "Prints every error as file:line:column: key.path: what, and exits 1 when the\n"
           "file is invalid. Does not contact the gateway.",
           {}, 1, 1, Validate},
          {"backtest", "FILE [--since DURATION | --from TS --to TS] [--examples N]",
           "Replay past decisions through a candidate rule file (FraudAdmin.BacktestRules).",
           "The file is validated offline first (exit 1 naming line:column, without\n"
           "contacting the gateway). Prints decisions replayed, comparable, not comparable\n"
           "and why, changed; the changes overall (from\u2192to: count) and per rule, with\n"
           "examples (recharge id, time, old\u2192new, counters). The period defaults to\n"
           "every decision kept. A long period may need a larger --timeout.",
           {{"since", true, "replay the decisions of this long ago until now (e.g. 24h, 7d)", "DURATION"},
            {"from", true, "start of the period, RFC 3339 (e.g. 2026-12-01T00:00:00Z)", "TS"},
            {"to", true, "end of the period, RFC 3339 (default: now)", "TS"},
            {"examples", true, "examples per rule and change (gateway default 3, at most 50)", "N"}},
           1, 1, Backtest},
          {"reload", "", "Reload the gateway's rule file (FraudAdmin.ReloadRules).", "", {}, 0, 0,
           Reload},
          {"stats", "", "Per-rule evaluations and hits (FraudAdmin.GetRuleStats).", "", {}, 0, 0,
           Stats},
      }};
}

}  // namespace recharge::ctl
