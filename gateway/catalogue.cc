#include "gateway/catalogue.h"

#include <set>

#include "io/strings.h"
#include "io/config_node.h"

namespace recharge {
namespace {

bool IsUpperAlpha(const std::string& s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s) {
    if (c < 'A' || c > 'Z') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Catalogue> Catalogue::Load(const std::string& path) {
  absl::StatusOr<ConfigNode> root = ConfigNode::LoadFile(path);
  if (!root.ok()) return root.status();
  if (absl::Status s = root->CheckKeys({"currencies", "packages", "regions"}); !s.ok()) return s;
  Catalogue cat;

  ConfigNode currencies = root->Child("currencies");
  if (!currencies.IsMap()) return currencies.Error("must map ISO 4217 codes to minor-unit digits");
  for (const auto& [code, digits] : currencies.Entries()) {
    if (!IsUpperAlpha(code, 3)) return digits.Error("is not an ISO 4217 currency code");
    absl::StatusOr<int64_t> d = digits.AsInt(0, 4);
    if (!d.ok()) return d.status();
    cat.currency_digits_[code] = static_cast<int>(*d);
  }

  ConfigNode packages = root->Child("packages");
  if (!packages.IsSequence()) return packages.Error("must be a list of packages");
  std::set<std::string> ids;
  for (const ConfigNode& item : packages.Items()) {
    if (absl::Status s = item.CheckKeys({"id", "coins", "usd"}); !s.ok()) return s;
    CataloguePackage p;
    absl::StatusOr<std::string> id = item.GetString("id");
    if (!id.ok()) return id.status();
    if (id->empty()) return item.Child("id").Error("must not be empty");
    if (!ids.insert(*id).second) return item.Child("id").Error(StrCat("duplicate package \"", *id, "\""));
    p.id = *id;
    absl::StatusOr<int64_t> coins = item.GetInt("coins", std::nullopt, 1, 10'000'000);
    if (!coins.ok()) return coins.status();
    p.coins = *coins;
    absl::StatusOr<int64_t> usd = item.GetInt("usd", std::nullopt, 1, 100'000'000);
    if (!usd.ok()) return usd.status();
    p.usd_cents = *usd;
    cat.packages_.push_back(std::move(p));
  }
  if (cat.packages_.empty()) return packages.Error("must list at least one package");

  ConfigNode regions = root->Child("regions");
  if (!regions.IsMap()) return regions.Error("must map regions to their prices");
  for (const auto& [region, offers] : regions.Entries()) {
    if (!IsUpperAlpha(region, 2)) return offers.Error("is not an ISO 3166-1 alpha-2 region code");
    if (!offers.IsMap() || offers.Entries().empty()) {
      return offers.Error("must map at least one currency to package prices");
    }
    RegionPrices& rp = cat.regions_[region];
    for (const auto& [currency, prices] : offers.Entries()) {
      if (!cat.currency_digits_.contains(currency)) {
        return prices.Error(StrCat("currency \"", currency, "\" is not listed under currencies"));
      }
      if (!prices.IsMap()) return prices.Error("must map package ids to prices");
      rp.currencies.push_back(currency);
      auto& table = rp.prices[currency];
      for (const auto& [package_id, price] : prices.Entries()) {
        if (!ids.contains(package_id)) {
          return price.Error(StrCat("unknown package \"", package_id, "\""));
        }
        absl::StatusOr<int64_t> v = price.AsInt(1, INT64_MAX / 4);
        if (!v.ok()) return v.status();
        table[package_id] = *v;
      }
      for (const CataloguePackage& p : cat.packages_) {
        if (!table.contains(p.id)) {
          return prices.Error(StrCat("no price for package \"", p.id, "\""));
        }
      }
    }
  }
  return cat;
}

const CataloguePackage* Catalogue::FindPackage(const std::string& id) const {
  for (const CataloguePackage& p : packages_) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

bool Catalogue::HasRegion(const std::string& region) const { return regions_.contains(region); }

bool Catalogue::OffersCurrency(const std::string& region, const std::string& currency) const {
  auto it = regions_.find(region);
  return it != regions_.end() && it->second.prices.contains(currency);
}

std::optional<int64_t> Catalogue::Price(const std::string& region, const std::string& currency,
                                        const std::string& package_id) const {
  auto r = regions_.find(region);
  if (r == regions_.end()) return std::nullopt;
  auto c = r->second.prices.find(currency);
  if (c == r->second.prices.end()) return std::nullopt;
  auto p = c->second.find(package_id);
  if (p == c->second.end()) return std::nullopt;
  return p->second;
}

std::vector<recharge::v1::Package> Catalogue::List(const std::string& region) const {
  std::vector<recharge::v1::Package> out;
  auto r = regions_.find(region);
  if (r == regions_.end()) return out;
  for (const std::string& currency : r->second.currencies) {
    const auto& table = r->second.prices.at(currency);
    for (const CataloguePackage& p : packages_) {
      recharge::v1::Package& pkg = out.emplace_back();
      pkg.set_package_id(p.id);
      pkg.set_coins(p.coins);
      pkg.mutable_price()->set_currency(currency);
      pkg.mutable_price()->set_minor_units(table.at(p.id));
    }
  }
  return out;
}

std::vector<std::string> Catalogue::Regions() const {
  std::vector<std::string> out;
  for (const auto& [region, rp] : regions_) out.push_back(region);
  return out;
}

}  // namespace recharge
