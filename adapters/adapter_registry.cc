#include "adapters/adapter_registry.h"

#include <cstdio>
#include <cstdlib>

namespace recharge {

std::string_view ChargeResultName(ChargeResult r) {
  switch (r) {
    case ChargeResult::kApproved: return "approved";
    case ChargeResult::kDeclined: return "declined";
    case ChargeResult::kFailed: return "failed";
    case ChargeResult::kUnknown: return "unknown";
    case ChargeResult::kNotFound: return "not_found";
  }
  return "?";
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
