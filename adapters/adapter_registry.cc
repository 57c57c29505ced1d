#include "adapters/adapter_registry.h"

#include <cstdio>
#include <cstdlib>

#include "io/strings.h"

namespace recharge {

std::string_view ChargeResultName(ChargeResult r) {
  switch (r) {
    case ChargeResult::kApproved: return "approved";
    case ChargeResult::kDeclined: return "declined";
    case ChargeResult::kFailed: return "failed";
    case ChargeResult::kUnknown: return "unknown";
    case ChargeResult::kNotFound: return "not_found";
    case ChargeResult::kRequiresAction: return "requires_action";
  }
  return "?";
}

namespace {
ChargeOutcome NotSupported(std::string_view adapter, std::string_view what) {
  ChargeOutcome out;
  out.result = ChargeResult::kFailed;
  out.message = std::string(what) + " is not supported by adapter " + std::string(adapter);
  return out;
}
}  // namespace

asio::awaitable<ChargeOutcome> PaymentAdapter::Capture(const PaymentOperation&) {
  co_return NotSupported(name(), "capture");
}
asio::awaitable<ChargeOutcome> PaymentAdapter::Void(const PaymentOperation&) {
  co_return NotSupported(name(), "void");
}
asio::awaitable<ChargeOutcome> PaymentAdapter::Refund(const PaymentOperation&) {
  co_return NotSupported(name(), "refund");
}
asio::awaitable<ChargeOutcome> PaymentAdapter::LookupRefund(std::string_view,
                                                            std::chrono::steady_clock::time_point) {
  co_return NotSupported(name(), "refund lookup");
}

absl::StatusOr<ProviderNotification> PaymentAdapter::ReadNotification(
    const InboundNotification&) const {
  return absl::NotFoundError(
      StrCat("adapter ", name(), " takes no notifications"));
}

absl::Status CheckAdapterKeys(const ConfigNode& config, std::initializer_list<std::string_view> own) {
  std::vector<std::string_view> keys = {"type", "circuit_breaker", "regions", "currencies"};
  keys.insert(keys.end(), own.begin(), own.end());
  return config.CheckKeys(keys);
}

AdapterRegistry& AdapterRegistry::Global() {
  static AdapterRegistry* registry = new AdapterRegistry();
  return *registry;
}

bool AdapterRegistry::Register(const std::string& type, AdapterFactory factory) {
  if (!factories_.emplace(type, std::move(factory)).second) {
    std::fprintf(stderr, "FATAL: payment adapter type \"%s\" registered twice\n", type.c_str());
    std::abort();
  }
  return true;
}

const AdapterFactory* AdapterRegistry::Find(const std::string& type) const {
  auto it = factories_.find(type);
  return it == factories_.end() ? nullptr : &it->second;
}

std::vector<std::string> AdapterRegistry::Types() const {
  std::vector<std::string> out;
  for (const auto& [type, f] : factories_) out.push_back(type);
  return out;
}

}  // namespace recharge
