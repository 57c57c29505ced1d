// Router: the adapter instances built from configs/adapters.yaml and the
// route table from (method, region, currency) to an ordered list of them.
//
// Thread-safety: immutable after Load(); Route() may be called from any thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"

namespace recharge {

class Router {
 public:
  // Builds every instance through the AdapterRegistry. Errors name the file,
  // line and field (an unknown type lists the registered ones).
  static absl::StatusOr<std::unique_ptr<Router>> Load(const std::string& path);
  // For tests: routes over instances made elsewhere.
  struct Route {
    std::string method;                 // "card", "paypal", "ewallet"
    std::vector<std::string> regions;   // "*" = any
    std::vector<std::string> currencies;
    std::vector<std::string> providers; // ewallet only; "*" or empty = any
    std::vector<PaymentAdapter*> instances;
  };
  Router(std::map<std::string, std::unique_ptr<PaymentAdapter>> instances,
         std::vector<Route> routes);

  // The instances to try, in order. INVALID_ARGUMENT naming the field when
  // no route serves the request.
  absl::StatusOr<std::vector<PaymentAdapter*>> Select(const std::string& method,
                                                     const std::string& provider,
                                                     const std::string& region,
                                                     const std::string& currency) const;
  PaymentAdapter* Find(const std::string& name) const;

 private:
  std::map<std::string, std::unique_ptr<PaymentAdapter>> instances_;
  std::vector<Route> routes_;
};

}  // namespace recharge
