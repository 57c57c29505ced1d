// FraudInput's JSON form: what the decision log keeps and backtests read back.
#include "fraud/fraud_filter.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace recharge {
namespace {

FraudInput Sample() {
  FraudInput in;
  in.user_id = "user-1";
  in.seller_id = "seller \"quoted\" \\ back";
  in.ip = "203.0.113.7";
  in.device_id = "dev\x01\ttab\nline";
  in.card_fingerprint = std::string(64, 'a');
  in.instrument_fingerprint = std::string(64, 'a');
  in.payment_method = "card";
  in.region = "PH";
  in.currency = "PHP";
  in.package_id = "coins_6607";
  in.coins = 6607;
  in.amount_usd_cents = 9999;
  return in;
}

TEST(FraudInputJson, IsAJsonObjectWithEveryField) {
  const nlohmann::json j = nlohmann::json::parse(Sample().ToJson());
  EXPECT_EQ(j["seller_id"], "seller \"quoted\" \\ back");
  EXPECT_EQ(j["device_id"], "dev\x01\ttab\nline");
  EXPECT_EQ(j["wallet_provider"], "");
  EXPECT_EQ(j["coins"], 6607);
  EXPECT_DOUBLE_EQ(j["amount_usd"].get<double>(), 99.99);
  EXPECT_EQ(j.size(), 13u);
}

TEST(FraudInputJson, RoundTripsThroughFromJson) {
  for (int64_t cents : {0, 5, 99, 100, 9999, 123456}) {
    FraudInput in = Sample();
    in.amount_usd_cents = cents;
    const std::optional<FraudInput> back = FraudInput::FromJson(in.ToJson());
    ASSERT_TRUE(back.has_value()) << in.ToJson();
    EXPECT_EQ(back->seller_id, in.seller_id);
    EXPECT_EQ(back->device_id, in.device_id);
    EXPECT_EQ(back->card_fingerprint, in.card_fingerprint);
    EXPECT_EQ(back->package_id, in.package_id);
    EXPECT_EQ(back->coins, in.coins);
    EXPECT_EQ(back->amount_usd_cents, cents) << in.ToJson();
  }
}

}  // namespace
}  // namespace recharge
