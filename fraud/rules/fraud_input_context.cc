#include "fraud/rules/fraud_input_context.h"

namespace recharge::rules {

void FillEvalContext(const FraudInput& input, EvalContext* context) {
  context->set_string(Field::kUserId, input.user_id);
  context->set_string(Field::kSellerId, input.seller_id);
  context->set_string(Field::kIp, input.ip);
  context->set_string(Field::kDeviceId, input.device_id);
  context->set_string(Field::kCardFingerprint, input.card_fingerprint);
  context->set_string(Field::kInstrumentFingerprint, input.instrument_fingerprint);
  context->set_string(Field::kPaymentMethod, input.payment_method);
  context->set_string(Field::kWalletProvider, input.wallet_provider);
  context->set_string(Field::kRegion, input.region);
  context->set_string(Field::kCurrency, input.currency);
  context->set_string(Field::kPackageId, input.package_id);
  context->set_number(Field::kCoins, static_cast<double>(input.coins));
  context->set_number(Field::kAmountUsd, static_cast<double>(input.amount_usd_cents) / 100.0);
}

}  // namespace recharge::rules
