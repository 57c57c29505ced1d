// Provider notifications as they arrive on the webhook port: arbitrary
// bytes as the signature header and as the body. The signature parser and
// check, and the card and e-wallet notification parsers, must answer every
// input with a value or an error naming what is wrong -- no crash, no
// exception, no sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "adapters/card/transformers.h"
#include "adapters/ewallet/transformers.h"
#include "adapters/webhook_signature.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The first line is the header, the rest the body.
  const size_t nl = input.find('\n');
  const std::string_view header = input.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
  static const recharge::Secret kSecret("whsec_fuzz_0123456789abcdef0123456789");
  (void)recharge::ParseSignatureHeader(header);
  (void)recharge::VerifyWebhookSignature(kSecret, header, body, std::chrono::system_clock::now(),
                                         std::chrono::seconds(300));
  for (std::string_view b : {input, body}) {
    absl::StatusOr<recharge::ProviderNotification> card = recharge::card::ParseNotification(b);
    if (card.ok() && (card->event_id.empty() || card->idempotency_key.empty())) __builtin_trap();
    absl::StatusOr<recharge::ProviderNotification> wallet = recharge::ewallet::ParseNotification(b);
    if (wallet.ok() && (wallet->event_id.empty() || wallet->recharge_id.empty())) __builtin_trap();
  }
  return 0;
}
