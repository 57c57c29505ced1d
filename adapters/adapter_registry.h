// AdapterRegistry: adapter types register a factory under a stable name
// ("card", "paypal", "ewallet"); configs/adapters.yaml builds instances by
// that name. Registering a name twice is a programming error and aborts.
//
// Registration happens during static initialisation (REGISTER_PAYMENT_ADAPTER
// in the adapter's registration.cc); lookups after main() starts are
// thread-safe because the map no longer changes.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "io/config_node.h"

namespace recharge {

// Builds one instance named `name` from its config block.
using AdapterFactory = std::function<absl::StatusOr<std::unique_ptr<PaymentAdapter>>(
    const std::string& name, const ConfigNode& config)>;

// Checks an instance's keys: the adapter's own, plus those every instance may
// have and the Router handles (type, circuit_breaker, regions, currencies).
absl::Status CheckAdapterKeys(const ConfigNode& config, std::initializer_list<std::string_view> own);

class AdapterRegistry {
 public:
  static AdapterRegistry& Global();
  // Aborts on a duplicate type name.
  bool Register(const std::string& type, AdapterFactory factory);
  const AdapterFactory* Find(const std::string& type) const;
  std::vector<std::string> Types() const;

 private:
  std::map<std::string, AdapterFactory> factories_;
};

// REGISTER_PAYMENT_ADAPTER(card, CardAdapter::FromConfig) registers the type "card".
#define REGISTER_PAYMENT_ADAPTER(type, factory)                  \
  [[maybe_unused]] static const bool kRegisteredAdapter_##type = \
      ::recharge::AdapterRegistry::Global().Register(#type, factory)

}  // namespace recharge
