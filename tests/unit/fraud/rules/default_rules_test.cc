// The shipped configs/fraud_rules.yaml: it loads, declares the counters the
// engine relies on, and its rules decide the acceptance scenarios of issue 4
// (reseller topping up 32 accounts, 40 honest buyers, one card on 6
// accounts) and each threshold at its edge.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "fraud/rules/fraud_input_context.h"
#include "fraud/rules/rule_set.h"

namespace recharge::rules {
namespace {

std::shared_ptr<const RuleSet> LoadDefaults() {
  auto set = RuleSet::LoadFile(RECHARGE_SOURCE_DIR "/configs/fraud_rules.yaml");
  EXPECT_TRUE(set.ok()) << set.status();
  return set.ok() ? *set : nullptr;
}

// One request: the FraudInput, the counter values by name (absent: 0) and
// the flags, evaluated against the default rules.
class Request {
 public:
  explicit Request(const RuleSet& set) : set_(set) {
    input.user_id = "u-1";
    input.ip = "203.0.113.7";
    input.device_id = "dev-1";
    input.card_fingerprint = "cf-1";
    input.instrument_fingerprint = "cf-1";
    input.payment_method = "card";
    input.region = "US";
    input.currency = "USD";
    input.package_id = "coins_100";
    input.coins = 100;
    input.amount_usd_cents = 99;
    // What an honest buyer's first recharge reads (the request included).
    counters = {{"user_recharges_1h", 1},
                {"user_spend_usd_24h", 0.99},
                {"card_users_24h", 1},
                {"ip_users_1h", 1},
                {"device_users_24h", 1}};
  }

  // The counters of a seller's n-th recharge for n different accounts,
  // paid with n different cards from one device and one IP.
  void AsResellerRecharge(int n) {
    input.seller_id = "seller-1";
    input.user_id = "acct-" + std::to_string(n);
    input.card_fingerprint = "card-" + std::to_string(n);
    counters["seller_users_1h"] = n;
    counters["seller_cards_1h"] = n;
    counters["seller_recharges_1h"] = n;
    counters["ip_users_1h"] = n;
    counters["device_users_24h"] = n;
  }

  const EvalResult& Evaluate() {
    values_.assign(set_.counters().size(), 0.0);
    for (const auto& [name, value] : counters) {
      std::optional<size_t> index = set_.counter_index(name);
      EXPECT_TRUE(index.has_value()) << name;
      if (index) values_[*index] = value;
    }
    FillEvalContext(input, &context_);
    context_.counters = values_;
    context_.seller_flagged = seller_flagged;
    context_.card_blocked = card_blocked;
    context_.device_blocked = device_blocked;
    set_.Evaluate(context_, &result_);
    return result_;
  }

  // The id of the rule that decided, or "" when nothing did.
  std::string DecidingRule() const {
    return result_.decision.rule < 0 ? "" : set_.rules()[result_.decision.rule].id();
  }
  std::set<std::string> ShadowHits() const {
    std::set<std::string> ids;
    for (uint16_t i : result_.shadow) ids.insert(set_.rules()[i].id());
    return ids;
  }

  FraudInput input;
  std::map<std::string, double> counters;
  bool seller_flagged = false;
  bool card_blocked = false;
  bool device_blocked = false;

 private:
  const RuleSet& set_;
  std::vector<double> values_;
  EvalContext context_;
  EvalResult result_;
};

TEST(DefaultRules, LoadAndDeclareTheCountersTheEngineUses) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(set->version(), "2026-11-25.1");
  EXPECT_EQ(set->fail_mode(), FailMode::kOpen);
  EXPECT_EQ(set->blast_radius().max_block_share, 0.2);
  EXPECT_EQ(set->blast_radius().window, std::chrono::minutes(10));
  EXPECT_EQ(set->blast_radius().min_requests, 50);
  struct Expected {
    const char* name;
    CounterKind kind;
    Field per;
    CounterEvent on;
  };
  for (const Expected& e : {
           Expected{"seller_users_1h", CounterKind::kDistinct, Field::kSellerId,
                    CounterEvent::kRequest},
           Expected{"seller_cards_1h", CounterKind::kDistinct, Field::kSellerId,
                    CounterEvent::kRequest},
           Expected{"card_users_24h", CounterKind::kDistinct, Field::kCardFingerprint,
                    CounterEvent::kRequest},
           Expected{"seller_recharges_1h", CounterKind::kCount, Field::kSellerId,
                    CounterEvent::kRequest},
           Expected{"seller_declines_1h", CounterKind::kCount, Field::kSellerId,
                    CounterEvent::kDecline},
           Expected{"seller_chargebacks_30d", CounterKind::kCount, Field::kSellerId,
                    CounterEvent::kChargeback},
           Expected{"ip_users_1h", CounterKind::kDistinct, Field::kIp, CounterEvent::kRequest},
           Expected{"device_users_24h", CounterKind::kDistinct, Field::kDeviceId,
                    CounterEvent::kRequest},
       }) {
    std::optional<size_t> i = set->counter_index(e.name);
    ASSERT_TRUE(i.has_value()) << e.name;
    const CounterSpec& c = set->counters()[*i];
    EXPECT_EQ(c.kind, e.kind) << e.name;
    EXPECT_EQ(c.per, e.per) << e.name;
    EXPECT_EQ(c.on, e.on) << e.name;
  }
}

TEST(DefaultRules, ResellerGetsTwentyApprovedAndIsFlaggedByTheThirtieth) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  bool flagged = false;
  int flagged_at = 0;
  for (int n = 1; n <= 32; ++n) {
    Request r(*set);
    r.AsResellerRecharge(n);
    r.seller_flagged = flagged;
    const EvalResult& result = r.Evaluate();
    if (n <= 20) {
      EXPECT_EQ(result.decision.action, Action::kAllow)
          << "recharge " << n << " by " << r.DecidingRule();
    }
    if (result.decision.flag_seller && !flagged) {
      flagged = true;
      flagged_at = n;
      EXPECT_EQ(result.decision.action, Action::kReview);
    }
    if (n >= 30) {
      EXPECT_NE(result.decision.action, Action::kAllow) << "recharge " << n;
    }
  }
  EXPECT_TRUE(flagged);
  EXPECT_EQ(flagged_at, 21);  // seller-many-cards: more than 20 cards
}

