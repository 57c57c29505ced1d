#include "adapters/router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/test_files.h"

#include <filesystem>
#include <fstream>

namespace recharge {
namespace {

using ::testing::HasSubstr;

using ::recharge::testing::WriteTemp;

std::string AdaptersYaml(const std::string& extra_instance = "", const std::string& routes = "") {
  const std::string secret = WriteTemp("router_test_key", "sk_test_123\n");
  return "instances:\n"
         "  card-a:\n"
         "    type: card\n"
         "    endpoint: https://127.0.0.1:1\n"
         "    secret_file: " + secret + "\n" + extra_instance +
         "routes:\n" +
         (routes.empty() ? "  - {method: card, regions: [\"*\"], currencies: [\"*\"], instances: [card-a]}\n"
                         : routes);
}

TEST(Router, ShippedExampleHasTheSettingsTheCardAdapterTakes) {
  // configs/adapters.yaml needs the dev secret made by run.sh; check its
  // shape with a temporary secret instead.
  auto r = Router::Load(WriteTemp("adapters_ok.yaml", AdaptersYaml()));
  ASSERT_TRUE(r.ok()) << r.status();
  auto route = (*r)->Select("card", "", "US", "USD");
  ASSERT_TRUE(route.ok());
  ASSERT_EQ((*route)->instances.size(), 1u);
  EXPECT_EQ((*route)->instances[0]->adapter->name(), "card-a");
  EXPECT_NE((*r)->Find("card-a"), nullptr);
}

TEST(Router, NoRouteIsInvalidArgumentNamingTheField) {
  auto r = Router::Load(WriteTemp("adapters_ok2.yaml", AdaptersYaml()));
  ASSERT_TRUE(r.ok());
  auto paypal = (*r)->Select("paypal", "", "US", "USD");
  ASSERT_FALSE(paypal.ok());
  EXPECT_EQ(paypal.status().code(), absl::StatusCode::kInvalidArgument);
  auto wallet = (*r)->Select("ewallet", "gcash", "US", "USD");
  ASSERT_FALSE(wallet.ok());
  EXPECT_THAT(std::string(wallet.status().message()), HasSubstr("ewallet.provider"));
}

TEST(Router, RoutesMatchRegionAndCurrencyInOrder) {
  auto r = Router::Load(WriteTemp(
      "adapters_order.yaml",
      AdaptersYaml("  card-b:\n    type: card\n    endpoint: https://127.0.0.1:2\n    secret_file: " +
                       WriteTemp("router_test_key2", "k\n") + "\n",
                   "  - {method: card, regions: [PH], currencies: [PHP], instances: [card-b, card-a]}\n"
                   "  - {method: card, regions: [\"*\"], currencies: [\"*\"], instances: [card-a]}\n")));
  ASSERT_TRUE(r.ok()) << r.status();
  auto ph = (*r)->Select("card", "", "PH", "PHP");
  ASSERT_TRUE(ph.ok());
  ASSERT_EQ((*ph)->instances.size(), 2u);
  EXPECT_EQ((*ph)->instances[0]->adapter->name(), "card-b");
  EXPECT_EQ((*(*r)->Select("card", "", "PH", "USD"))->instances[0]->adapter->name(), "card-a");
}

TEST(Router, ConfigErrorsNameFileLineAndField) {
  auto unknown_type = Router::Load(WriteTemp(
      "adapters_type.yaml", "instances:\n  x:\n    type: bitcoin\nroutes: []\n"));
  ASSERT_FALSE(unknown_type.ok());
  EXPECT_THAT(std::string(unknown_type.status().message()),
              HasSubstr("adapters_type.yaml:3:11: instances.x.type: unknown adapter type \"bitcoin\" (registered: card"));

  auto bad_instance = Router::Load(WriteTemp(
      "adapters_ref.yaml", AdaptersYaml("", "  - {method: card, instances: [nope]}\n")));
  ASSERT_FALSE(bad_instance.ok());
  EXPECT_THAT(std::string(bad_instance.status().message()), HasSubstr("no instance named \"nope\""));

  auto bad_endpoint = Router::Load(WriteTemp(
      "adapters_ep.yaml", "instances:\n  x:\n    type: card\n    endpoint: http://plain\n"
                          "    secret_file: /dev/null\nroutes: []\n"));
  ASSERT_FALSE(bad_endpoint.ok());
  EXPECT_THAT(std::string(bad_endpoint.status().message()), HasSubstr("instances.x.endpoint: must start with https://"));

  auto missing_secret = Router::Load(WriteTemp(
      "adapters_secret.yaml", "instances:\n  x:\n    type: card\n    endpoint: https://h:1\n"
                              "    secret_file: /nonexistent/secret\nroutes: []\n"));
  ASSERT_FALSE(missing_secret.ok());
  EXPECT_THAT(std::string(missing_secret.status().message()), HasSubstr("instances.x.secret_file"));
}

}  // namespace
}  // namespace recharge
