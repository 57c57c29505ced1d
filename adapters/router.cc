#include "adapters/router.h"

#include <algorithm>

#include "io/strings.h"
#include "adapters/adapter_registry.h"
#include "io/config_node.h"

namespace recharge {
namespace {

bool Matches(const std::vector<std::string>& allowed, const std::string& value) {
  if (allowed.empty()) return true;
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const std::string& a) { return a == "*" || a == value; });
}

}  // namespace

Router::Router(std::map<std::string, std::unique_ptr<PaymentAdapter>> instances,
               std::vector<Route> routes)
    : instances_(std::move(instances)), routes_(std::move(routes)) {}

absl::StatusOr<std::unique_ptr<Router>> Router::Load(const std::string& path) {
  absl::StatusOr<ConfigNode> root = ConfigNode::LoadFile(path);
  if (!root.ok()) return root.status();
  if (absl::Status s = root->CheckKeys({"instances", "routes"}); !s.ok()) return s;
  ConfigNode instances_node = root->Child("instances");
  if (!instances_node.IsMap()) return instances_node.Error("must be a mapping of instance name to settings");

  std::map<std::string, std::unique_ptr<PaymentAdapter>> instances;
  for (const auto& [name, config] : instances_node.Entries()) {
    if (!config.IsMap()) return config.Error("must be a mapping");
    absl::StatusOr<std::string> type = config.GetString("type");
    if (!type.ok()) return type.status();
    const AdapterFactory* factory = AdapterRegistry::Global().Find(*type);
    if (factory == nullptr) {
      return config.Child("type").Error(StrCat(
          "unknown adapter type \"", *type, "\" (registered: ",
          StrJoin(AdapterRegistry::Global().Types(), ", "), ")"));
    }
    absl::StatusOr<std::unique_ptr<PaymentAdapter>> adapter = (*factory)(name, config);
    if (!adapter.ok()) return adapter.status();
    instances.emplace(name, *std::move(adapter));
  }

  std::vector<Route> routes;
  ConfigNode routes_node = root->Child("routes");
  if (!routes_node.IsSequence()) return routes_node.Error("must be a list of routes");
  for (const ConfigNode& item : routes_node.Items()) {
    if (absl::Status s = item.CheckKeys({"method", "regions", "currencies", "providers", "instances"});
        !s.ok()) {
      return s;
    }
    Route route;
    absl::StatusOr<std::string> method = item.GetString("method");
    if (!method.ok()) return method.status();
    if (*method != "card" && *method != "paypal" && *method != "ewallet") {
      return item.Child("method").Error("must be card, paypal or ewallet");
    }
    route.method = *method;
    for (auto [key, field] : {std::pair{"regions", &route.regions},
                              std::pair{"currencies", &route.currencies},
                              std::pair{"providers", &route.providers}}) {
      if (!item.Has(key)) continue;
      absl::StatusOr<std::vector<std::string>> list = item.Child(key).AsStringList();
      if (!list.ok()) return list.status();
      *field = *std::move(list);
    }
    absl::StatusOr<std::vector<std::string>> names = item.Child("instances").AsStringList();
    if (!names.ok()) return names.status();
    if (names->empty()) return item.Child("instances").Error("must name at least one instance");
    for (const std::string& n : *names) {
      auto it = instances.find(n);
      if (it == instances.end()) {
        return item.Child("instances").Error(StrCat("no instance named \"", n, "\""));
      }
      route.instances.push_back(it->second.get());
    }
    routes.push_back(std::move(route));
  }
  return std::make_unique<Router>(std::move(instances), std::move(routes));
}

absl::StatusOr<std::vector<PaymentAdapter*>> Router::Select(const std::string& method,
                                                           const std::string& provider,
                                                           const std::string& region,
                                                           const std::string& currency) const {
  for (const Route& r : routes_) {
    if (r.method == method && Matches(r.regions, region) && Matches(r.currencies, currency) &&
        (method != "ewallet" || Matches(r.providers, provider))) {
      return r.instances;
    }
  }
  if (method == "ewallet") {
    return absl::InvalidArgumentError(StrCat("ewallet.provider: \"", provider,
                                                   "\" is not offered in region ", region,
                                                   " for currency ", currency));
  }
  return absl::InvalidArgumentError(StrCat("region: no ", method, " payment route for region ",
                                                 region, " and currency ", currency));
}

PaymentAdapter* Router::Find(const std::string& name) const {
  auto it = instances_.find(name);
  return it == instances_.end() ? nullptr : it->second.get();
}

}  // namespace recharge
