#include "fraud/fraud_filter.h"

#include <nlohmann/json.hpp>

namespace recharge {

std::string FraudInput::ToJson() const {
  nlohmann::json j = {
      {"user_id", user_id},
      {"seller_id", seller_id},
      {"ip", ip},
      {"device_id", device_id},
      {"card_fingerprint", card_fingerprint},
      {"instrument_fingerprint", instrument_fingerprint},
      {"payment_method", payment_method},
      {"wallet_provider", wallet_provider},
      {"region", region},
      {"currency", currency},
      {"package_id", package_id},
      {"coins", coins},
      {"amount_usd", static_cast<double>(amount_usd_cents) / 100.0},
  };
  return j.dump();
}

asio::awaitable<recharge::v1::FraudAssessment> AllowAllFilter::Assess(const FraudInput&) {
  recharge::v1::FraudAssessment a;
  a.set_decision(recharge::v1::FRAUD_ACTION_ALLOW);
  a.set_rules_version("allow-all");
  co_return a;
}

}  // namespace recharge
