#include "adapters/router.h"

#include <algorithm>

#include "io/strings.h"
#include "adapters/adapter_registry.h"
#include "io/config_node.h"
#include "io/gateway_metrics.h"
#include "io/log.h"

namespace recharge {
namespace {

bool Matches(const std::vector<std::string>& allowed, const std::string& value) {
  if (allowed.empty()) return true;
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const std::string& a) { return a == "*" || a == value; });
}

// The optional `circuit_breaker` block of an instance (defaults documented
// in configs/adapters.yaml).
absl::StatusOr<CircuitBreaker::Options> BreakerOptions(const ConfigNode& instance) {
  CircuitBreaker::Options o;
  if (!instance.Has("circuit_breaker")) return o;
  ConfigNode cb = instance.Child("circuit_breaker");
  if (absl::Status s = cb.CheckKeys({"window", "min_calls", "failure_rate_percent", "open_for"});
      !s.ok()) {
    return s;
  }
  absl::StatusOr<int64_t> window = cb.GetInt("window", o.window, 1, 10'000);
  if (!window.ok()) return window.status();
  absl::StatusOr<int64_t> min_calls = cb.GetInt("min_calls", o.min_calls, 1, 10'000);
  if (!min_calls.ok()) return min_calls.status();
  if (*min_calls > *window) return cb.Child("min_calls").Error("must not exceed window");
  absl::StatusOr<int64_t> rate =
      cb.GetInt("failure_rate_percent", static_cast<int64_t>(o.failure_rate * 100), 1, 100);
  if (!rate.ok()) return rate.status();
  absl::StatusOr<std::chrono::milliseconds> open_for = cb.GetDuration("open_for", o.open_for);
  if (!open_for.ok()) return open_for.status();
  o.window = static_cast<int>(*window);
  o.min_calls = static_cast<int>(*min_calls);
  o.failure_rate = static_cast<double>(*rate) / 100.0;
  o.open_for = *open_for;
  return o;
}

}  // namespace

Router::Router(std::map<std::string, Instance> instances, std::vector<Route> routes)
    : instances_(std::move(instances)), routes_(std::move(routes)) {}

Router::~Router() {
  if (!exported_) return;
  for (const auto& [name, instance] : instances_) Metrics().circuit_open.Clear({name});
}

void Router::ExportCircuitStates() const {
  exported_ = true;
  for (const auto& [name, instance] : instances_) {
    const CircuitBreaker* breaker = instance.breaker.get();
    Metrics().circuit_open.Set({name}, [breaker] {
      switch (breaker->state(CircuitBreaker::Clock::now())) {
        case CircuitBreaker::State::kOpen: return 1.0;
        case CircuitBreaker::State::kHalfOpen: return 0.5;
        case CircuitBreaker::State::kClosed: break;
      }
      return 0.0;
    });
  }
}

absl::StatusOr<std::unique_ptr<Router>> Router::Load(const std::string& path) {
  absl::StatusOr<ConfigNode> root = ConfigNode::LoadFile(path);
  if (!root.ok()) return root.status();
  if (absl::Status s = root->CheckKeys({"instances", "routes"}); !s.ok()) return s;
  ConfigNode instances_node = root->Child("instances");
  if (!instances_node.IsMap()) return instances_node.Error("must be a mapping of instance name to settings");

  std::map<std::string, Instance> instances;
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
    absl::StatusOr<CircuitBreaker::Options> breaker = BreakerOptions(config);
    if (!breaker.ok()) return breaker.status();
    absl::StatusOr<std::unique_ptr<PaymentAdapter>> adapter = (*factory)(name, config);
    if (!adapter.ok()) return adapter.status();
    Instance instance{*std::move(adapter), std::make_unique<CircuitBreaker>(*breaker), {}, {}};
    for (auto [key, field] : {std::pair{"regions", &instance.regions},
                              std::pair{"currencies", &instance.currencies}}) {
      if (!config.Has(key)) continue;
      absl::StatusOr<std::vector<std::string>> list = config.Child(key).AsStringList();
      if (!list.ok()) return list.status();
      *field = *std::move(list);
    }
    instances.emplace(name, std::move(instance));
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
      route.instances.push_back(&it->second);
    }
    routes.push_back(std::move(route));
  }
  return std::make_unique<Router>(std::move(instances), std::move(routes));
}

absl::StatusOr<const Router::Route*> Router::Select(const std::string& method,
                                                    const std::string& provider,
                                                    const std::string& region,
                                                    const std::string& currency) const {
  for (const Route& r : routes_) {
    if (r.method == method && Matches(r.regions, region) && Matches(r.currencies, currency) &&
        (method != "ewallet" || Matches(r.providers, provider))) {
      const bool served = std::any_of(r.instances.begin(), r.instances.end(), [&](Instance* i) {
        return i->Serves(region, currency);
      });
      if (served) return &r;
      break;  // the route exists, but its accounts do not serve this region or currency
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
  return it == instances_.end() ? nullptr : it->second.adapter.get();
}

const CircuitBreaker* Router::Breaker(const std::string& name) const {
  auto it = instances_.find(name);
  return it == instances_.end() ? nullptr : it->second.breaker.get();
}

bool Router::Instance::Serves(const std::string& region, const std::string& currency) const {
  return Matches(regions, region) && Matches(currencies, currency);
}

asio::awaitable<Router::Routed> Router::Charge(const Route& route,
                                               const ChargeRequest& request) const {
  Routed routed;
  routed.outcome.result = ChargeResult::kFailed;
  std::string reasons;
  for (Instance* instance : route.instances) {
    if (!instance->Serves(request.region, request.currency)) continue;
    const std::string name(instance->adapter->name());
    if (!request.capture && !instance->adapter->SupportsHolds()) {
      StrAppend(&reasons, reasons.empty() ? "" : "; ", name, ": takes no authorisation holds");
      continue;
    }
    routed.adapter = name;
    if (!instance->breaker->Allow(CircuitBreaker::Clock::now())) {
      StrAppend(&reasons, reasons.empty() ? "" : "; ", name, ": circuit open");
      continue;
    }
    const auto call_started = std::chrono::steady_clock::now();
    ChargeOutcome outcome = co_await instance->adapter->Charge(request);
    Metrics().adapter_seconds.With({name, ChargeResultName(outcome.result)})
        .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - call_started)
                     .count());
    const bool healthy = outcome.result == ChargeResult::kApproved ||
                         outcome.result == ChargeResult::kDeclined ||
                         outcome.result == ChargeResult::kRequiresAction;
    instance->breaker->Record(healthy, CircuitBreaker::Clock::now());
    if (outcome.result != ChargeResult::kFailed) {
      routed.outcome = std::move(outcome);
      co_return routed;
    }
    LogWarn("adapter_failover", {{"adapter", name},
                                 {"recharge_id", request.recharge_id},
                                 {"reason", outcome.message}});
    StrAppend(&reasons, reasons.empty() ? "" : "; ", name, ": ", outcome.message);
  }
  routed.outcome.message = StrCat("no payment instance took the charge (", reasons, ")");
  co_return routed;
}

}  // namespace recharge