TEST(DefaultRules, FortyHonestBuyersAreAllowed) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  for (int n = 1; n <= 40; ++n) {
    Request r(*set);
    r.input.user_id = "buyer-" + std::to_string(n);
    r.input.ip = "198.51.100." + std::to_string(n);
    r.input.card_fingerprint = "card-" + std::to_string(n);
    const EvalResult& result = r.Evaluate();
    EXPECT_EQ(result.decision.action, Action::kAllow) << n;
    EXPECT_TRUE(result.enforced.empty()) << n;
    EXPECT_TRUE(result.shadow.empty()) << n;
  }
}

TEST(DefaultRules, OneCardOnSixAccountsIsBlockedFromTheFourth) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  for (int n = 1; n <= 6; ++n) {
    Request r(*set);
    r.input.user_id = "acct-" + std::to_string(n);
    r.counters["card_users_24h"] = n;
    const EvalResult& result = r.Evaluate();
    EXPECT_EQ(result.decision.action, n <= 3 ? Action::kAllow : Action::kBlock) << n;
    if (n > 3) {
      EXPECT_EQ(r.DecidingRule(), "shared-card");
    }
  }
}

// Each threshold at its edge: the value that passes and the one that trips.
struct EdgeCase {
  const char* name = "";
  std::map<std::string, double> counters = {};
  bool seller = false;
  bool seller_flagged = false;
  bool card_blocked = false;
  bool device_blocked = false;
  Action action = Action::kAllow;
  std::string rule = {};  // the deciding rule, "" for none
  bool flag = false;
  std::string shadow_rule = {};  // a shadow hit expected, "" for none
};

class DefaultRuleEdges : public ::testing::TestWithParam<EdgeCase> {};

TEST_P(DefaultRuleEdges, Decide) {
  const EdgeCase& c = GetParam();
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  Request r(*set);
  if (c.seller) r.input.seller_id = "seller-1";
  for (const auto& [name, value] : c.counters) r.counters[name] = value;
  r.seller_flagged = c.seller_flagged;
  r.card_blocked = c.card_blocked;
  r.device_blocked = c.device_blocked;
  const EvalResult& result = r.Evaluate();
  EXPECT_EQ(ActionName(result.decision.action), ActionName(c.action));
  EXPECT_EQ(r.DecidingRule(), c.rule);
  EXPECT_EQ(result.decision.flag_seller, c.flag);
  if (c.shadow_rule.empty()) {
    EXPECT_TRUE(r.ShadowHits().empty());
  } else {
    EXPECT_EQ(r.ShadowHits(), std::set<std::string>({c.shadow_rule}));
  }
}

