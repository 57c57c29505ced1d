// The shipped configs/fraud_rules.yaml: it loads, declares the counters the
// engine relies on, and its rules decide the scenarios of issues 4 and 8 (an
// honest reseller serving 60 buyers is never stopped, a ring of 60 accounts
// on 20 cards from 3 addresses is flagged within 15 recharges, a seller
// linked to others by shared cards is flagged, a card tester is blocked
// within 5 tries, 40 honest buyers pass, one card on 6 accounts is blocked
// from the 4th) and each threshold at its edge. Changed with issue 8: the
// volume-only seller rules are shadow now (an honest reseller serves many
// accounts too).
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

  // The counters of a seller's n-th recharge, the n-th account, each with
  // its own card, device and address: an honest reseller's buyers.
  void AsHonestResellerRecharge(int n) {
    input.seller_id = "seller-1";
    input.user_id = "acct-" + std::to_string(n);
    input.card_fingerprint = "card-" + std::to_string(n);
    counters["seller_users_1h"] = n;
    counters["seller_cards_1h"] = n;
    counters["seller_recharges_1h"] = n;
    counters["seller_ips_1h"] = n;
    counters["seller_devices_1h"] = n;
    counters["seller_new_account_recharges_1h"] = n;
    counters["user_recharges_30d"] = 1;
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
  EXPECT_EQ(set->version(), "2026-12-02.1");
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
           Expected{"card_sellers_24h", CounterKind::kDistinct, Field::kCardFingerprint,
                    CounterEvent::kRequest},
           Expected{"seller_ips_1h", CounterKind::kDistinct, Field::kSellerId,
                    CounterEvent::kRequest},
           Expected{"seller_shared_card_recharges_1h", CounterKind::kCount, Field::kSellerId,
                    CounterEvent::kRequest},
           Expected{"user_cards_10m", CounterKind::kDistinct, Field::kUserId,
                    CounterEvent::kRequest},
           Expected{"user_declines_10m", CounterKind::kCount, Field::kUserId,
                    CounterEvent::kDecline},
       }) {
    std::optional<size_t> i = set->counter_index(e.name);
    ASSERT_TRUE(i.has_value()) << e.name;
    const CounterSpec& c = set->counters()[*i];
    EXPECT_EQ(c.kind, e.kind) << e.name;
    EXPECT_EQ(c.per, e.per) << e.name;
    EXPECT_EQ(c.on, e.on) << e.name;
  }
}

TEST(DefaultRules, TheSharesAreGatedOnTheCountersTheyNeed) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  auto gate = [&](const char* name) -> const CounterGate& {
    const CounterSpec& c = set->counters()[*set->counter_index(name)];
    EXPECT_TRUE(c.only_if.has_value()) << name;
    return *c.only_if;
  };
  EXPECT_EQ(set->counters()[gate("seller_shared_card_recharges_1h").counter].name, "card_users_24h");
  EXPECT_EQ(gate("seller_shared_card_recharges_1h").op, CompareOp::kGt);
  EXPECT_EQ(set->counters()[gate("seller_new_account_recharges_1h").counter].name, "user_recharges_30d");
  EXPECT_EQ(gate("seller_new_account_recharges_1h").op, CompareOp::kLe);
  EXPECT_EQ(set->counters()[gate("seller_cross_card_recharges_1h").counter].name, "card_sellers_24h");
  EXPECT_EQ(set->counters()[gate("seller_cross_device_recharges_1h").counter].name, "device_sellers_24h");
  const CounterSpec& top = set->counters()[*set->counter_index("seller_top_tier_1h")];
  ASSERT_TRUE(top.when.has_value());
  EvalContext ctx;
  ctx.set_string(Field::kPackageId, "coins_6607");
  EXPECT_TRUE(top.when->Matches(ctx));
  ctx.set_string(Field::kPackageId, "coins_1321");
  EXPECT_FALSE(top.when->Matches(ctx));
}

