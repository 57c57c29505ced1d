// Registers the PayPal adapter type under the name "paypal".
#include "adapters/adapter_registry.h"
#include "adapters/paypal/paypal_adapter.h"

namespace recharge {
REGISTER_PAYMENT_ADAPTER(paypal, PayPalAdapter::FromConfig);
}  // namespace recharge
