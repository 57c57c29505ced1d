// Router: the payment adapter instances built from configs/adapters.yaml, a
// circuit breaker per instance, and the route table from (method, region,
// currency[, wallet provider]) to an ordered list of instances.
//
// Charge() tries a route's instances in order. An instance whose breaker is
// open is skipped; a definite failure before money moved (kFailed) fails over
// to the next instance; any other answer — approved, declined, or ambiguous
// (kUnknown: the charge may have happened) — ends the attempt, because trying
// another provider after an ambiguous failure could charge twice.
//
// Thread-safety: the route table is immutable after Load(); Select, Charge
// and Find may be called concurrently from any thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/circuit_breaker.h"
#include "adapters/payment_adapter.h"

namespace recharge {

class Router {
 public:
  struct Instance {
    std::unique_ptr<PaymentAdapter> adapter;
    std::unique_ptr<CircuitBreaker> breaker;
    // What the provider account serves (its `regions`/`currencies`); empty = any.
    std::vector<std::string> regions;
    std::vector<std::string> currencies;
    bool Serves(const std::string& region, const std::string& currency) const;
  };
  struct Route {
    std::string method;                  // "card", "paypal", "ewallet"
    std::vector<std::string> regions;    // "*" = any
    std::vector<std::string> currencies;
    std::vector<std::string> providers;  // ewallet only; "*" or empty = any
    std::vector<Instance*> instances;
  };
  // What Charge() did: the outcome, and the instance that gave it (or the
  // last one considered, when none could take the charge).
  struct Routed {
    ChargeOutcome outcome;
    std::string adapter;
  };

  // Builds every instance through the AdapterRegistry. Errors name the file,
  // line and field (an unknown type lists the registered ones).
  static absl::StatusOr<std::unique_ptr<Router>> Load(const std::string& path);
  Router(std::map<std::string, Instance> instances, std::vector<Route> routes);

  // The route serving a request, with at least one instance that serves its
  // region and currency. INVALID_ARGUMENT naming the field when none does.
  absl::StatusOr<const Route*> Select(const std::string& method, const std::string& provider,
                                      const std::string& region,
                                      const std::string& currency) const;

  // Charges through `route` with breakers and failover (see above); an
  // instance that does not serve the request's region and currency is
  // skipped, and so is one without holds for an authorisation (capture=false).
  asio::awaitable<Routed> Charge(const Route& route, const ChargeRequest& request) const;

  PaymentAdapter* Find(const std::string& name) const;
  const CircuitBreaker* Breaker(const std::string& name) const;

  // Exports each instance's circuit breaker state on /metrics
  // (recharge_adapter_circuit_open), until the router is destroyed.
  void ExportCircuitStates() const;
  ~Router();

 private:
  std::map<std::string, Instance> instances_;
  std::vector<Route> routes_;
  mutable bool exported_ = false;
};

}  // namespace recharge
