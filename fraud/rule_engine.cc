#include "fraud/rule_engine.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <algorithm>

#include "fraud/rules/fraud_input_context.h"
#include "io/gateway_metrics.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

using recharge::v1::FraudAction;
using recharge::v1::FraudAssessment;
using rules::Action;
using rules::CounterEvent;

constexpr int kGuardBuckets = 10;
// How long a chargeback block-lists the card and the device.
constexpr std::chrono::hours kChargebackBlock(24 * 180);

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// "card", "device", "address" for the instrument fields of `links:`.
std::string_view LinkKindName(std::string_view field) {
  if (field == "card_fingerprint") return "card";
  if (field == "device_id") return "device";
  if (field == "ip") return "address";
  return "payment instrument";
}

std::string FormatNumber(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", v);
  return buf;
}

}  // namespace

RuleEngine::RuleEngine(RedisCounterStore& store, std::shared_ptr<const rules::RuleSet> rules,
                       std::string rules_path)
    : store_(store), rules_path_(std::move(rules_path)) {
  Activate(std::move(rules));
}

std::shared_ptr<const RuleEngine::Active> RuleEngine::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_;
}

std::shared_ptr<const rules::RuleSet> RuleEngine::rules() const { return active()->rules; }

std::shared_ptr<const RuleEngine::Active> RuleEngine::Activate(
    std::shared_ptr<const rules::RuleSet> rules) {
  auto next = std::make_shared<Active>();
  next->rules = std::move(rules);
  std::lock_guard<std::mutex> lock(mu_);
  for (const rules::Rule& r : next->rules->rules()) {
    std::unique_ptr<RuleState>& state = states_[r.id()];
    if (!state) {
      state = std::make_unique<RuleState>();
      GatewayMetrics& m = Metrics();
      state->evaluated_metric = &m.rule_evaluations.With({r.id()});
      state->hit_metric[0] = &m.rule_hits.With({r.id(), "false"});
      state->hit_metric[1] = &m.rule_hits.With({r.id(), "true"});
    }
    next->states.push_back(state.get());
  }
  active_ = next;
  return next;
}

absl::StatusOr<std::string> RuleEngine::Reload(std::string_view caller) {
  absl::StatusOr<std::shared_ptr<const rules::RuleSet>> loaded = rules::RuleSet::LoadFile(rules_path_);
  if (!loaded.ok()) {
    LogWarn("rules_reload_failed", {{"caller", std::string(caller)},
                                    {"error", std::string(loaded.status().message())},
                                    {"live_version", active()->rules->version()}});
    return loaded.status();
  }
  const std::string version = (*loaded)->version();
  {
    // A reload is ops' word on the rules: demoted rules take part again, and
    // the guard starts a fresh window.
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, state] : states_) {
      state->demoted = false;
      std::lock_guard<std::mutex> window(state->mu);
      state->seen.clear();
      state->stopped.clear();
      state->bucket = -1;
    }
  }
  Activate(*std::move(loaded));
  LogInfo("rules_reloaded", {{"caller", std::string(caller)}, {"version", version}});
  return version;
}

std::vector<RuleStatsSnapshot> RuleEngine::Stats() const {
  std::shared_ptr<const Active> act = active();
  std::vector<RuleStatsSnapshot> out;
  for (size_t i = 0; i < act->rules->rules().size(); ++i) {
    const rules::Rule& r = act->rules->rules()[i];
    const RuleState& s = *act->states[i];
    RuleStatsSnapshot snap;
    snap.rule_id = r.id();
    snap.evaluated = s.evaluated.load();
    snap.hits = s.hits.load();
    snap.demoted = s.demoted.load();
    snap.shadow = r.shadow() || snap.demoted;
    out.push_back(std::move(snap));
  }
  return out;
}

FraudAction FraudActionOf(Action a) {
  switch (a) {
    case Action::kAllow: return recharge::v1::FRAUD_ACTION_ALLOW;
    case Action::kReview:
    case Action::kFlagSeller: return recharge::v1::FRAUD_ACTION_REVIEW;
    case Action::kBlock: return recharge::v1::FRAUD_ACTION_BLOCK;
  }
  return recharge::v1::FRAUD_ACTION_UNSPECIFIED;
}

std::optional<LinkUpdate> BuildLinkUpdate(const rules::RuleSet& rs, const FraudInput& input,
                                          const rules::EvalContext& ctx) {
  if (!rs.links().enabled() || input.seller_id.empty()) return std::nullopt;
  LinkUpdate links;
  links.seller_id = input.seller_id;
  links.window = rs.links().window;
  for (rules::Field f : rs.links().by) {
    const std::string_view value = ctx.string(f);
    if (!value.empty()) {
      links.instruments.push_back({std::string(rules::FieldName(f)), std::string(value)});
    }
  }
  return links;
}

