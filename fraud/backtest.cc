#include "fraud/backtest.h"

#include <google/protobuf/util/time_util.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "fraud/rule_engine.h"
#include "fraud/rules/fraud_input_context.h"
#include "io/strings.h"

namespace recharge {
namespace {

using recharge::v1::FraudAction;

// As the live engine: a chargeback block-lists the card and device this long.
constexpr int64_t kChargebackBlockMs = int64_t{24} * 180 * 3'600'000;
// The Redis script keeps at most this many values of one distinct counter.
constexpr size_t kDistinctCap = 100'000;

int Rank(FraudAction a) {
  switch (a) {
    case recharge::v1::FRAUD_ACTION_BLOCK: return 2;
    case recharge::v1::FRAUD_ACTION_REVIEW: return 1;
    default: return 0;
  }
}

double ParseNumber(std::string_view s) {
  if (s.empty()) return 1;  // a count with no value adds 1, as the script does
  return std::strtod(std::string(s).c_str(), nullptr);
}

// "<i> <op> <number>": counter i (1-based, of this call) compares so.
bool GateOpen(std::string_view gate, const std::vector<double>& so_far) {
  const size_t a = gate.find(' ');
  const size_t b = gate.find(' ', a + 1);
  if (a == std::string_view::npos || b == std::string_view::npos) return true;
  size_t i = 0;
  std::from_chars(gate.data(), gate.data() + a, i);
  const std::string_view op = gate.substr(a + 1, b - a - 1);
  const double v = ParseNumber(gate.substr(b + 1));
  const double x = i >= 1 && i <= so_far.size() ? so_far[i - 1] : 0;
  if (op == ">") return x > v;
  if (op == ">=") return x >= v;
  if (op == "<") return x < v;
  if (op == "<=") return x <= v;
  if (op == "==") return x == v;
  return x != v;
}

google::protobuf::Timestamp AtMs(int64_t ms) {
  return google::protobuf::util::TimeUtil::MillisecondsToTimestamp(ms);
}

}  // namespace

double MemoryCounters::Apply(const CounterUpdate& u, int64_t now_ms,
                             const std::vector<double>& so_far) {
  const bool update = u.update && (u.gate.empty() || GateOpen(u.gate, so_far));
  const int64_t bucket_ms = std::max<int64_t>(1, u.window.count() / std::max(1, u.buckets));
  const int64_t current = now_ms / bucket_ms;
  const int64_t oldest = current - u.buckets + 1;
  Buckets& c = counters_[u.key];
  if (u.kind == CounterUpdate::Kind::kDistinct) {
    if (update) {
      c.distinct[u.value] = current;
      std::erase_if(c.distinct, [oldest](const auto& kv) { return kv.second < oldest; });
      while (c.distinct.size() > kDistinctCap) {  // the oldest go first, as ZPOPMIN
        auto lowest = std::min_element(c.distinct.begin(), c.distinct.end(),
                                       [](const auto& x, const auto& y) { return x.second < y.second; });
        c.distinct.erase(lowest);
      }
    }
    return static_cast<double>(std::count_if(c.distinct.begin(), c.distinct.end(),
                                             [oldest](const auto& kv) { return kv.second >= oldest; }));
  }
  if (update) c.sums[current] += ParseNumber(u.value);
  double total = 0;
  for (auto it = c.sums.lower_bound(oldest); it != c.sums.end(); ++it) total += it->second;
  if (update) c.sums.erase(c.sums.begin(), c.sums.lower_bound(oldest));
  return total;
}

CounterReadout MemoryCounters::UpdateAndRead(const std::vector<CounterUpdate>& counters,
                                             const std::vector<std::string>& check_keys,
                                             int64_t now_ms, const std::optional<LinkUpdate>& links) {
  CounterReadout out;
  for (const CounterUpdate& u : counters) out.values.push_back(Apply(u, now_ms, out.values));
  for (const std::string& key : check_keys) {
    auto it = keys_.find(key);
    out.exists.push_back(it != keys_.end() && it->second > now_ms);
  }
  if (links) {
    const int64_t window = links->window.count();
    for (const LinkUpdate::Instrument& in : links->instruments) {
      std::map<std::string, int64_t>& sellers = instrument_sellers_[StrCat(in.kind, ":", in.value)];
      sellers[links->seller_id] = now_ms;
      std::erase_if(sellers, [&](const auto& kv) { return kv.second <= now_ms - window; });
      // ZRANGE 0 20: the 21 oldest uses (ties by name), this seller left out.
      std::vector<std::pair<int64_t, std::string>> by_time;
      for (const auto& [seller, at] : sellers) by_time.emplace_back(at, seller);
      std::sort(by_time.begin(), by_time.end());
      std::vector<std::string>& others = out.linked.emplace_back();
      for (size_t i = 0; i < by_time.size() && i < 21; ++i) {
        if (by_time[i].second != links->seller_id) others.push_back(by_time[i].second);
      }
    }
  }
  return out;
}

void MemoryCounters::SetUntil(const std::string& key, int64_t expires_at_ms) {
  keys_[key] = expires_at_ms;
}

Backtest::Backtest(std::shared_ptr<const rules::RuleSet> candidate, std::string live_version,
                   int examples)
    : rules_(std::move(candidate)), live_version_(std::move(live_version)), examples_(examples) {
  report_.set_candidate_version(rules_->version());
  report_.set_live_version(live_version_);
  for (const rules::Rule& r : rules_->rules()) {
    recharge::v1::RuleBacktest* rb = report_.add_rules();
    rb->set_rule_id(r.id());
    by_rule_[r.id()] = rb;
  }
}

std::string Backtest::Key(const std::string& field, const std::string& value,
                          const std::string& counter) const {
  return StrCat(field, "\x1f", value, "\x1f", counter);
}

Backtest::Outcome Backtest::Decide(const FraudInput& input, int64_t now_ms) {
  const rules::RuleSet& rs = *rules_;
  auto key_of = [this](const std::string& f, const std::string& v, const std::string& c) {
    return Key(f, v, c);
  };
  std::vector<int> index;
  std::vector<CounterUpdate> updates =
      BuildCounterUpdates(rs, input, rules::CounterEvent::kRequest, key_of, &index);
  std::vector<std::string> checks;
  int flag_at = -1, card_at = -1, device_at = -1;
  if (!input.seller_id.empty()) {
    flag_at = static_cast<int>(checks.size());
    checks.push_back("flag:" + input.seller_id);
  }
  if (!input.card_fingerprint.empty()) {
    card_at = static_cast<int>(checks.size());
    checks.push_back("card:" + input.card_fingerprint);
  }
  if (!input.device_id.empty()) {
    device_at = static_cast<int>(checks.size());
    checks.push_back("device:" + input.device_id);
  }
  rules::EvalContext ctx;
  rules::FillEvalContext(input, &ctx);
  const std::optional<LinkUpdate> links = BuildLinkUpdate(rs, input, ctx);
  CounterReadout readout = memory_.UpdateAndRead(updates, checks, now_ms, links);

  Outcome o;
  o.counters.assign(rs.counters().size(), 0.0);
  for (size_t i = 0; i < o.counters.size(); ++i) {
    if (index[i] >= 0) o.counters[i] = readout.values[index[i]];
  }
  ctx.counters = o.counters;
  ctx.seller_flagged = flag_at >= 0 && readout.exists[flag_at];
  ctx.card_blocked = card_at >= 0 && readout.exists[card_at];
  ctx.device_blocked = device_at >= 0 && readout.exists[device_at];
  rules::EvalResult result;
  rs.Evaluate(ctx, &result);
  o.enforced.assign(result.enforced.begin(), result.enforced.end());
  o.shadow.assign(result.shadow.begin(), result.shadow.end());
  o.decision = FraudActionOf(result.decision.action);
  // The candidate's own flags take effect, as they would have live.
  if (result.decision.flag_seller && !input.seller_id.empty()) {
    memory_.SetUntil("flag:" + input.seller_id, now_ms + result.decision.flag_ttl.count());
    if (!ctx.seller_flagged && links) {
      for (uint16_t i : result.enforced) {
        const rules::Rule& r = rs.rules()[i];
        if (!r.flag_linked()) continue;
        for (size_t j = 0; j < readout.linked.size(); ++j) {
          for (const std::string& other : readout.linked[j]) {
            memory_.SetUntil("flag:" + other, now_ms + r.flag_ttl().count());
          }
        }
      }
    }
  }
  return o;
}

void Backtest::CountDecline(const FraudInput& input, int64_t now_ms) {
  std::vector<int> index;
  auto key_of = [this](const std::string& f, const std::string& v, const std::string& c) {
    return Key(f, v, c);
  };
  std::vector<CounterUpdate> updates =
      BuildCounterUpdates(*rules_, input, rules::CounterEvent::kDecline, key_of, &index);
  if (!updates.empty()) memory_.UpdateAndRead(updates, {}, now_ms);
}

void Backtest::Chargeback(const FraudInput& input, int64_t now_ms) {
  const rules::RuleSet& rs = *rules_;
  if (!input.card_fingerprint.empty()) {
    memory_.SetUntil("card:" + input.card_fingerprint, now_ms + kChargebackBlockMs);
  }
  if (!input.device_id.empty()) {
    memory_.SetUntil("device:" + input.device_id, now_ms + kChargebackBlockMs);
  }
  auto key_of = [this](const std::string& f, const std::string& v, const std::string& c) {
    return Key(f, v, c);
  };
  std::vector<int> index;
  std::vector<CounterUpdate> updates =
      BuildCounterUpdates(rs, input, rules::CounterEvent::kRequest, key_of, &index);
  for (size_t i = 0; i < rs.counters().size(); ++i) {
    if (index[i] >= 0) updates[index[i]].update = rs.counters()[i].on == rules::CounterEvent::kChargeback;
  }
  std::vector<std::string> checks;
  if (!input.seller_id.empty()) checks.push_back("flag:" + input.seller_id);
  CounterReadout readout = memory_.UpdateAndRead(updates, checks, now_ms);
  rules::EvalContext ctx;
  rules::FillEvalContext(input, &ctx);
  std::vector<double> values(rs.counters().size(), 0.0);
  for (size_t i = 0; i < values.size(); ++i) {
    if (index[i] >= 0) values[i] = readout.values[index[i]];
  }
  ctx.counters = values;
  ctx.seller_flagged = !checks.empty() && readout.exists[0];
  ctx.card_blocked = !input.card_fingerprint.empty();
  ctx.device_blocked = !input.device_id.empty();
  rules::EvalResult result;
  rs.Evaluate(ctx, &result);
  if (result.decision.flag_seller && !input.seller_id.empty()) {
    memory_.SetUntil("flag:" + input.seller_id, now_ms + result.decision.flag_ttl.count());
  }
}

recharge::v1::DecisionChange* Backtest::ChangeIn(
    google::protobuf::RepeatedPtrField<recharge::v1::DecisionChange>* changes, FraudAction from,
    FraudAction to) {
  for (recharge::v1::DecisionChange& c : *changes) {
    if (c.from() == from && c.to() == to) return &c;
  }
  recharge::v1::DecisionChange* c = changes->Add();
  c->set_from(from);
  c->set_to(to);
  return c;
}

void Backtest::Compare(const RecordedDecision& d, const Outcome& o) {
  const rules::RuleSet& rs = *rules_;
  for (uint16_t i : o.enforced) by_rule_[rs.rules()[i].id()]->set_hits(by_rule_[rs.rules()[i].id()]->hits() + 1);
  for (uint16_t i : o.shadow) by_rule_[rs.rules()[i].id()]->set_hits(by_rule_[rs.rules()[i].id()]->hits() + 1);
  if (d.assessment.degraded()) {
    ++not_comparable_["degraded (Redis did not answer; fail_mode decided)"];
    return;
  }
  if (d.assessment.rules_version() != live_version_) {
    ++not_comparable_[StrCat("decided by rules version \"", d.assessment.rules_version(), "\"")];
    return;
  }
  report_.set_comparable(report_.comparable() + 1);
  const FraudAction from = d.assessment.decision();
  const FraudAction to = o.decision;
  if (from == to) return;
  report_.set_changed(report_.changed() + 1);

  recharge::v1::BacktestExample example;
  example.set_recharge_id(d.recharge_id);
  *example.mutable_decided_at() = AtMs(d.at_ms);
  example.set_old_decision(from);
  example.set_new_decision(to);
  nlohmann::ordered_json counters = nlohmann::ordered_json::object();
  for (size_t i = 0; i < rs.counters().size(); ++i) counters[rs.counters()[i].name] = o.counters[i];
  example.set_counters_json(counters.dump());
  for (uint16_t i : o.enforced) example.add_rules_hit(rs.rules()[i].id());

  recharge::v1::DecisionChange* overall = ChangeIn(report_.mutable_changes(), from, to);
  overall->set_count(overall->count() + 1);
  if (overall->examples_size() < examples_) *overall->add_examples() = example;

  // Which rules made the difference: stricter now, the candidate's rules
  // that decide it; laxer, the rules that decided then and no longer do.
  std::vector<std::string> responsible;
  if (Rank(to) > Rank(from)) {
    for (uint16_t i : o.enforced) {
      if (FraudActionOf(rs.rules()[i].action()) == to) responsible.push_back(rs.rules()[i].id());
    }
  } else {
    for (const recharge::v1::RuleHit& h : d.assessment.hits()) {
      if (h.shadow() || h.action() != from) continue;
      const bool still = std::any_of(o.enforced.begin(), o.enforced.end(),
                                     [&](uint16_t i) { return rs.rules()[i].id() == h.rule_id(); });
      if (!still) responsible.push_back(h.rule_id());
    }
  }
  for (const std::string& id : responsible) {
    recharge::v1::RuleBacktest*& rb = by_rule_[id];
    if (rb == nullptr) {  // a rule the candidate no longer has
      rb = report_.add_rules();
      rb->set_rule_id(id);
    }
    recharge::v1::DecisionChange* c = ChangeIn(rb->mutable_changes(), from, to);
    c->set_count(c->count() + 1);
    if (c->examples_size() < examples_) *c->add_examples() = example;
  }
}

recharge::v1::BacktestRulesResponse Backtest::Run(std::vector<RecordedDecision> decisions,
                                                  std::vector<RecordedChargeback> chargebacks) {
  std::stable_sort(decisions.begin(), decisions.end(),
                   [](const auto& a, const auto& b) { return a.at_ms < b.at_ms; });
  std::stable_sort(chargebacks.begin(), chargebacks.end(),
                   [](const auto& a, const auto& b) { return a.at_ms < b.at_ms; });
  size_t next_chargeback = 0;
  for (const RecordedDecision& d : decisions) {
    while (next_chargeback < chargebacks.size() && chargebacks[next_chargeback].at_ms < d.at_ms) {
      Chargeback(chargebacks[next_chargeback].input, chargebacks[next_chargeback].at_ms);
      ++next_chargeback;
    }
    report_.set_replayed(report_.replayed() + 1);
    Outcome o = Decide(d.input, d.at_ms);
    Compare(d, o);
    if (d.declined) CountDecline(d.input, d.at_ms);
  }
  for (const auto& [reason, count] : not_comparable_) {
    recharge::v1::NotComparable* nc = report_.add_not_comparable();
    nc->set_reason(reason);
    nc->set_count(count);
  }
  return std::move(report_);
}

}  // namespace recharge
