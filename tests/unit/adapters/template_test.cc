// The adapter template (adapters/_template) builds, registers itself, is
// built from config through the registry, and maps its wire format.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "adapters/_template/transformers.h"
#include "adapters/router.h"

namespace recharge {
namespace {

TEST(AdapterTemplate, RegistersAndLoadsFromConfig) {
  const auto dir = std::filesystem::temp_directory_path();
  std::ofstream(dir / "template_key") << "key\n";
  std::ofstream(dir / "template_adapters.yaml")
      << "instances:\n  acme:\n    type: example\n    endpoint: https://127.0.0.1:9\n"
         "    secret_file: " << (dir / "template_key").string() << "\n    regions: [US]\n"
         "routes:\n  - {method: card, instances: [acme]}\n";
  auto router = Router::Load((dir / "template_adapters.yaml").string());
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_NE((*router)->Find("acme"), nullptr);
  EXPECT_TRUE((*router)->Select("card", "", "US", "USD").ok());
  EXPECT_FALSE((*router)->Select("card", "", "PH", "PHP").ok());  // the instance serves US only
}

TEST(AdapterTemplate, WireMapping) {
  ChargeRequest r;
  r.idempotency_key = "k-1";
  r.minor_units = 99;
  r.currency = "USD";
  auto req = example::BuildChargeRequest(r, Secret("key"));
  EXPECT_EQ(req["Idempotency-Key"], "k-1");
  EXPECT_EQ(example::ParseChargeResponse(200, R"({"id":"p1","status":"succeeded"})").result,
            ChargeResult::kApproved);
  EXPECT_EQ(example::ParseChargeResponse(200, R"({"id":"p2","status":"declined","decline_code":"x"})").decline_code,
            "x");
  EXPECT_EQ(example::ParseChargeResponse(503, R"({"charged":false})").result, ChargeResult::kFailed);
  EXPECT_EQ(example::ParseChargeResponse(500, "{}").result, ChargeResult::kUnknown);
  EXPECT_EQ(example::ParseLookupResponse(200, R"({"data":[]})").result, ChargeResult::kNotFound);
}

}  // namespace
}  // namespace recharge