std::vector<CounterUpdate> BuildCounterUpdates(const rules::RuleSet& rs, const FraudInput& input,
                                               CounterEvent event, const CounterKeyFn& key_of,
                                               std::vector<int>* index) {
  rules::EvalContext ctx;
  rules::FillEvalContext(input, &ctx);
  std::vector<CounterUpdate> out;
  index->assign(rs.counters().size(), -1);
  for (size_t i = 0; i < rs.counters().size(); ++i) {
    const rules::CounterSpec& spec = rs.counters()[i];
    if (event != CounterEvent::kRequest && spec.on != event) continue;
    const std::string_view per = ctx.string(spec.per);
    if (per.empty()) continue;  // neither updated nor read: reads as 0
    CounterUpdate u;
    u.key = key_of(std::string(rules::FieldName(spec.per)), std::string(per), spec.name);
    u.window = spec.window;
    u.buckets = spec.buckets;
    u.update = spec.on == event;
    if (u.update && spec.when && !spec.when->Matches(ctx)) u.update = false;
    if (u.update && spec.only_if) {
      const rules::CounterGate& g = *spec.only_if;
      const int at = (*index)[g.counter];
      if (at < 0) {
        // The earlier counter is not kept for this request: it reads as 0.
        u.update = rules::Compare(0, g.op, g.value);
      } else {
        u.gate = StrCat(at + 1, " ", rules::CompareOpName(g.op), " ", FormatNumber(g.value));
      }
    }
    switch (spec.kind) {
      case rules::CounterKind::kCount:
        u.kind = CounterUpdate::Kind::kCount;
        u.value = "1";
        break;
      case rules::CounterKind::kSum:
        u.kind = CounterUpdate::Kind::kSum;
        u.value = FormatNumber(ctx.number(*spec.value_field));
        break;
      case rules::CounterKind::kDistinct:
        u.kind = CounterUpdate::Kind::kDistinct;
        u.value = std::string(ctx.string(*spec.value_field));
        if (u.value.empty()) u.update = false;  // nothing to count (no card on a PayPal buy)
        break;
    }
    (*index)[i] = static_cast<int>(out.size());
    out.push_back(std::move(u));
  }
  return out;
}

std::vector<CounterUpdate> RuleEngine::CounterUpdates(const rules::RuleSet& rs, const FraudInput& input,
                                                      CounterEvent event, std::vector<int>* index) const {
  return BuildCounterUpdates(
      rs, input, event,
      [this](const std::string& field, const std::string& value, const std::string& name) {
        return store_.CounterKey(field, value, name);
      },
      index);
}

bool RuleEngine::GuardRecord(RuleState& state, const rules::BlastRadius& br, double max_share,
                             bool stopped) {
  const int64_t width = std::max<int64_t>(1, br.window.count() / kGuardBuckets);
  const int64_t bucket = NowMs() / width;
  std::lock_guard<std::mutex> lock(state.mu);
  if (state.seen.empty()) {
    state.seen.assign(kGuardBuckets, 0);
    state.stopped.assign(kGuardBuckets, 0);
  }
  if (state.bucket != bucket) {
    // Clear the buckets that fell out of the window since the last request.
    for (int64_t b = std::max(state.bucket + 1, bucket - kGuardBuckets + 1); b <= bucket; ++b) {
      state.seen[b % kGuardBuckets] = 0;
      state.stopped[b % kGuardBuckets] = 0;
    }
    state.bucket = bucket;
  }
  state.seen[bucket % kGuardBuckets] += 1;
  state.stopped[bucket % kGuardBuckets] += stopped ? 1 : 0;
  int64_t seen = 0, stops = 0;
  for (int i = 0; i < kGuardBuckets; ++i) {
    seen += state.seen[i];
    stops += state.stopped[i];
  }
  return seen >= br.min_requests && static_cast<double>(stops) > max_share * static_cast<double>(seen);
}

