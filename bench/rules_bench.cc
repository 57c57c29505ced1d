// Micro-benchmark of fraud-rule evaluation (issue 4): the shipped
// configs/fraud_rules.yaml evaluated over a realistic request, as the engine
// does once per RecordRecharge after reading the counters. Figures are in
// docs/fraud-rules.md ("Cost"). Run: build/bench/rules_bench
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "fraud/rules/fraud_input_context.h"
#include "fraud/rules/rule_set.h"

namespace recharge::rules {
namespace {

const char kRulesPath[] = RECHARGE_SOURCE_DIR "/configs/fraud_rules.yaml";

std::shared_ptr<const RuleSet> LoadDefaults() {
  auto set = RuleSet::LoadFile(kRulesPath);
  if (!set.ok()) {
    std::cerr << set.status() << "\n";
    std::abort();
  }
  return *set;
}

// A card recharge through a third-party seller, as the gateway sees it.
FraudInput RealisticInput() {
  FraudInput in;
  in.user_id = "user-7f3a9c21";
  in.seller_id = "seller-0042";
  in.ip = "203.0.113.77";
  in.device_id = "device-5c1e0b7d2a";
  in.card_fingerprint = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  in.instrument_fingerprint = in.card_fingerprint;
  in.payment_method = "card";
  in.region = "US";
  in.currency = "USD";
  in.package_id = "coins_650";
  in.coins = 650;
  in.amount_usd_cents = 999;
  return in;
}

// Counter values of a seller's ordinary traffic (no rule fires), or of a
// reseller over every threshold (several rules fire).
std::vector<double> Counters(const RuleSet& set, bool suspicious) {
  std::vector<double> v(set.counters().size(), 1.0);
  auto put = [&](const char* name, double ordinary, double high) {
    v[*set.counter_index(name)] = suspicious ? high : ordinary;
  };
  put("user_recharges_1h", 2, 12);
  put("user_spend_usd_24h", 19.98, 650);
  put("seller_users_1h", 8, 31);
  put("seller_cards_1h", 8, 29);
  put("seller_recharges_1h", 9, 40);
  put("seller_declines_1h", 1, 25);
  put("card_users_24h", 1, 5);
  put("ip_users_1h", 1, 31);
  put("device_users_24h", 1, 31);
  put("seller_chargebacks_30d", 0, 3);
  return v;
}

void Evaluate(benchmark::State& state, bool suspicious) {
  const auto set = LoadDefaults();
  const FraudInput input = RealisticInput();
  const std::vector<double> counters = Counters(*set, suspicious);
  EvalContext context;
  FillEvalContext(input, &context);
  context.counters = counters;
  context.seller_flagged = suspicious;
  EvalResult result;
  for (auto _ : state) {
    set->Evaluate(context, &result);
    benchmark::DoNotOptimize(result.decision);
  }
  state.counters["rules"] = static_cast<double>(set->rules().size());
  state.counters["hits"] = static_cast<double>(result.enforced.size() + result.shadow.size());
}

// All rules of the default file, nothing matches (the common case).
void BM_EvaluateDefaultRules_Ordinary(benchmark::State& state) { Evaluate(state, false); }
BENCHMARK(BM_EvaluateDefaultRules_Ordinary);

// All rules of the default file, most of them match.
void BM_EvaluateDefaultRules_Suspicious(benchmark::State& state) { Evaluate(state, true); }
BENCHMARK(BM_EvaluateDefaultRules_Suspicious);

// What the engine does per request: fill the context from the FraudInput,
// then evaluate.
void BM_FillAndEvaluateDefaultRules(benchmark::State& state) {
  const auto set = LoadDefaults();
  const FraudInput input = RealisticInput();
  const std::vector<double> counters = Counters(*set, false);
  EvalResult result;
  for (auto _ : state) {
    EvalContext context;
    FillEvalContext(input, &context);
    context.counters = counters;
    set->Evaluate(context, &result);
    benchmark::DoNotOptimize(result.decision);
  }
}
BENCHMARK(BM_FillAndEvaluateDefaultRules);

// One condition: seller_id != "" and seller_users_1h > 25.
void BM_OneRule(benchmark::State& state) {
  const auto set = LoadDefaults();
  const FraudInput input = RealisticInput();
  const std::vector<double> counters = Counters(*set, false);
  EvalContext context;
  FillEvalContext(input, &context);
  context.counters = counters;
  const Rule& rule = set->rules()[0];
  for (auto _ : state) benchmark::DoNotOptimize(rule.Matches(context));
}
BENCHMARK(BM_OneRule);

// Loading (parsing and compiling) the default file: the cost of a reload.
void BM_LoadDefaultRules(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(RuleSet::LoadFile(kRulesPath));
}
BENCHMARK(BM_LoadDefaultRules)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace recharge::rules

BENCHMARK_MAIN();
