// RuleEngine: the rule-based fraud filter (DESIGN §6). For each request it
// updates and reads every counter of the rule set, the seller's flag and the
// card and device block lists in one Redis round trip, evaluates the rules,
// decides (block > review > allow among enforcing rules; shadow rules are
// reported, never deciding), flags the seller when a flag_seller rule hits,
// and keeps per-rule statistics.
//
// Redis unreachable or slower than its timeout: the rule file's fail mode
// decides (open: allow, closed: review), the assessment says degraded, and
// the degraded counter and a warn-level log line record it.
//
// The blast-radius guard demotes to shadow a block rule that blocks more than
// its share of the recent requests, with a warn log line and a counter, until
// the rules are reloaded. Reload
// (SIGHUP, FraudAdmin.ReloadRules) swaps the rule set atomically; in-flight
// calls finish on the set they started with, and a broken file leaves the
// old set live.
//
// Thread-safety: all methods may be called concurrently from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fraud/counter_store.h"
#include "fraud/fraud_filter.h"
#include "fraud/rules/rule_set.h"
#include "io/metrics.h"

namespace recharge {

// The counter updates of `input` for the rule set's counters: `event` picks
// which are updated (the others are read); counters whose `per` field is
// empty are left out, and `index[i]` is counter i's position or -1. Keys are
// named by `key_of(per_field, per_value, counter_name)`. Shared by the live
// engine (Redis keys) and the backtest (fraud/backtest.h).
using CounterKeyFn =
    std::function<std::string(const std::string&, const std::string&, const std::string&)>;
std::vector<CounterUpdate> BuildCounterUpdates(const rules::RuleSet& rs, const FraudInput& input,
                                               rules::CounterEvent event,
                                               const CounterKeyFn& key_of, std::vector<int>* index);

// The seller links a request adds under the rules' `links:` section: its
// seller and the instrument values (`ctx`, filled from `input`) that link
// sellers; nullopt when the rules keep no links or the request has no
// seller. Shared by the live engine and the backtest.
std::optional<LinkUpdate> BuildLinkUpdate(const rules::RuleSet& rs, const FraudInput& input,
                                          const rules::EvalContext& ctx);

// The decision a rule's action makes (flag_seller reviews).
recharge::v1::FraudAction FraudActionOf(rules::Action action);

struct RuleStatsSnapshot {
  std::string rule_id;
  int64_t evaluated = 0;
  int64_t hits = 0;
  bool shadow = false;    // shadow in the file, or demoted by the guard
  bool demoted = false;   // demoted by the blast-radius guard
};

class RuleEngine final : public FraudFilter {
 public:
  // `rules_path` is read again on Reload().
  RuleEngine(RedisCounterStore& store, std::shared_ptr<const rules::RuleSet> rules,
             std::string rules_path);

  asio::awaitable<recharge::v1::FraudAssessment> Assess(const FraudInput& input) override;

  // After the payment: counts a decline against the counters declared
  // `on: decline`. Runs in the background (no round trip on the caller's path).
  void OnDeclined(const FraudInput& input, const asio::any_io_executor& executor) override;
  // Block-lists the card fingerprint and the device, counts the chargeback
  // (`on: chargeback` counters) if `count` (false when the same chargeback is
  // reported again), and flags the seller if a flag_seller rule now matches.
  // Returns what was block-listed and whether the seller is flagged.
  struct ChargebackResult {
    std::vector<std::string> blocked;
    bool seller_flagged = false;
  };
  asio::awaitable<absl::StatusOr<ChargebackResult>> RecordChargeback(const FraudInput& input,
                                                                     bool count);

  // Loads the rule file again; the old set stays live on any error.
  // `caller` (the admin caller, or "SIGHUP") is logged with the outcome.
  absl::StatusOr<std::string> Reload(std::string_view caller = "SIGHUP");
  std::shared_ptr<const rules::RuleSet> rules() const;

  std::vector<RuleStatsSnapshot> Stats() const;
  int64_t degraded_decisions() const { return degraded_.load(); }
  int64_t demotions() const { return demotions_.load(); }

  RedisCounterStore& store() { return store_; }
  // The Redis updates of `input` for the rule set's counters; `event` picks
  // which are updated (the others are read). Counters whose `per` field is
  // empty are left out; `index[i]` is counter i's position, or -1.
  std::vector<CounterUpdate> CounterUpdates(const rules::RuleSet& rs, const FraudInput& input,
                                            rules::CounterEvent event, std::vector<int>* index) const;

 private:
  // Per-rule statistics and the blast-radius guard's window for one rule id.
  struct RuleState {
    std::atomic<int64_t> evaluated{0};
    std::atomic<int64_t> hits{0};
    std::atomic<bool> demoted{false};
    // Its /metrics children (recharge_rule_evaluations_total, _hits_total
    // with shadow "false" / "true"), looked up once.
    metrics::Counter* evaluated_metric = nullptr;
    metrics::Counter* hit_metric[2] = {nullptr, nullptr};
    // Guard window: requests seen and requests this rule stopped, in buckets.
    std::mutex mu;
    int64_t bucket = -1;
    std::vector<int64_t> seen, stopped;
  };
  struct Active {
    std::shared_ptr<const rules::RuleSet> rules;
    std::vector<RuleState*> states;  // parallel to rules->rules()
  };
  std::shared_ptr<const Active> active() const;
  std::shared_ptr<const Active> Activate(std::shared_ptr<const rules::RuleSet> rules);
  // Records the request for the guard; returns true if `rule` must be demoted now.
  bool GuardRecord(RuleState& state, const rules::BlastRadius& br, double max_share, bool stopped);

  RedisCounterStore& store_;
  const std::string rules_path_;
  mutable std::mutex mu_;
  std::shared_ptr<const Active> active_;                      // guarded by mu_
  std::map<std::string, std::unique_ptr<RuleState>> states_;  // guarded by mu_; never shrinks
  std::atomic<int64_t> degraded_{0};
  std::atomic<int64_t> demotions_{0};
};

}  // namespace recharge