asio::awaitable<FraudAssessment> RuleEngine::Assess(const FraudInput& input) {
  std::shared_ptr<const Active> act = active();  // this call's rule set, whatever reloads do
  const rules::RuleSet& rs = *act->rules;
  FraudAssessment a;
  a.set_rules_version(rs.version());

  std::vector<int> index;
  std::vector<CounterUpdate> updates = CounterUpdates(rs, input, CounterEvent::kRequest, &index);
  std::vector<std::string> checks;
  int flag_at = -1, card_at = -1, device_at = -1;
  if (!input.seller_id.empty()) {
    flag_at = static_cast<int>(checks.size());
    checks.push_back(store_.SellerFlagKey(input.seller_id));
  }
  if (!input.card_fingerprint.empty()) {
    card_at = static_cast<int>(checks.size());
    checks.push_back(store_.CardBlockKey(input.card_fingerprint));
  }
  if (!input.device_id.empty()) {
    device_at = static_cast<int>(checks.size());
    checks.push_back(store_.DeviceBlockKey(input.device_id));
  }
  // The request's fields: the instruments that link sellers, then the rules.
  rules::EvalContext ctx;
  rules::FillEvalContext(input, &ctx);
  const std::optional<LinkUpdate> links = BuildLinkUpdate(rs, input, ctx);
  const auto round_trip_started = std::chrono::steady_clock::now();
  const auto decided_at = input.at_ms != 0
                              ? std::chrono::system_clock::time_point(std::chrono::milliseconds(input.at_ms))
                              : std::chrono::system_clock::now();
  absl::StatusOr<CounterReadout> readout =
      co_await store_.UpdateAndRead(updates, checks, decided_at, links);
  Metrics().fraud_seconds.With({}).Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - round_trip_started).count());
  if (!readout.ok()) {
    ++degraded_;
    Metrics().fraud_degraded.With({}).Inc();
    Metrics().redis_errors.With({}).Inc();
    const bool open = rs.fail_mode() == rules::FailMode::kOpen;
    LogWarn("fraud_degraded", {{"error", std::string(readout.status().message())},
                               {"fail_mode", std::string(rules::FailModeName(rs.fail_mode()))}});
    a.set_degraded(true);
    a.set_decision(open ? recharge::v1::FRAUD_ACTION_ALLOW : recharge::v1::FRAUD_ACTION_REVIEW);
    co_return a;
  }

  std::vector<double> values(rs.counters().size(), 0.0);
  for (size_t i = 0; i < values.size(); ++i) {
    if (index[i] >= 0) values[i] = readout->values[index[i]];
  }
  ctx.counters = values;
  ctx.seller_flagged = flag_at >= 0 && readout->exists[flag_at];
  ctx.card_blocked = card_at >= 0 && readout->exists[card_at];
  ctx.device_blocked = device_at >= 0 && readout->exists[device_at];

  rules::RuleMask demoted;
  for (size_t i = 0; i < act->states.size(); ++i) demoted.set(i, act->states[i]->demoted.load());
  rules::EvalResult result;
  rs.Evaluate(ctx, &result, &demoted);

  std::vector<bool> hit(rs.rules().size(), false);
  for (uint16_t i : result.enforced) hit[i] = true;
  for (uint16_t i : result.shadow) hit[i] = true;
  for (size_t i = 0; i < rs.rules().size(); ++i) {
    RuleState& s = *act->states[i];
    ++s.evaluated;
    s.evaluated_metric->Inc();
    const rules::Rule& rule = rs.rules()[i];
    if (hit[i]) {
      ++s.hits;
      s.hit_metric[rule.shadow() || demoted.test(i) ? 1 : 0]->Inc();
    }
    // The guard watches the rules that block: a review keeps the sale open.
    if (rule.action() != Action::kBlock || rule.shadow() || demoted.test(i)) continue;
    const bool stopped = hit[i];
    if (GuardRecord(s, rs.blast_radius(), rule.max_block_share(), stopped) &&
        !s.demoted.exchange(true)) {
      ++demotions_;
      Metrics().rule_demotions.With({}).Inc();
      LogWarn("rule_demoted_to_shadow",
              {{"rule_id", rule.id()},
               {"reason", StrCat("blocks more than ",
                                 static_cast<int>(rule.max_block_share() * 100 + 0.5),
                                 "% of the requests of the blast-radius window")}});
    }
  }

  for (uint16_t i : result.enforced) {
    const rules::Rule& r = rs.rules()[i];
    recharge::v1::RuleHit* h = a.add_hits();
    h->set_rule_id(r.id());
    h->set_action(FraudActionOf(r.action()));
    h->set_reason(r.reason());
  }
  for (uint16_t i : result.shadow) {
    const rules::Rule& r = rs.rules()[i];
    recharge::v1::RuleHit* h = a.add_hits();
    h->set_rule_id(r.id());
    h->set_action(FraudActionOf(r.action()));
    h->set_reason(r.reason());
    h->set_shadow(true);
  }
  a.set_decision(FraudActionOf(result.decision.action));
  bool flagged = ctx.seller_flagged;
  if (result.decision.flag_seller && !input.seller_id.empty()) {
    const rules::Rule& r = rs.rules()[result.decision.flag_rule];
    const int64_t now = NowMs();
    SellerFlag flag{input.seller_id, r.id(), r.reason(), now, now + result.decision.flag_ttl.count()};
    absl::Status s = co_await store_.FlagSeller(flag);
    if (s.ok()) {
      flagged = true;
      LogInfo("seller_flagged", {{"seller_id", input.seller_id}, {"rule_id", r.id()}});
    } else {
      LogWarn("seller_flag_failed", {{"seller_id", input.seller_id}, {"error", std::string(s.message())}});
    }
  }
  // Rules with flag_linked flag the sellers linked to this one by this
  // request's instruments, once: when this seller is flagged here first.
  if (result.decision.flag_seller && !ctx.seller_flagged && links) {
    for (uint16_t i : result.enforced) {
      const rules::Rule& r = rs.rules()[i];
      if (!r.flag_linked()) continue;
      std::vector<std::string> done;
      for (size_t j = 0; j < links->instruments.size() && j < readout->linked.size(); ++j) {
        for (const std::string& other : readout->linked[j]) {
          if (std::find(done.begin(), done.end(), other) != done.end()) continue;
          done.push_back(other);
          const int64_t now = NowMs();
          SellerFlag flag{other, r.id(),
                          StrCat(r.reason(), " (linked to seller ", input.seller_id,
                                 " by a shared ", LinkKindName(links->instruments[j].kind), ")"),
                          now, now + r.flag_ttl().count()};
          absl::Status s = co_await store_.FlagSeller(flag);
          if (s.ok()) {
            LogInfo("seller_flagged", {{"seller_id", other},
                                       {"rule_id", r.id()},
                                       {"linked_to", input.seller_id},
                                       {"by", links->instruments[j].kind}});
          } else {
            LogWarn("seller_flag_failed", {{"seller_id", other}, {"error", std::string(s.message())}});
          }
        }
      }
    }
  }
  a.set_seller_flagged(flagged);
  co_return a;
}