TEST(DefaultRules, AnHonestResellerServingSixtyBuyersIsNeverStopped) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  for (int n = 1; n <= 60; ++n) {
    Request r(*set);
    r.AsHonestResellerRecharge(n);
    const EvalResult& result = r.Evaluate();
    EXPECT_EQ(result.decision.action, Action::kAllow) << "recharge " << n << " by " << r.DecidingRule();
    EXPECT_FALSE(result.decision.flag_seller) << n;
    // Volume alone is reported (shadow), never enforced.
    if (n > 25) {
      EXPECT_TRUE(r.ShadowHits().count("seller-many-accounts")) << n;
    }
  }
}

TEST(DefaultRules, ARingOfSixtyAccountsOnTwentyCardsFromThreeAddressesIsFlaggedWithinFifteen) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  int flagged_at = 0;
  for (int n = 1; n <= 60 && flagged_at == 0; ++n) {
    Request r(*set);
    r.input.seller_id = "ring-1";
    r.input.user_id = "acct-" + std::to_string(n);
    // Cards handed out round-robin from a pool of 20; accounts spread over
    // 3 addresses and 3 devices.
    r.counters["seller_users_1h"] = n;
    r.counters["seller_recharges_1h"] = n;
    r.counters["seller_cards_1h"] = std::min(n, 20);
    r.counters["seller_ips_1h"] = std::min(n, 3);
    r.counters["seller_devices_1h"] = std::min(n, 3);
    r.counters["seller_shared_card_recharges_1h"] = std::max(0, n - 20);
    r.counters["ip_users_1h"] = (n + 2) / 3;
    r.counters["device_users_24h"] = (n + 2) / 3;
    const EvalResult& result = r.Evaluate();
    if (result.decision.flag_seller) {
      flagged_at = n;
      EXPECT_EQ(result.decision.action, Action::kReview);
    }
  }
  EXPECT_GT(flagged_at, 0);
  EXPECT_LE(flagged_at, 15);
  EXPECT_EQ(flagged_at, 9);  // seller-few-addresses: 9 accounts on 3 addresses
}

TEST(DefaultRules, ASellerWhoseBuyersShareCardsWithAnotherSellersIsFlagged) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  Request first(*set);
  first.input.seller_id = "op-1";
  first.counters["seller_recharges_1h"] = 3;
  first.counters["seller_cross_card_recharges_1h"] = 1;
  EXPECT_FALSE(first.Evaluate().decision.flag_seller);
  Request second(*set);
  second.input.seller_id = "op-1";
  second.counters["seller_recharges_1h"] = 4;
  second.counters["seller_cross_card_recharges_1h"] = 2;
  EXPECT_TRUE(second.Evaluate().decision.flag_seller);
  EXPECT_EQ(second.DecidingRule(), "seller-linked");
}

