#include "io/crypto.h"

#include <gtest/gtest.h>

#include <sstream>

namespace recharge {
namespace {

TEST(Crypto, HmacSha256MatchesRfc4231TestCase2) {
  EXPECT_EQ(HexEncode(HmacSha256(Secret("Jefe"), "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Crypto, Sha256OfEmptyString) {
  EXPECT_EQ(HexEncode(Sha256("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Crypto, Base64UrlRoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    data.push_back(static_cast<char>(i * 37));
    std::string decoded;
    ASSERT_TRUE(Base64UrlDecode(Base64UrlEncode(data), &decoded));
    EXPECT_EQ(decoded, data);
  }
  std::string out;
  EXPECT_FALSE(Base64UrlDecode("ab$d", &out));
}

TEST(Crypto, RandomHexHasRequestedLengthAndDiffers) {
  std::string a = RandomHex(12), b = RandomHex(12);
  EXPECT_EQ(a.size(), 24u);
  EXPECT_NE(a, b);
}

TEST(Secret, PrintsRedacted) {
  Secret s("4242424242424242");
  std::ostringstream os;
  os << s;
  EXPECT_EQ(os.str(), "[redacted]");
  EXPECT_EQ(s.Reveal(), "4242424242424242");
}

}  // namespace
}  // namespace recharge
