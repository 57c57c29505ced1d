// Registers the card adapter type under the name "card".
#include "adapters/adapter_registry.h"
#include "adapters/card/card_adapter.h"

namespace recharge {
REGISTER_PAYMENT_ADAPTER(card, CardAdapter::FromConfig);
}  // namespace recharge
