// Catalogue: the coin packages and their regional prices, from
// configs/packages.yaml (DESIGN §9). Prices are ISO 4217 minor units.
//
// Thread-safety: immutable after Load(); safe to read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

struct CataloguePackage {
  std::string id;
  int64_t coins = 0;
  int64_t usd_cents = 0;  // the USD price; fraud rules see it as amount_usd
};

class Catalogue {
 public:
  // Errors name the file, line and field.
  static absl::StatusOr<Catalogue> Load(const std::string& path);

  const CataloguePackage* FindPackage(const std::string& id) const;
  bool HasRegion(const std::string& region) const;
  bool OffersCurrency(const std::string& region, const std::string& currency) const;
  // The price of `package_id` in `region` and `currency`, if offered.
  std::optional<int64_t> Price(const std::string& region, const std::string& currency,
                               const std::string& package_id) const;
  // Every package with its price in each currency the region offers, in
  // catalogue order, the region's first currency first.
  std::vector<recharge::v1::Package> List(const std::string& region) const;
  std::vector<std::string> Regions() const;

 private:
  struct RegionPrices {
    std::vector<std::string> currencies;                           // file order
    std::map<std::string, std::map<std::string, int64_t>> prices;  // currency -> package -> price
  };
  std::vector<CataloguePackage> packages_;
  std::map<std::string, int> currency_digits_;
  std::map<std::string, RegionPrices> regions_;
};

}  // namespace recharge