const EdgeCase kEdgeCases[] = {
    {.name = "SellerUsers25", .counters = {{"seller_users_1h", 25}}, .seller = true},
    {.name = "SellerUsers26",
     .counters = {{"seller_users_1h", 26}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-many-accounts",
     .flag = true},
    {.name = "SellerUsersWithoutSeller", .counters = {{"seller_users_1h", 99}}},
    {.name = "SellerCards20", .counters = {{"seller_cards_1h", 20}}, .seller = true},
    {.name = "SellerCards21",
     .counters = {{"seller_cards_1h", 21}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-many-cards",
     .flag = true},
    {.name = "FlaggedSeller",
     .seller = true,
     .seller_flagged = true,
     .action = Action::kReview,
     .rule = "flagged-seller"},
    {.name = "CardUsers3", .counters = {{"card_users_24h", 3}}},
    {.name = "CardUsers4",
     .counters = {{"card_users_24h", 4}},
     .action = Action::kBlock,
     .rule = "shared-card"},
    {.name = "Spend500", .counters = {{"user_spend_usd_24h", 500}}},
    {.name = "Spend501IsShadow",
     .counters = {{"user_spend_usd_24h", 501}},
     .shadow_rule = "daily-budget"},
    {.name = "DeclineShareBelowVolume",
     .counters = {{"seller_recharges_1h", 9}, {"seller_declines_1h", 9}},
     .seller = true},
    {.name = "DeclineShareHalf",
     .counters = {{"seller_recharges_1h", 10}, {"seller_declines_1h", 5}},
     .seller = true},
    {.name = "DeclineShareOverHalf",
     .counters = {{"seller_recharges_1h", 10}, {"seller_declines_1h", 6}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-decline-share",
     .flag = true},
    {.name = "Chargebacks2", .counters = {{"seller_chargebacks_30d", 2}}, .seller = true},
    {.name = "Chargebacks3",
     .counters = {{"seller_chargebacks_30d", 3}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-chargebacks",
     .flag = true},
    {.name = "DeviceUsers20", .counters = {{"device_users_24h", 20}}},
    {.name = "DeviceUsers21",
     .counters = {{"device_users_24h", 21}},
     .action = Action::kReview,
     .rule = "device-many-accounts"},
    {.name = "IpUsers30", .counters = {{"ip_users_1h", 30}}},
    {.name = "IpUsers31",
     .counters = {{"ip_users_1h", 31}},
     .action = Action::kReview,
     .rule = "ip-many-accounts"},
    {.name = "UserRecharges10", .counters = {{"user_recharges_1h", 10}}},
    {.name = "UserRecharges11IsShadow",
     .counters = {{"user_recharges_1h", 11}},
     .shadow_rule = "user-velocity"},
    {.name = "CardBlocked", .card_blocked = true, .action = Action::kBlock, .rule = "card-blocked"},
    {.name = "DeviceBlocked",
     .device_blocked = true,
     .action = Action::kBlock,
     .rule = "device-blocked"},
    {.name = "BlockBeatsFlag",
     .counters = {{"seller_users_1h", 30}},
     .seller = true,
     .card_blocked = true,
     .action = Action::kBlock,
     .rule = "card-blocked",
     .flag = true},
};

INSTANTIATE_TEST_SUITE_P(Thresholds, DefaultRuleEdges, ::testing::ValuesIn(kEdgeCases),
                         [](const ::testing::TestParamInfo<EdgeCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(DefaultRules, EveryRuleIsCoveredByAnEdgeCase) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  std::set<std::string> covered;
  for (const EdgeCase& c : kEdgeCases) {
    if (!c.rule.empty()) covered.insert(c.rule);
    if (!c.shadow_rule.empty()) covered.insert(c.shadow_rule);
  }
  for (const Rule& rule : set->rules()) EXPECT_EQ(covered.count(rule.id()), 1u) << rule.id();
}

TEST(FillEvalContext, CopiesEveryFieldOfTheInput) {
  FraudInput in;
  in.user_id = "u";
  in.seller_id = "s";
  in.ip = "1.2.3.4";
  in.device_id = "d";
  in.card_fingerprint = "cf";
  in.instrument_fingerprint = "if";
  in.payment_method = "card";
  in.wallet_provider = "gcash";
  in.region = "PH";
  in.currency = "PHP";
  in.package_id = "coins_65";
  in.coins = 65;
  in.amount_usd_cents = 499;
  EvalContext c;
  const double counters[] = {7};
  c.counters = counters;
  c.seller_flagged = true;
  FillEvalContext(in, &c);
  EXPECT_EQ(c.string(Field::kUserId), "u");
  EXPECT_EQ(c.string(Field::kSellerId), "s");
  EXPECT_EQ(c.string(Field::kIp), "1.2.3.4");
  EXPECT_EQ(c.string(Field::kDeviceId), "d");
  EXPECT_EQ(c.string(Field::kCardFingerprint), "cf");
  EXPECT_EQ(c.string(Field::kInstrumentFingerprint), "if");
  EXPECT_EQ(c.string(Field::kPaymentMethod), "card");
  EXPECT_EQ(c.string(Field::kWalletProvider), "gcash");
  EXPECT_EQ(c.string(Field::kRegion), "PH");
  EXPECT_EQ(c.string(Field::kCurrency), "PHP");
  EXPECT_EQ(c.string(Field::kPackageId), "coins_65");
  EXPECT_EQ(c.number(Field::kCoins), 65);
  EXPECT_EQ(c.number(Field::kAmountUsd), 4.99);
  EXPECT_EQ(c.string(Field::kUserId).data(), in.user_id.data());  // a view, not a copy
  EXPECT_EQ(c.counter(0), 7);                                     // left alone
  EXPECT_TRUE(c.seller_flagged);
}

}  // namespace
}  // namespace recharge::rules
