// Backtest: what a candidate rule file would have decided on past traffic
// (FraudAdmin.BacktestRules, issue 12).
//
// The recorded decisions of a period are replayed in the order they were
// made (each at the instant recorded with it) through the candidate rules,
// with every counter, seller flag, block list and seller link kept in
// memory by MemoryCounters, which does the Redis script's arithmetic
// (fraud/counter_store.cc): the same time buckets, windows, distinct sets,
// `only_if` gates and links. So a rule over a counter, field or window the
// live rules never had is judged on what its counter would really have
// said. Outcomes feed back as they did live: a decline counts at its
// decision (`on: decline`), a chargeback at its time (`on: chargeback`,
// the card and device block-listed, flag_seller rules re-evaluated), and the
// candidate's own flag_seller rules flag sellers during the replay.
//
// Compared are the decisions the live rules version made and that were not
// degraded; the others are replayed (they move the counters) and reported
// as not comparable, with why. The blast-radius guard is not replayed (its
// demotions depend on live timing), and counters start empty at the start
// of the period: a decision early in it saw counters fed by earlier traffic
// live (choose a period that starts well before what you look at, or from
// the first decision). Concurrent decisions of one entity are replayed in
// the order they were decided, which the live Redis may have seen otherwise.
//
// Thread-safety: a Backtest is used by one thread; MemoryCounters too.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fraud/counter_store.h"
#include "fraud/fraud_filter.h"
#include "fraud/rules/rule_set.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

// Redis's counters, flags and block lists for a replay, in memory.
class MemoryCounters {
 public:
  // As RedisCounterStore::UpdateAndRead at `now_ms`.
  CounterReadout UpdateAndRead(const std::vector<CounterUpdate>& counters,
                               const std::vector<std::string>& check_keys, int64_t now_ms,
                               const std::optional<LinkUpdate>& links = std::nullopt);
  // A key (flag, block) that exists until `expires_at_ms`.
  void SetUntil(const std::string& key, int64_t expires_at_ms);

 private:
  double Apply(const CounterUpdate& u, int64_t now_ms, const std::vector<double>& so_far);
  struct Buckets {
    std::map<int64_t, double> sums;            // bucket -> count or sum
    std::map<std::string, int64_t> distinct;   // value -> last bucket seen
  };
  std::map<std::string, Buckets> counters_;
  std::map<std::string, int64_t> keys_;        // key -> expires at (ms)
  // instrument ("<kind>:<value>") -> seller -> last use (ms)
  std::map<std::string, std::map<std::string, int64_t>> instrument_sellers_;
};

// One recorded decision to replay.
struct RecordedDecision {
  std::string recharge_id;
  int64_t at_ms = 0;               // when it was decided
  FraudInput input;
  recharge::v1::FraudAssessment assessment;  // what was decided then
  bool declined = false;           // the provider declined it
};
// A chargeback reported on a recharge, at `at_ms`.
struct RecordedChargeback {
  std::string recharge_id;
  int64_t at_ms = 0;
  FraudInput input;
};

class Backtest {
 public:
  // `candidate`: the rule file replayed; `live_version`: the version whose
  // decisions are compared; `examples`: per rule and change, at most.
  Backtest(std::shared_ptr<const rules::RuleSet> candidate, std::string live_version,
           int examples);

  // Replays everything, in time order (chargebacks after the decisions of
  // the same instant), and returns the report.
  recharge::v1::BacktestRulesResponse Run(std::vector<RecordedDecision> decisions,
                                          std::vector<RecordedChargeback> chargebacks);

 private:
  struct Outcome {
    recharge::v1::FraudAction decision = recharge::v1::FRAUD_ACTION_ALLOW;
    std::vector<uint16_t> enforced, shadow;
    std::vector<double> counters;
  };
  Outcome Decide(const FraudInput& input, int64_t now_ms);
  void CountDecline(const FraudInput& input, int64_t now_ms);
  void Chargeback(const FraudInput& input, int64_t now_ms);
  void Compare(const RecordedDecision& d, const Outcome& o);
  recharge::v1::DecisionChange* ChangeIn(
      google::protobuf::RepeatedPtrField<recharge::v1::DecisionChange>* changes,
      recharge::v1::FraudAction from, recharge::v1::FraudAction to);
  std::string Key(const std::string& field, const std::string& value,
                  const std::string& counter) const;

  const std::shared_ptr<const rules::RuleSet> rules_;
  const std::string live_version_;
  const int examples_;
  MemoryCounters memory_;
  recharge::v1::BacktestRulesResponse report_;
  std::map<std::string, recharge::v1::RuleBacktest*> by_rule_;
  std::map<std::string, int64_t> not_comparable_;
};

}  // namespace recharge
