// HttpProvider::ParseOptions: pool_size is the most connections open to the
// provider (default 256, 1..65536) and becomes the client's max_connections.
#include "adapters/http_provider.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace recharge {
namespace {

absl::StatusOr<HttpProvider::Options> Parse(const std::string& extra) {
  absl::StatusOr<ConfigNode> root =
      ConfigNode::LoadString("endpoint: https://127.0.0.1:8443\n" + extra, "adapters.yaml");
  EXPECT_TRUE(root.ok()) << root.status();
  return HttpProvider::ParseOptions(*root);
}

TEST(HttpProvider, PoolSizeDefaultsTo256Connections) {
  absl::StatusOr<HttpProvider::Options> options = Parse("");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->pool_size, 256u);
}

TEST(HttpProvider, PoolSizeTakesUpTo65536Connections) {
  absl::StatusOr<HttpProvider::Options> options = Parse("pool_size: 65536\n");
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->pool_size, 65536u);
  EXPECT_TRUE(HttpProvider::Create(*options).ok());
}

TEST(HttpProvider, PoolSizeOutsideItsRangeIsRefusedNamingTheField) {
  for (const char* bad : {"pool_size: 0\n", "pool_size: 65537\n"}) {
    absl::StatusOr<HttpProvider::Options> options = Parse(bad);
    ASSERT_FALSE(options.ok()) << bad;
    EXPECT_THAT(std::string(options.status().message()), ::testing::HasSubstr("pool_size"));
  }
}

}  // namespace
}  // namespace recharge