TEST(DefaultRules, ACardTesterIsBlockedWithinFiveTriesAndAMistypeIsNot) {
  auto set = LoadDefaults();
  ASSERT_NE(set, nullptr);
  int blocked_at = 0;
  for (int n = 1; n <= 10 && blocked_at == 0; ++n) {
    Request r(*set);
    r.counters["user_cards_10m"] = n;                       // a new card each try
    r.counters["user_declines_10m"] = n - 1;                // every earlier try declined
    r.counters["device_cards_10m"] = n;
    r.counters["device_declines_10m"] = n - 1;
    if (r.Evaluate().decision.action == Action::kBlock) blocked_at = n;
  }
  EXPECT_GT(blocked_at, 0);
  EXPECT_LE(blocked_at, 5);
  // A buyer whose card was declined once and who pays with another card.
  Request mistype(*set);
  mistype.counters["user_cards_10m"] = 2;
  mistype.counters["user_declines_10m"] = 1;
  mistype.counters["device_cards_10m"] = 2;
  mistype.counters["device_declines_10m"] = 1;
  EXPECT_EQ(mistype.Evaluate().decision.action, Action::kAllow);
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
    {.name = "SellerUsers25", .counters = {{"seller_users_1h", 25}, {"seller_ips_1h", 25}, {"seller_devices_1h", 25}}, .seller = true},
    {.name = "SellerUsers26IsShadow",
     .counters = {{"seller_users_1h", 26}, {"seller_ips_1h", 26}, {"seller_devices_1h", 26}},
     .seller = true,
     .shadow_rule = "seller-many-accounts"},
    {.name = "SellerCards20", .counters = {{"seller_cards_1h", 20}}, .seller = true},
    {.name = "SellerCards21IsShadow",
     .counters = {{"seller_cards_1h", 21}},
     .seller = true,
     .shadow_rule = "seller-many-cards"},
    {.name = "SharedCardShareBelowVolume",
     .counters = {{"seller_recharges_1h", 5}, {"seller_shared_card_recharges_1h", 5}},
     .seller = true},
    {.name = "SharedCardShareUnder30Percent",
     .counters = {{"seller_recharges_1h", 10}, {"seller_shared_card_recharges_1h", 2}},
     .seller = true},
    {.name = "SharedCardShare30Percent",
     .counters = {{"seller_recharges_1h", 10}, {"seller_shared_card_recharges_1h", 3}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-shared-cards",
     .flag = true},
    {.name = "FewAddressesBelowVolume",
     .counters = {{"seller_users_1h", 7}, {"seller_ips_1h", 1}, {"seller_devices_1h", 7}},
     .seller = true},
    {.name = "AccountsPerAddressUnder3",
     .counters = {{"seller_users_1h", 8}, {"seller_ips_1h", 3}, {"seller_devices_1h", 8}},
     .seller = true},
    {.name = "AccountsPerAddress3",
     .counters = {{"seller_users_1h", 9}, {"seller_ips_1h", 3}, {"seller_devices_1h", 9}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-few-addresses",
     .flag = true},
    {.name = "AccountsPerDevice3",
     .counters = {{"seller_users_1h", 9}, {"seller_ips_1h", 9}, {"seller_devices_1h", 3}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-few-devices",
     .flag = true},
    {.name = "CrossCardOnce", .counters = {{"seller_cross_card_recharges_1h", 1}, {"seller_cross_device_recharges_1h", 1}}, .seller = true},
    {.name = "CrossDeviceTwice",
     .counters = {{"seller_cross_device_recharges_1h", 2}},
     .seller = true,
     .action = Action::kReview,
     .rule = "seller-linked",
     .flag = true},
    {.name = "NewAccountsTopTierIsShadow",
     .counters = {{"seller_recharges_1h", 10}, {"seller_users_1h", 1}, {"seller_ips_1h", 1}, {"seller_devices_1h", 1},
                  {"seller_new_account_recharges_1h", 8}, {"seller_top_tier_1h", 6}},
     .seller = true,
     .shadow_rule = "seller-new-accounts-top-tier"},
    {.name = "UserCards3", .counters = {{"user_cards_10m", 3}, {"user_declines_10m", 2}}},
    {.name = "UserCards4",
     .counters = {{"user_cards_10m", 4}},
     .action = Action::kBlock,
     .rule = "card-testing-account"},
    {.name = "UserDeclines3",
     .counters = {{"user_declines_10m", 3}},
     .action = Action::kBlock,
     .rule = "card-testing-account"},
    {.name = "DeviceCards6", .counters = {{"device_cards_10m", 6}, {"device_declines_10m", 4}}},
    {.name = "DeviceCards7",
     .counters = {{"device_cards_10m", 7}},
     .action = Action::kBlock,
     .rule = "card-testing-device"},
    {.name = "DeviceDeclines5",
     .counters = {{"device_declines_10m", 5}},
     .action = Action::kBlock,
     .rule = "card-testing-device"},
    {.name = "IpCards9", .counters = {{"ip_cards_10m", 9}, {"ip_declines_10m", 4}}},
    {.name = "IpCards10",
     .counters = {{"ip_cards_10m", 10}},
     .action = Action::kBlock,
     .rule = "card-testing-address"},
    {.name = "IpDeclines5",
     .counters = {{"ip_declines_10m", 5}},
     .action = Action::kBlock,
     .rule = "card-testing-address"},
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
     .counters = {{"seller_users_1h", 9}, {"seller_ips_1h", 2}, {"seller_devices_1h", 9}},
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
