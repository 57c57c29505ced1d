#include "fraud/rules/rule_set.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/status/status.h"
#include "fraud/rules/yaml_position.h"
#include "io/config_node.h"
#include "io/strings.h"

namespace recharge::rules {
namespace {

// `message` on one line: a control character in it (yaml-cpp quotes the
// character it stopped at, a newline or a NUL included) is written as \n or
// \xHH, so that a refused file's message holds exactly one error per line.
std::string OneLine(absl::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

absl::Status OneLine(const absl::Status& s) {
  return absl::Status(s.code(), OneLine(s.message()));
}

bool IsLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsIdentifier(std::string_view s) {
  if (s.empty() || !(IsLetter(s[0]) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(IsLetter(c) || IsDigit(c) || c == '_')) return false;
  }
  return true;
}

bool IsKeyword(std::string_view s) {
  return s == "and" || s == "or" || s == "not" || s == "in" || s == "true" || s == "false";
}

bool IsRuleId(std::string_view s) {
  if (s.empty() || !(IsLetter(s[0]) || IsDigit(s[0]))) return false;
  for (char c : s) {
    if (!(IsLetter(c) || IsDigit(c) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

// A share of traffic: a decimal number in (0, 1].
absl::StatusOr<double> GetShare(const ConfigNode& parent, std::string_view key, double def) {
  if (!parent.Has(key)) return def;
  const ConfigNode node = parent.Child(key);
  absl::StatusOr<std::string> text = node.AsString();
  if (!text.ok()) return text.status();
  double v = 0;
  auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || ptr != text->data() + text->size() || !(v > 0 && v <= 1)) {
    return node.Error(
        StrCat("must be a share of traffic greater than 0 and at most 1 "
               "(0.2 = 20%), got \"",
               *text, "\""));
  }
  return v;
}

// A field named by `key` of `parent`, of type `type`.
absl::StatusOr<Field> GetField(const ConfigNode& parent, std::string_view key, ValueType type,
                               std::string_view what) {
  absl::StatusOr<std::string> name = parent.GetString(key);
  if (!name.ok()) return name.status();
  std::optional<Field> field = FieldByName(*name);
  if (!field) {
    return parent.Child(key).Error(StrCat("unknown request field '", *name, "'"));
  }
  if (FieldType(*field) != type) {
    return parent.Child(key).Error(
        StrCat(what, ", and '", *name, "' is a ", ValueTypeName(FieldType(*field))));
  }
  return *field;
}

}  // namespace

std::string_view FailModeName(FailMode mode) { return mode == FailMode::kOpen ? "open" : "closed"; }

std::string_view CounterKindName(CounterKind kind) {
  switch (kind) {
    case CounterKind::kCount: return "count";
    case CounterKind::kSum: return "sum";
    case CounterKind::kDistinct: return "distinct";
  }
  return "?";
}

std::string_view CompareOpName(CompareOp op) {
  switch (op) {
    case CompareOp::kGt: return ">";
    case CompareOp::kGe: return ">=";
    case CompareOp::kLt: return "<";
    case CompareOp::kLe: return "<=";
    case CompareOp::kEq: return "==";
    case CompareOp::kNe: return "!=";
  }
  return "?";
}

bool Compare(double left, CompareOp op, double right) {
  switch (op) {
    case CompareOp::kGt: return left > right;
    case CompareOp::kGe: return left >= right;
    case CompareOp::kLt: return left < right;
    case CompareOp::kLe: return left <= right;
    case CompareOp::kEq: return left == right;
    case CompareOp::kNe: return left != right;
  }
  return false;
}

std::string_view CounterEventName(CounterEvent event) {
  switch (event) {
    case CounterEvent::kRequest: return "request";
    case CounterEvent::kDecline: return "decline";
    case CounterEvent::kChargeback: return "chargeback";
  }
  return "?";
}

std::string_view ActionName(Action action) {
  switch (action) {
    case Action::kAllow: return "allow";
    case Action::kReview: return "review";
    case Action::kBlock: return "block";
    case Action::kFlagSeller: return "flag_seller";
  }
  return "?";
}

// Builds a RuleSet from the parsed file; one instance per load. It goes on
// past an error wherever what follows does not depend on what failed, so
// that one pass reports every mistake in the file: each header field, each
// counter and each rule, field by field. A counter that failed still lends
// its name to the conditions after it (no second error for one mistake); a
// rule whose action is unknown skips the checks that depend on the action.
class RuleSetLoader {
 public:
  RuleSetLoader(const std::string& text, const std::string& name, YAML::Node raw)
      : text_(text), raw_(std::move(raw)), set_(new RuleSet) {
    set_->name_ = name;
  }

  absl::StatusOr<std::shared_ptr<const RuleSet>> Load(const ConfigNode& root) {
    Keep(root.CheckKeys({"version", "fail_mode", "blast_radius", "links", "counters", "rules"}));
    LoadHeader(root);
    if (root.Has("links")) LoadLinks(root.Child("links"));
    if (root.Has("counters")) LoadCounters(root.Child("counters"));
    if (root.Has("rules")) LoadRules(root.Child("rules"));
    if (!errors_.empty()) {
      // One error per line (a newline inside one, in a quoted value, is escaped).
      std::string message;
      for (const absl::Status& e : errors_) {
        if (!message.empty()) message += '\n';
        message += OneLine(e.message());
      }
      return absl::InvalidArgumentError(message);
    }
    return std::shared_ptr<const RuleSet>(std::move(set_));
  }

 private:
  // Keeps `s` when it is an error; true when it is not.
  bool Keep(const absl::Status& s) {
    if (!s.ok()) errors_.push_back(s);
    return s.ok();
  }
  // The value of `v`, or nullopt with its error kept.
  template <typename T>
  std::optional<T> Take(absl::StatusOr<T> v) {
    if (!Keep(v.status())) return std::nullopt;
    return *std::move(v);
  }

  void LoadHeader(const ConfigNode& root) {
    if (std::optional<std::string> version = Take(root.GetString("version"))) {
      if (version->empty()) {
        Keep(root.Child("version").Error("must not be empty"));
      } else {
        set_->version_ = *version;
      }
    }

    if (std::optional<std::string> fail_mode = Take(root.GetString("fail_mode", "open"))) {
      if (*fail_mode == "open") {
        set_->fail_mode_ = FailMode::kOpen;
      } else if (*fail_mode == "closed") {
        set_->fail_mode_ = FailMode::kClosed;
      } else {
        Keep(root.Child("fail_mode")
                 .Error(StrCat("must be open or closed, got \"", *fail_mode, "\"")));
      }
    }

    if (!root.Has("blast_radius")) return;
    const ConfigNode guard = root.Child("blast_radius");
    Keep(guard.CheckKeys({"max_block_share", "window", "min_requests"}));
    BlastRadius& b = set_->blast_radius_;
    if (std::optional<double> share = Take(GetShare(guard, "max_block_share", b.max_block_share))) {
      b.max_block_share = *share;
    }
    if (std::optional<std::chrono::milliseconds> window =
            Take(guard.GetDuration("window", b.window))) {
      if (window->count() <= 0) {
        Keep(guard.Child("window").Error("must be longer than 0"));
      } else {
        b.window = *window;
      }
    }
    if (std::optional<int64_t> min_requests =
            Take(guard.GetInt("min_requests", b.min_requests, 1, 1'000'000'000))) {
      b.min_requests = *min_requests;
    }
  }

  void LoadLinks(const ConfigNode& links) {
    Keep(links.CheckKeys({"by", "window"}));
    if (!links.Has("by")) {
      Keep(links.Error("by: is required (e.g. [card_fingerprint, device_id])"));
    } else if (std::optional<std::vector<std::string>> by =
                   Take(links.Child("by").AsStringList())) {
      if (by->empty()) Keep(links.Child("by").Error("must name at least one field"));
      for (const std::string& name : *by) {
        std::optional<Field> f = FieldByName(name);
        if (!f || (*f != Field::kCardFingerprint && *f != Field::kDeviceId && *f != Field::kIp &&
                   *f != Field::kInstrumentFingerprint)) {
          Keep(links.Child("by").Error(
              StrCat("'", name,
                     "' cannot link sellers: use card_fingerprint, device_id, ip or "
                     "instrument_fingerprint")));
          continue;
        }
        if (std::find(set_->links_.by.begin(), set_->links_.by.end(), *f) !=
            set_->links_.by.end()) {
          Keep(links.Child("by").Error(StrCat("'", name, "' is listed twice")));
          continue;
        }
        set_->links_.by.push_back(*f);
      }
    }
    if (std::optional<std::chrono::milliseconds> window =
            Take(links.GetDuration("window", set_->links_.window))) {
      if (window->count() <= 0) {
        Keep(links.Child("window").Error("must be longer than 0"));
      } else {
        set_->links_.window = *window;
      }
    }
  }

  void LoadCounters(const ConfigNode& counters) {
    if (!counters.IsMap()) {
      Keep(counters.Error("must be a mapping of counter names to counters"));
      return;
    }
    for (const auto& [name, node] : counters.Entries()) {
      if (!IsIdentifier(name)) {
        Keep(node.Error(StrCat("counter name '", name,
                               "' must be letters, digits and '_', "
                               "starting with a letter or '_'")));
        continue;
      }
      if (IsKeyword(name)) {
        Keep(node.Error(StrCat("counter name '", name, "' is a keyword")));
        continue;
      }
      if (FieldByName(name) || FlagByName(name)) {
        Keep(node.Error(StrCat("counter name '", name, "' is already the name of a ",
                               FieldByName(name) ? "request field" : "flag",
                               " (counters, fields and flags share one namespace)")));
        continue;
      }
      if (set_->counter_index(name)) {
        Keep(node.Error(StrCat("counter '", name, "' is defined twice")));
        continue;
      }
      if (set_->counters_.size() == kMaxCounters) {
        Keep(node.Error(StrCat("too many counters (at most ", kMaxCounters, ")")));
        return;
      }
      CounterSpec spec;
      spec.name = name;
      LoadCounter(node, &spec);
      set_->counters_.push_back(std::move(spec));
      set_->counter_names_.push_back(name);
    }
  }

  // Fills `spec` (its name set) from `node`, keeping every error found.
  void LoadCounter(const ConfigNode& node, CounterSpec* spec) {
    Keep(node.CheckKeys(
        {"count", "sum", "distinct", "per", "window", "buckets", "on", "when", "only_if"}));
    const int kinds = node.Has("count") + node.Has("sum") + node.Has("distinct");
    if (kinds != 1) {
      Keep(node.Error(
          "needs exactly one of count: true, sum: <number field>, "
          "distinct: <string field>"));
    } else if (node.Has("count")) {
      if (std::optional<bool> count = Take(node.GetBool("count")); count && !*count) {
        Keep(node.Child("count").Error("must be true (count: true counts events)"));
      }
      spec->kind = CounterKind::kCount;
    } else if (node.Has("sum")) {
      spec->kind = CounterKind::kSum;
      if (std::optional<Field> field =
              Take(GetField(node, "sum", ValueType::kNumber, "sum adds up a number field"))) {
        spec->value_field = *field;
      }
    } else {
      spec->kind = CounterKind::kDistinct;
      if (std::optional<Field> field = Take(GetField(node, "distinct", ValueType::kString,
                                                     "distinct counts values of a string field"))) {
        spec->value_field = *field;
      }
    }
    if (std::optional<Field> per = Take(GetField(node, "per", ValueType::kString,
                                                 "per names the entity, a string field"))) {
      spec->per = *per;
    }

    std::optional<std::chrono::milliseconds> window = Take(node.GetDuration("window"));
    if (window && window->count() <= 0) {
      Keep(node.Child("window").Error("must be longer than 0"));
      window.reset();
    }
    if (window) spec->window = *window;
    if (std::optional<int64_t> buckets = Take(node.GetInt("buckets", 12, 1, 1000))) {
      spec->buckets = static_cast<int>(*buckets);
      if (window && spec->window.count() % (spec->buckets * int64_t{1000}) != 0) {
        Keep(node.Child(node.Has("buckets") ? "buckets" : "window")
                 .Error(StrCat("the window does not split into ", spec->buckets,
                               " buckets of a whole number of seconds")));
      }
    }

    bool on_known = false;
    if (std::optional<std::string> on = Take(node.GetString("on", "request"))) {
      on_known = true;
      if (*on == "request") {
        spec->on = CounterEvent::kRequest;
      } else if (*on == "decline") {
        spec->on = CounterEvent::kDecline;
      } else if (*on == "chargeback") {
        spec->on = CounterEvent::kChargeback;
      } else {
        on_known = false;
        Keep(node.Child("on").Error(
            StrCat("must be request, decline or chargeback, got \"", *on, "\"")));
      }
    }
    if (node.Has("when")) {
      const YAML::Node& raw = raw_;  // const: operator[] must not add nodes
      const YAML::Node scalar = raw["counters"][spec->name]["when"];
      if (std::optional<Program> when =
              Take(CompileCondition(node.Child("when"), scalar, {}, &spec->when_text))) {
        if (when->reads_flags_or_counters()) {
          Keep(node.Child("when").Error(
              "a counter's condition may read request fields only (no counters or flags)"));
        } else {
          spec->when = *std::move(when);
        }
      }
    }
    // A gate's check depends on `on:`; an unknown `on:` is reported once.
    if (node.Has("only_if") && on_known) {
      if (std::optional<CounterGate> gate = Take(LoadGate(node.Child("only_if"), *spec))) {
        spec->only_if = *std::move(gate);
      }
    }
  }

  // `only_if: <counter> <op> <number>`.
  absl::StatusOr<CounterGate> LoadGate(const ConfigNode& node, const CounterSpec& spec) {
    absl::StatusOr<std::string> text = node.AsString();
    if (!text.ok()) return text.status();
    const std::string usage =
        "must be <counter> <op> <number>, e.g. card_users_24h > 1, with a counter declared above";
    if (spec.on != CounterEvent::kRequest) {
      return node.Error("applies only to counters updated on request");
    }
    static constexpr std::pair<std::string_view, CompareOp> kOps[] = {
        {">=", CompareOp::kGe}, {"<=", CompareOp::kLe}, {"==", CompareOp::kEq},
        {"!=", CompareOp::kNe}, {">", CompareOp::kGt},  {"<", CompareOp::kLt}};
    CounterGate gate;
    gate.text = *text;
    size_t at = std::string::npos, len = 0;
    for (const auto& [sym, op] : kOps) {
      const size_t p = text->find(sym);
      if (p != std::string::npos) {
        at = p;
        len = sym.size();
        gate.op = op;
        break;
      }
    }
    if (at == std::string::npos) return node.Error(usage);
    auto trim = [](std::string_view v) {
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      return v;
    };
    const std::string_view name = trim(std::string_view(*text).substr(0, at));
    const std::string number(trim(std::string_view(*text).substr(at + len)));
    std::optional<size_t> index = set_->counter_index(name);
    if (!index) {
      return node.Error(StrCat("'", name, "' is not a counter declared above; ", usage));
    }
    if (set_->counters_[*index].on != CounterEvent::kRequest) {
      return node.Error(StrCat("'", name, "' is not updated on request, so it is not known yet"));
    }
    char* end = nullptr;
    const double value = std::strtod(number.c_str(), &end);
    if (number.empty() || end != number.c_str() + number.size() || !std::isfinite(value)) {
      return node.Error(StrCat("'", number, "' is not a number; ", usage));
    }
    gate.counter = *index;
    gate.value = value;
    return gate;
  }

  void LoadRules(const ConfigNode& rules) {
    if (!rules.IsSequence()) {
      Keep(rules.Error("must be a list of rules"));
      return;
    }
    const std::vector<ConfigNode> items = rules.Items();
    if (items.size() > kMaxRules) {
      Keep(items[kMaxRules].Error(StrCat("too many rules (at most ", kMaxRules, ")")));
    }
    for (size_t i = 0; i < items.size() && i < kMaxRules; ++i) LoadRule(i, items[i]);
  }

  // Loads one rule, keeping every error found; the rule joins the set only
  // when it has none. Its id is taken either way, so that a later duplicate
  // is named against the file's rules, failed or not.
  void LoadRule(size_t index, const ConfigNode& node) {
    const size_t errors_before = errors_.size();
    Keep(node.CheckKeys({"id", "when", "action", "flag_ttl", "flag_linked", "reason", "mode",
                         "max_block_share"}));
    Rule rule;

    if (std::optional<std::string> id = Take(node.GetString("id"))) {
      if (!IsRuleId(*id)) {
        Keep(node.Child("id").Error(StrCat("rule id '", *id,
                                           "' must be letters, digits, "
                                           "'-', '_' and '.', starting with a letter or digit")));
      }
      if (auto [seen, added] = rule_ids_.try_emplace(*id, index); !added) {
        Keep(node.Child("id").Error(
            StrCat("duplicate rule id '", *id, "' (also rules[", seen->second, "])")));
      }
      rule.id_ = *id;
    }

    bool action_known = false;
    if (std::optional<std::string> action = Take(node.GetString("action"))) {
      action_known = true;
      if (*action == "allow") {
        rule.action_ = Action::kAllow;
      } else if (*action == "review") {
        rule.action_ = Action::kReview;
      } else if (*action == "block") {
        rule.action_ = Action::kBlock;
      } else if (*action == "flag_seller") {
        rule.action_ = Action::kFlagSeller;
      } else {
        action_known = false;
        Keep(node.Child("action").Error(
            StrCat("must be allow, review, block or flag_seller, got \"", *action, "\"")));
      }
    }

    // flag_ttl and flag_linked depend on the action: not judged without one.
    if (action_known && rule.action_ == Action::kFlagSeller) {
      if (std::optional<std::chrono::milliseconds> ttl = Take(node.GetDuration("flag_ttl"))) {
        if (ttl->count() <= 0) {
          Keep(node.Child("flag_ttl").Error("must be longer than 0"));
        } else {
          rule.flag_ttl_ = *ttl;
        }
      }
    } else if (action_known && node.Has("flag_ttl")) {
      Keep(node.Child("flag_ttl").Error("applies only to action flag_seller"));
    }
    if (node.Has("flag_linked")) {
      if (std::optional<bool> linked = Take(node.GetBool("flag_linked"))) {
        if (*linked && action_known && rule.action_ != Action::kFlagSeller) {
          Keep(node.Child("flag_linked").Error("applies only to action flag_seller"));
        } else if (*linked && !set_->links_.enabled()) {
          Keep(node.Child("flag_linked")
                   .Error("needs a links: section (which instruments link sellers)"));
        }
        rule.flag_linked_ = *linked;
      }
    }

    if (std::optional<std::string> reason = Take(node.GetString("reason", ""))) {
      rule.reason_ = reason->empty() ? rule.id_ : *reason;
    }

    if (std::optional<std::string> mode = Take(node.GetString("mode", "enforce"))) {
      if (*mode != "enforce" && *mode != "shadow") {
        Keep(node.Child("mode").Error(StrCat("must be enforce or shadow, got \"", *mode, "\"")));
      }
      rule.shadow_ = *mode == "shadow";
    }

    if (std::optional<double> share =
            Take(GetShare(node, "max_block_share", set_->blast_radius_.max_block_share))) {
      rule.max_block_share_ = *share;
    }

    Keep(CompileWhen(index, node, &rule));
    if (errors_.size() == errors_before) set_->rules_.push_back(std::move(rule));
  }

  // Compiles the rule's `when:`; an error points at the offending token in
  // the file.
  absl::Status CompileWhen(size_t index, const ConfigNode& node, Rule* rule) {
    const YAML::Node& raw = raw_;
    absl::StatusOr<Program> program = CompileCondition(
        node.Child("when"), raw["rules"][index]["when"], set_->counter_names_, &rule->when_);
    if (!program.ok()) return program.status();
    rule->program_ = *std::move(program);
    return absl::OkStatus();
  }

  // Compiles a condition (`when`) over the request fields, the flags and
  // `counters`; `scalar` is its raw YAML node, so that an error points at
  // the offending token in the file. `*text` gets the condition as written.
  absl::StatusOr<Program> CompileCondition(const ConfigNode& when, const YAML::Node& scalar,
                                           std::span<const std::string> counters,
                                           std::string* text) {
    // Checks presence and kind, with ConfigNode's message.
    absl::StatusOr<std::string> checked = when.AsString();
    if (!checked.ok()) return checked.status();
    // The condition is taken as written: no ${ENV} expansion, so that offsets
    // in it are offsets in the file.
    if (!scalar.IsDefined() || !scalar.IsScalar()) return when.Error("must be a condition");
    if (const std::string& tag = scalar.Tag(); tag.size() > 1 && tag[0] == '!') {
      // `when: !seller_flagged` is a YAML tag followed by an empty value.
      return when.Error(StrCat("YAML reads '", tag,
                               "' as a tag, not as part of the condition: "
                               "write 'not' instead of '!', or quote the condition"));
    }
    *text = scalar.Scalar();

    size_t offset = 0;
    absl::StatusOr<Program> program = Program::Compile(*text, counters, &offset);
    if (program.ok() && program->type() != ValueType::kBool) {
      offset = text->find_first_not_of(" \t\r\n");
      if (offset == std::string::npos) offset = 0;
      program = absl::InvalidArgumentError(StrCat(
          "a condition must be true or false, and this one is a ", ValueTypeName(program->type())));
    }
    if (!program.ok()) {
      const YAML::Mark mark = scalar.Mark();
      const internal::SourcePosition at =
          internal::MapScalarOffset(text_, mark.pos, mark.line, mark.column, *text, offset);
      return absl::InvalidArgumentError(StrCat(set_->name_, ":", at.line, ":", at.column, ": ",
                                               when.path(), ": ", program.status().message()));
    }
    return program;
  }

  const std::string& text_;
  YAML::Node raw_;
  std::unique_ptr<RuleSet> set_;
  std::vector<absl::Status> errors_;  // in the order found: header, links, counters, rules
  std::map<std::string, size_t, std::less<>> rule_ids_;  // id -> index in the file's rules
};

absl::StatusOr<std::shared_ptr<const RuleSet>> RuleSet::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(StrCat(path, ": cannot open the file"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(StrCat(path, ": cannot read the file"));
  return Parse(text.str(), path);
}

absl::StatusOr<std::shared_ptr<const RuleSet>> RuleSet::Parse(const std::string& text,
                                                              const std::string& name) {
  absl::StatusOr<ConfigNode> root = ConfigNode::LoadString(text, name);
  if (!root.ok()) return OneLine(root.status());
  // A second, raw view of the same text: ConfigNode does not expose the
  // marks (byte positions) that conditions' error positions are computed from.
  YAML::Node raw;
  try {
    raw = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(OneLine(StrCat(name, ": ", e.msg)));
  }
  RuleSetLoader loader(text, name, std::move(raw));
  // ConfigNode converts every map key to a string, and yaml-cpp throws
  // BadConversion on a key that is a list or a mapping ("? [a]: 1").
  try {
    return loader.Load(*root);
  } catch (const YAML::BadConversion& e) {
    return absl::InvalidArgumentError(StrCat(name, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                             ": a key must be a name, not a list or a mapping"));
  } catch (const YAML::Exception& e) {
    // Any other yaml-cpp exception. A bad file must be an error, never a
    // crash: a reload keeps the old rules.
    return absl::InvalidArgumentError(
        OneLine(StrCat(name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg)));
  }
}

std::optional<size_t> RuleSet::counter_index(std::string_view name) const {
  for (size_t i = 0; i < counters_.size(); ++i) {
    if (counters_[i].name == name) return i;
  }
  return std::nullopt;
}

void RuleSet::Evaluate(const EvalContext& context, EvalResult* result,
                       const RuleMask* demoted) const {
  result->enforced.clear();
  result->shadow.clear();
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& rule = rules_[i];
    if (!rule.Matches(context)) continue;
    const auto index = static_cast<uint16_t>(i);
    if (rule.shadow() || (demoted != nullptr && demoted->test(i))) {
      result->shadow.push_back(index);
    } else {
      result->enforced.push_back(index);
    }
  }
  result->decision = Decide(result->enforced.span());
}

Decision RuleSet::Decide(std::span<const uint16_t> enforced_hits) const {
  Decision d;
  for (const uint16_t index : enforced_hits) {
    if (index >= rules_.size()) continue;
    const Rule& rule = rules_[index];
    switch (rule.action()) {
      case Action::kAllow:
        if (d.rule < 0) d.rule = index;
        break;
      case Action::kBlock:
        if (d.action != Action::kBlock) {
          d.action = Action::kBlock;
          d.rule = index;
        }
        break;
      case Action::kFlagSeller:
        if (!d.flag_seller || rule.flag_ttl() > d.flag_ttl) {
          d.flag_seller = true;
          d.flag_rule = index;
          d.flag_ttl = rule.flag_ttl();
        }
        [[fallthrough]];
      case Action::kReview:
        if (d.action == Action::kAllow) {
          d.action = Action::kReview;
          d.rule = index;
        }
        break;
    }
  }
  return d;
}

}  // namespace recharge::rules
