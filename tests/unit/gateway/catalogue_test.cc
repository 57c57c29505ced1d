#include "gateway/catalogue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/test_files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace recharge {
namespace {

using ::testing::HasSubstr;

using ::recharge::testing::WriteTemp;

TEST(Catalogue, ShippedFileLoadsWithEveryRequiredRegion) {
  auto c = Catalogue::Load(RECHARGE_SOURCE_DIR "/configs/packages.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  for (const char* region : {"US", "PH", "ID", "IN", "VN", "KR", "JP", "GB", "DE", "BR"}) {
    EXPECT_TRUE(c->HasRegion(region)) << region;
    EXPECT_EQ(c->List(region).size() % 6, 0u) << region;
  }
  EXPECT_EQ(c->Price("US", "USD", "coins_65"), 99);
  EXPECT_EQ(c->Price("US", "USD", "coins_6607"), 9999);
  EXPECT_EQ(c->Price("KR", "KRW", "coins_65"), 1400);
  EXPECT_EQ(c->Price("US", "PHP", "coins_65"), std::nullopt);
  EXPECT_EQ(c->FindPackage("coins_6607")->coins, 6607);
  EXPECT_EQ(c->FindPackage("coins_6607")->usd_cents, 9999);
}

TEST(Catalogue, ListIsInCatalogueOrderWithRegionalCurrency) {
  auto c = Catalogue::Load(RECHARGE_SOURCE_DIR "/configs/packages.yaml");
  ASSERT_TRUE(c.ok());
  auto list = c->List("US");
  ASSERT_EQ(list.size(), 6u);
  EXPECT_EQ(list.front().package_id(), "coins_65");
  EXPECT_EQ(list.front().price().minor_units(), 99);
  EXPECT_EQ(list.back().package_id(), "coins_6607");
  EXPECT_EQ(list.back().price().currency(), "USD");
}

TEST(Catalogue, MissingPriceNamesRegionCurrencyAndLine) {
  const std::string path = WriteTemp("cat_missing.yaml",
                                     "currencies: {USD: 2}\n"
                                     "packages:\n"
                                     "  - {id: a, coins: 1, usd: 99}\n"
                                     "  - {id: b, coins: 2, usd: 199}\n"
                                     "regions:\n"
                                     "  US:\n"
                                     "    USD: {a: 99}\n");
  auto c = Catalogue::Load(path);
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_THAT(msg, HasSubstr("cat_missing.yaml:7:"));
  EXPECT_THAT(msg, HasSubstr("regions.US.USD"));
  EXPECT_THAT(msg, HasSubstr("no price for package \"b\""));
}

TEST(Catalogue, BadPriceNamesTheField) {
  const std::string path = WriteTemp("cat_bad.yaml",
                                     "currencies: {USD: 2}\n"
                                     "packages:\n"
                                     "  - {id: a, coins: 1, usd: 99}\n"
                                     "regions:\n"
                                     "  US:\n"
                                     "    USD: {a: 0.99}\n");
  auto c = Catalogue::Load(path);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("cat_bad.yaml:6:"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("regions.US.USD.a: must be an integer"));
}

TEST(Catalogue, UnknownCurrencyAndDuplicatePackage) {
  auto c1 = Catalogue::Load(WriteTemp("cat_cur.yaml",
                                      "currencies: {USD: 2}\n"
                                      "packages: [{id: a, coins: 1, usd: 99}]\n"
                                      "regions: {US: {EUR: {a: 1}}}\n"));
  ASSERT_FALSE(c1.ok());
  EXPECT_THAT(std::string(c1.status().message()), HasSubstr("\"EUR\" is not listed"));
  auto c2 = Catalogue::Load(WriteTemp("cat_dup.yaml",
                                      "currencies: {USD: 2}\n"
                                      "packages: [{id: a, coins: 1, usd: 99}, {id: a, coins: 2, usd: 1}]\n"
                                      "regions: {US: {USD: {a: 1}}}\n"));
  ASSERT_FALSE(c2.ok());
  EXPECT_THAT(std::string(c2.status().message()), HasSubstr("duplicate package"));
}

}  // namespace
}  // namespace recharge
