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

std::optional<FraudInput> FraudInput::FromJson(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto str = [&](const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  FraudInput in;
  in.user_id = str("user_id");
  in.seller_id = str("seller_id");
  in.ip = str("ip");
  in.device_id = str("device_id");
  in.card_fingerprint = str("card_fingerprint");
  in.instrument_fingerprint = str("instrument_fingerprint");
  in.payment_method = str("payment_method");
  in.wallet_provider = str("wallet_provider");
  in.region = str("region");
  in.currency = str("currency");
  in.package_id = str("package_id");
  if (j.contains("coins") && j["coins"].is_number()) in.coins = j["coins"].get<int64_t>();
  if (j.contains("amount_usd") && j["amount_usd"].is_number()) {
    in.amount_usd_cents = static_cast<int64_t>(j["amount_usd"].get<double>() * 100.0 + 0.5);
  }
  return in;
}

asio::awaitable<recharge::v1::FraudAssessment> AllowAllFilter::Assess(const FraudInput&) {
  recharge::v1::FraudAssessment a;
  a.set_decision(recharge::v1::FRAUD_ACTION_ALLOW);
  a.set_rules_version("allow-all");
  co_return a;
}

}  // namespace recharge
