// FraudFilter: the seam where the rule-based fraud filter plugs into the
// recharge flow (DESIGN §6). The flow builds a FraudInput from the validated
// request (no secrets: the card appears only as its HMAC fingerprint), asks
// the filter for a decision before anything is charged, and records the
// decision with its inputs in the ledger's decision log.
//
// Implementations: RuleEngine (fraud/rule_engine.h), the rules of
// configs/fraud_rules.yaml over Redis counters; and AllowAllFilter, the named
// policy the gateway runs when no rule file is configured (every request
// allowed, rules_version "allow-all").
//
// Thread-safety: Assess may run concurrently from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "io/asio.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

// The request as the fraud rules see it (DESIGN §6 "Fields").
struct FraudInput {
  std::string user_id;
  std::string seller_id;
  std::string ip;
  std::string device_id;
  std::string card_fingerprint;        // hex HMAC-SHA256 of the PAN; empty if not a card
  std::string instrument_fingerprint;  // same for whatever pays
  std::string payment_method;          // card | paypal | ewallet
  std::string wallet_provider;
  std::string region;
  std::string currency;
  std::string package_id;
  int64_t coins = 0;
  int64_t amount_usd_cents = 0;        // the package's USD price
  // When the decision is made (unix ms; 0: now): the counters' buckets are
  // picked by it, and a backtest replays the decision at the same instant.
  // Not a rule field.
  int64_t at_ms = 0;

  // The inputs as a JSON object, for the decision log, and back.
  std::string ToJson() const;
  static std::optional<FraudInput> FromJson(std::string_view json);
};

class FraudFilter {
 public:
  virtual ~FraudFilter() = default;
  virtual asio::awaitable<recharge::v1::FraudAssessment> Assess(const FraudInput& input) = 0;
  // The provider declined the request: outcome counters learn of it. Must
  // not delay the caller (work goes in the background on `executor`).
  virtual void OnDeclined(const FraudInput& /*input*/, const asio::any_io_executor& /*executor*/) {}
};

// Allows everything. The named placeholder policy until rules are configured.
class AllowAllFilter final : public FraudFilter {
 public:
  asio::awaitable<recharge::v1::FraudAssessment> Assess(const FraudInput& input) override;
};

}  // namespace recharge
