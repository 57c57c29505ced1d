// Registers the e-wallet adapter type under the name "ewallet".
#include "adapters/adapter_registry.h"
#include "adapters/ewallet/ewallet_adapter.h"

namespace recharge {
REGISTER_PAYMENT_ADAPTER(ewallet, EWalletAdapter::FromConfig);
}  // namespace recharge
