// RuleSet: a loaded fraud rule file (configs/fraud_rules.yaml, DESIGN §6;
// docs/fraud-rules.md is the reference for ops): its version and fail mode,
// the counters the engine keeps, the rules with their compiled conditions,
// and the blast-radius guard's settings. This library has no I/O beyond
// reading the file and no Redis: the engine that keeps the counters and
// flags fills an EvalContext per request and asks the RuleSet to evaluate
// it.
//
//   absl::StatusOr<std::shared_ptr<const RuleSet>> rules =
//       RuleSet::LoadFile("configs/fraud_rules.yaml");
//   if (!rules.ok()) return rules.status();   // "file:line:col: path: what"
//   EvalContext context;
//   FillEvalContext(input, &context);           // fraud_input_context.h
//   context.counters = counter_values;          // by (*rules)->counter_index()
//   context.seller_flagged = ...;
//   EvalResult result;
//   (*rules)->Evaluate(context, &result);       // allocates nothing
//   result.decision.action ...                  // allow, review or block
//
// Loading checks everything: unknown keys, every name and type in every
// `when:` condition. An error names the file, the line and the column (for a
// condition, of the offending token inside it) and the key path, e.g.
// "configs/fraud_rules.yaml:41:11: rules[2].when: unknown name 'card_user_24h':
// not a request field, a counter of this file or a flag". A failed load
// returns no RuleSet, so a caller that reloads keeps the one it has.
//
// Thread-safety: a RuleSet is immutable once loaded and shared as
// shared_ptr<const RuleSet>; any number of threads may evaluate it at once,
// and a reload swaps the pointer (in-flight calls keep theirs).
#pragma once

#include <array>
#include <bitset>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "fraud/rules/eval_context.h"
#include "fraud/rules/expression.h"

namespace recharge::rules {

// What the gateway does when the counters cannot be read in time
// (`fail_mode:`): kOpen allows (degraded = true), kClosed sends to review.
enum class FailMode : uint8_t { kOpen, kClosed };

enum class CounterKind : uint8_t {
  kCount,     // `count: true`: how many events
  kSum,       // `sum: <number field>`: the field's total
  kDistinct,  // `distinct: <string field>`: how many different values (HyperLogLog)
};

// When the engine updates a counter (`on:`).
enum class CounterEvent : uint8_t {
  kRequest,     // every assessed request, before the rules read it (default)
  kDecline,     // after the payment, when the provider declined it
  kChargeback,  // when ReportChargeback reports the recharge
};

enum class Action : uint8_t {
  kAllow,       // reported only: block and review rules still win
  kReview,      // PENDING_REVIEW: not charged, goes to the review queue
  kBlock,       // BLOCKED: not charged
  kFlagSeller,  // review now, and flag the seller for the rule's flag_ttl
};

std::string_view FailModeName(FailMode mode);           // "open" | "closed"
std::string_view CounterKindName(CounterKind kind);     // "count" | "sum" | "distinct"
std::string_view CounterEventName(CounterEvent event);  // "request" | "decline" | "chargeback"
std::string_view ActionName(Action action);  // "allow" | "review" | "block" | "flag_seller"

// A file holds at most this many rules and counters (a load error beyond).
inline constexpr size_t kMaxRules = 256;
inline constexpr size_t kMaxCounters = 64;

// A comparison of `only_if:`.
enum class CompareOp : uint8_t { kGt, kGe, kLt, kLe, kEq, kNe };
std::string_view CompareOpName(CompareOp op);  // ">", ">=", ...
bool Compare(double left, CompareOp op, double right);

// `only_if: <counter> <op> <number>`: the counter is updated only when a
// counter declared earlier in the file (updated by the same request)
// compares so with the number, its value including this request. Checked
// inside the one Redis round trip.
struct CounterGate {
  size_t counter = 0;  // counter_index of the earlier counter
  CompareOp op = CompareOp::kGt;
  double value = 0;
  std::string text;    // as written
};

// One entry of `counters:`.
struct CounterSpec {
  std::string name;
  CounterKind kind = CounterKind::kCount;
  // sum: a number field; distinct: a string field; count: none.
  std::optional<Field> value_field;
  // The entity counted (a string field). A request whose `per` field is empty
  // neither updates nor reads the counter: it reads as 0.
  Field per = Field::kUserId;
  std::chrono::milliseconds window{0};
  // The window is split into `buckets` buckets of window / buckets each
  // (a whole number of seconds, checked at load). Default 12.
  int buckets = 12;
  CounterEvent on = CounterEvent::kRequest;
  // `when:` (optional): a condition over request fields only. A request for
  // which it is false reads the counter without updating it.
  std::optional<Program> when;
  std::string when_text;
  // `only_if:` (optional), see CounterGate.
  std::optional<CounterGate> only_if;

