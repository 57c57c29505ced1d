#include "fraud/fraud_filter.h"

#include <nlohmann/json.hpp>

namespace recharge {

namespace {

// Appends "name":"value" (JSON-escaped) and a comma.
void AppendJsonString(std::string* out, std::string_view name, std::string_view value) {
  out->push_back('"');
  out->append(name);
  out->append("\":\"");
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (c < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out->append("\\u00");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(ch);  // UTF-8 passes through (validated on the way in)
    }
  }
  out->append("\",");
}

}  // namespace

// Built by hand: it runs on every recharge, and a JSON object tree costs a
// dozen allocations where one string suffices.
std::string FraudInput::ToJson() const {
  std::string out;
  out.reserve(256 + user_id.size() + seller_id.size() + device_id.size() + 2 * card_fingerprint.size());
  out.push_back('{');
  AppendJsonString(&out, "user_id", user_id);
  AppendJsonString(&out, "seller_id", seller_id);
  AppendJsonString(&out, "ip", ip);
  AppendJsonString(&out, "device_id", device_id);
  AppendJsonString(&out, "card_fingerprint", card_fingerprint);
  AppendJsonString(&out, "instrument_fingerprint", instrument_fingerprint);
  AppendJsonString(&out, "payment_method", payment_method);
  AppendJsonString(&out, "wallet_provider", wallet_provider);
  AppendJsonString(&out, "region", region);
  AppendJsonString(&out, "currency", currency);
  AppendJsonString(&out, "package_id", package_id);
  out.append("\"coins\":");
  out.append(std::to_string(coins));
  // amount_usd as a decimal number of dollars, exact in cents.
  out.append(",\"amount_usd\":");
  const int64_t cents = amount_usd_cents < 0 ? -amount_usd_cents : amount_usd_cents;
  if (amount_usd_cents < 0) out.push_back('-');
  out.append(std::to_string(cents / 100));
  char frac[4] = {'.', static_cast<char>('0' + cents % 100 / 10), static_cast<char>('0' + cents % 10), 0};
  out.append(frac);
  if (at_ms != 0) {
    out.append(",\"at_ms\":");
    out.append(std::to_string(at_ms));
  }
  out.push_back('}');
  return out;
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
  if (j.contains("at_ms") && j["at_ms"].is_number_integer()) in.at_ms = j["at_ms"].get<int64_t>();
  return in;
}

asio::awaitable<recharge::v1::FraudAssessment> AllowAllFilter::Assess(const FraudInput&) {
  recharge::v1::FraudAssessment a;
  a.set_decision(recharge::v1::FRAUD_ACTION_ALLOW);
  a.set_rules_version("allow-all");
  co_return a;
}

}  // namespace recharge