void RuleEngine::OnDeclined(const FraudInput& input, const asio::any_io_executor& executor) {
  std::shared_ptr<const Active> act = active();
  std::vector<int> index;
  auto updates = std::make_shared<std::vector<CounterUpdate>>(
      CounterUpdates(*act->rules, input, CounterEvent::kDecline, &index));
  if (updates->empty()) return;
  auto task = [this, updates]() -> asio::awaitable<void> {
    absl::Status s = co_await store_.Increment(*updates, std::chrono::system_clock::now());
    if (!s.ok()) LogWarn("decline_count_failed", {{"error", std::string(s.message())}});
  };
  asio::co_spawn(executor, std::move(task), asio::detached);
}

asio::awaitable<absl::StatusOr<RuleEngine::ChargebackResult>> RuleEngine::RecordChargeback(
    const FraudInput& input, bool count) {
  std::shared_ptr<const Active> act = active();
  const rules::RuleSet& rs = *act->rules;
  ChargebackResult out;
  if (!input.card_fingerprint.empty()) {
    absl::Status s = co_await store_.Block(store_.CardBlockKey(input.card_fingerprint), kChargebackBlock);
    if (!s.ok()) co_return s;
    out.blocked.push_back("card_fingerprint");
  }
  if (!input.device_id.empty()) {
    absl::Status s = co_await store_.Block(store_.DeviceBlockKey(input.device_id), kChargebackBlock);
    if (!s.ok()) co_return s;
    out.blocked.push_back("device_id");
  }
  // Count the chargeback, read every counter of the seller's request, and
  // let the flag_seller rules decide on the new figures.
  std::vector<int> index;
  std::vector<CounterUpdate> updates = CounterUpdates(rs, input, CounterEvent::kRequest, &index);
  for (size_t i = 0; i < rs.counters().size(); ++i) {
    if (index[i] >= 0) {
      updates[index[i]].update = count && rs.counters()[i].on == CounterEvent::kChargeback;
    }
  }
  std::vector<std::string> checks;
  if (!input.seller_id.empty()) checks.push_back(store_.SellerFlagKey(input.seller_id));
  absl::StatusOr<CounterReadout> readout =
      co_await store_.UpdateAndRead(updates, checks, std::chrono::system_clock::now());
  if (!readout.ok()) co_return readout.status();
  std::vector<double> values(rs.counters().size(), 0.0);
  for (size_t i = 0; i < values.size(); ++i) {
    if (index[i] >= 0) values[i] = readout->values[index[i]];
  }
  rules::EvalContext ctx;
  rules::FillEvalContext(input, &ctx);
  ctx.counters = values;
  ctx.seller_flagged = !checks.empty() && readout->exists[0];
  ctx.card_blocked = !input.card_fingerprint.empty();
  ctx.device_blocked = !input.device_id.empty();
  rules::EvalResult result;
  rs.Evaluate(ctx, &result);
  out.seller_flagged = ctx.seller_flagged;
  if (result.decision.flag_seller && !input.seller_id.empty()) {
    const rules::Rule& r = rs.rules()[result.decision.flag_rule];
    const int64_t now = NowMs();
    SellerFlag flag{input.seller_id, r.id(), r.reason(), now, now + result.decision.flag_ttl.count()};
    absl::Status s = co_await store_.FlagSeller(flag);
    if (!s.ok()) co_return s;
    out.seller_flagged = true;
  }
  co_return out;
}

}  // namespace recharge