  std::chrono::milliseconds bucket_width() const { return window / buckets; }
};

// `blast_radius:`: the guard that demotes to shadow a rule that blocks more
// than `max_block_share` of the requests of the last `window`, once that
// window holds at least `min_requests` requests. It watches the enforcing
// `block` rules (a review keeps the sale open). The engine enforces it; this
// is its configuration.
struct BlastRadius {
  double max_block_share = 0.2;
  std::chrono::milliseconds window = std::chrono::minutes(10);
  int64_t min_requests = 50;
};

// `links:`: the instruments whose use by two sellers' buyers links the
// sellers (one operation behind several seller ids). The engine keeps, per
// instrument, the sellers that used it within `window`, and per seller the
// instruments it used, in the same round trip as the counters. A
// flag_seller rule with `flag_linked: true` then flags the linked sellers
// too, and FraudAdmin.GetSellerRisk lists a seller's linked sellers.
struct LinkSpec {
  std::vector<Field> by;  // card_fingerprint, device_id, ip, instrument_fingerprint
  std::chrono::milliseconds window{24 * 3'600'000};
  bool enabled() const { return !by.empty(); }
};

// One entry of `rules:`.
class Rule {
 public:
  const std::string& id() const { return id_; }
  Action action() const { return action_; }
  // How long flag_seller flags the seller; zero for other actions.
  std::chrono::milliseconds flag_ttl() const { return flag_ttl_; }
  // The reason reported with a hit; the rule id if the file gives none.
  const std::string& reason() const { return reason_; }
  // `mode: shadow`: evaluated and reported, never deciding.
  bool shadow() const { return shadow_; }
  // `flag_linked: true` (flag_seller rules, with `links:`): also flag the
  // sellers linked to this one by the request's instruments.
  bool flag_linked() const { return flag_linked_; }
  // The blast-radius threshold of this rule: its own max_block_share, else
  // the file's blast_radius.max_block_share. 1 means never demoted.
  double max_block_share() const { return max_block_share_; }
  // Whether the blast-radius guard watches this rule: a block rule (when
  // enforcing).
  bool guarded() const { return action_ == Action::kBlock; }
  // The `when:` condition as written, and compiled.
  const std::string& when() const { return when_; }
  const Program& program() const { return program_; }

  // Allocates nothing.
  bool Matches(const EvalContext& context) const { return program_.Matches(context); }

 private:
  friend class RuleSetLoader;
  std::string id_;
  Action action_ = Action::kAllow;
  std::chrono::milliseconds flag_ttl_{0};
  bool flag_linked_ = false;
  std::string reason_;
  bool shadow_ = false;
  double max_block_share_ = 1.0;
  std::string when_;
  Program program_;
};

// Indexes into RuleSet::rules(), in file order, in fixed storage.
class RuleHits {
 public:
  void clear() { size_ = 0; }
  // REQUIRES: size() < kMaxRules (a RuleSet never has more rules).
  void push_back(uint16_t index) { items_[size_++] = index; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  uint16_t operator[](size_t i) const { return items_[i]; }
  std::span<const uint16_t> span() const { return {items_.data(), size_}; }
  const uint16_t* begin() const { return items_.data(); }
  const uint16_t* end() const { return items_.data() + size_; }

 private:
  std::array<uint16_t, kMaxRules> items_;
  size_t size_ = 0;
};

// The outcome of the enforcing hits: block > review > allow.
struct Decision {
  // kAllow, kReview or kBlock, never kFlagSeller (which decides kReview).
  Action action = Action::kAllow;
  // The index of the first enforcing hit with the deciding action (for
  // kAllow, the first allow hit), or -1 when no enforcing rule matched.
  int rule = -1;
  // An enforcing flag_seller rule matched (whatever `action` is, even
  // kBlock): flag the seller for flag_ttl. flag_rule is the index of the
  // flag_seller hit with the longest flag_ttl, or -1.
  bool flag_seller = false;
  int flag_rule = -1;
  std::chrono::milliseconds flag_ttl{0};
};

// Rules the caller demotes to shadow at run time (the blast-radius guard),
// by index into RuleSet::rules().
using RuleMask = std::bitset<kMaxRules>;

struct EvalResult {
  RuleHits enforced;  // matching enforcing rules: these decide
  RuleHits shadow;    // matching shadow rules and demoted rules: reported only
  Decision decision;  // Decide(enforced)
};

class RuleSet {
 public:
  // Reads and loads the rule file at `path`. INVALID_ARGUMENT with
  // "path:line:col: key.path: what" on any error, including an unreadable
  // file ("path: cannot open the file"). A file with several mistakes gives
  // every one of them, one per line of the message, in file order by section
  // (header, links, counters, rules); a YAML syntax error stops at itself.
  static absl::StatusOr<std::shared_ptr<const RuleSet>> LoadFile(const std::string& path);
  // Loads `text` as if it were the file `name` (tests, backtests, the fuzzer).
  static absl::StatusOr<std::shared_ptr<const RuleSet>> Parse(const std::string& text,
                                                              const std::string& name);

  const std::string& name() const { return name_; }        // the file
  const std::string& version() const { return version_; }  // `version:`
  FailMode fail_mode() const { return fail_mode_; }
  const BlastRadius& blast_radius() const { return blast_radius_; }
  const LinkSpec& links() const { return links_; }
  // In file order; a counter's position is its counter_index.
  const std::vector<CounterSpec>& counters() const { return counters_; }
  // In file order; hits are reported in this order.
  const std::vector<Rule>& rules() const { return rules_; }

  // The index of the counter called `name` (its value's place in
  // EvalContext::counters), or nullopt.
  std::optional<size_t> counter_index(std::string_view name) const;

  // Evaluates every rule over `context` and decides. Rules set in `demoted`
  // (may be null) count as shadow rules. Allocates nothing.
  void Evaluate(const EvalContext& context, EvalResult* result,
                const RuleMask* demoted = nullptr) const;

  // The decision helper: given the indexes of the enforcing rules that
  // matched (indexes out of range are ignored), returns block > review >
  // allow; flag_seller decides review and sets flag_seller. Allocates nothing.
  Decision Decide(std::span<const uint16_t> enforced_hits) const;

 private:
  friend class RuleSetLoader;
  RuleSet() = default;

  std::string name_;
  std::string version_;
  FailMode fail_mode_ = FailMode::kOpen;
  BlastRadius blast_radius_;
  LinkSpec links_;
  std::vector<CounterSpec> counters_;
  std::vector<std::string> counter_names_;  // counters_[i].name, for Program::Compile
  std::vector<Rule> rules_;
};

}  // namespace recharge::rules
