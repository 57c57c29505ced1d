// Registers the example adapter type under the name "example". A copy
// registers its own name; the registry refuses a name used twice.
#include "adapters/_template/example_adapter.h"
#include "adapters/adapter_registry.h"

namespace recharge {
REGISTER_PAYMENT_ADAPTER(example, ExampleAdapter::FromConfig);
}  // namespace recharge
