// RuleEngine::CounterUpdates: what one request asks of Redis — which
// counters it updates or only reads, and the in-round-trip gate of
// `only_if` — for counters with `when:` and `only_if:`. No Redis: the store
// is only asked for key names.
#include <gtest/gtest.h>

#include "fraud/rule_engine.h"
#include "fraud/rules/rule_set.h"

namespace recharge {
namespace {

constexpr const char* kRules = R"(version: "gates"
counters:
  user_recharges_30d: { count: true, per: user_id, window: 30d, buckets: 30 }
  card_users_24h: { distinct: user_id, per: card_fingerprint, window: 24h }
  seller_shared: { count: true, per: seller_id, window: 1h, only_if: card_users_24h > 1 }
  seller_new: { count: true, per: seller_id, window: 1h, only_if: user_recharges_30d <= 1 }
  seller_top: { count: true, per: seller_id, window: 1h, when: 'package_id in ["coins_6607"]' }
  seller_declines: { count: true, per: seller_id, window: 1h, on: decline }
)";

class CounterUpdatesTest : public ::testing::Test {
 protected:
  CounterUpdatesTest()
      : redis_(io_.get_executor(), RedisClient::Options{"127.0.0.1", 1, 1}),
        store_(redis_, "t", std::chrono::milliseconds(50)) {
    auto rs = rules::RuleSet::Parse(kRules, "gates.yaml");
    EXPECT_TRUE(rs.ok()) << rs.status();
    rules_ = *rs;
    engine_ = std::make_unique<RuleEngine>(store_, rules_, "gates.yaml");
  }

  // The update for counter `name`, or null if the request leaves it out.
  const CounterUpdate* Find(const std::vector<CounterUpdate>& ups, const std::vector<int>& index,
                            const std::string& name) {
    const int at = index[*rules_->counter_index(name)];
    return at < 0 ? nullptr : &ups[at];
  }

  asio::io_context io_;
  RedisClient redis_;
  RedisCounterStore store_;
  std::shared_ptr<const rules::RuleSet> rules_;
  std::unique_ptr<RuleEngine> engine_;
};

TEST_F(CounterUpdatesTest, OnlyIfBecomesAGateOnTheEarlierCountersPosition) {
  FraudInput in;
  in.user_id = "u1";
  in.seller_id = "s1";
  in.card_fingerprint = "cf1";
  in.package_id = "coins_65";
  std::vector<int> index;
  auto ups = engine_->CounterUpdates(*rules_, in, rules::CounterEvent::kRequest, &index);
  ASSERT_EQ(ups.size(), 6u);  // every counter: the decline counter is read, not updated
  const CounterUpdate* shared = Find(ups, index, "seller_shared");
  ASSERT_NE(shared, nullptr);
  // card_users_24h is the 2nd counter of the call: "2 > 1".
  EXPECT_EQ(shared->gate, "2 > 1.000000");
  EXPECT_TRUE(shared->update);
  EXPECT_EQ(Find(ups, index, "seller_new")->gate, "1 <= 1.000000");
  EXPECT_FALSE(Find(ups, index, "seller_declines")->update);
  EXPECT_TRUE(Find(ups, index, "seller_declines")->gate.empty());
}

TEST_F(CounterUpdatesTest, WhenFalseReadsWithoutUpdating) {
  FraudInput in;
  in.user_id = "u1";
  in.seller_id = "s1";
  in.package_id = "coins_65";
  std::vector<int> index;
  auto ups = engine_->CounterUpdates(*rules_, in, rules::CounterEvent::kRequest, &index);
  const CounterUpdate* top = Find(ups, index, "seller_top");
  ASSERT_NE(top, nullptr);
  EXPECT_FALSE(top->update);
  in.package_id = "coins_6607";
  ups = engine_->CounterUpdates(*rules_, in, rules::CounterEvent::kRequest, &index);
  EXPECT_TRUE(Find(ups, index, "seller_top")->update);
}

TEST_F(CounterUpdatesTest, AGateOnACounterTheRequestDoesNotKeepComparesZero) {
  // No card (a PayPal payment): card_users_24h is left out and reads 0, so
  // "card_users_24h > 1" is false and seller_shared is not updated, while
  // "user_recharges_30d <= 1" keeps its gate.
  FraudInput in;
  in.user_id = "u1";
  in.seller_id = "s1";
  std::vector<int> index;
  auto ups = engine_->CounterUpdates(*rules_, in, rules::CounterEvent::kRequest, &index);
  EXPECT_EQ(Find(ups, index, "card_users_24h"), nullptr);
  const CounterUpdate* shared = Find(ups, index, "seller_shared");
  ASSERT_NE(shared, nullptr);
  EXPECT_FALSE(shared->update);
  EXPECT_TRUE(shared->gate.empty());
  EXPECT_EQ(Find(ups, index, "seller_new")->gate, "1 <= 1.000000");
}

}  // namespace
}  // namespace recharge
