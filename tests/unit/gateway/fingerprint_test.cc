#include <gtest/gtest.h>

#include "gateway/recharge_flow.h"
#include "io/crypto.h"

namespace recharge {
namespace {

using recharge::v1::RecordRechargeRequest;

RecordRechargeRequest Request() {
  RecordRechargeRequest r;
  r.set_idempotency_key("key-00000001");
  r.set_user_id("user-1");
  r.set_package_id("coins_65");
  r.mutable_amount()->set_currency("USD");
  r.mutable_amount()->set_minor_units(99);
  r.set_region("US");
  r.mutable_card()->set_number("4242424242424242");
  r.mutable_card()->set_exp_month(12);
  r.mutable_card()->set_exp_year(2030);
  r.mutable_card()->set_cvc("123");
  (*r.mutable_metadata())["b"] = "2";
  (*r.mutable_metadata())["a"] = "1";
  return r;
}

TEST(CardFingerprint, IsHmacSha256OfThePanUnderTheKey) {
  const Secret key(std::string(32, 'k'));
  const std::string fp = HexEncode(HmacSha256(key, "4242424242424242"));
  EXPECT_EQ(fp.size(), 64u);
  EXPECT_EQ(fp.find("4242424242424242"), std::string::npos);
  EXPECT_NE(fp, HexEncode(HmacSha256(Secret(std::string(32, 'j')), "4242424242424242")));
  EXPECT_EQ(fp, HexEncode(HmacSha256(key, "4242424242424242")));
}

TEST(RequestFingerprint, SameRequestSameFingerprintWhateverTheMapOrder) {
  RecordRechargeRequest a = Request();
  RecordRechargeRequest b = Request();
  b.clear_metadata();
  (*b.mutable_metadata())["a"] = "1";
  (*b.mutable_metadata())["b"] = "2";
  EXPECT_EQ(RequestFingerprint(a, "fp1"), RequestFingerprint(b, "fp1"));
}

TEST(RequestFingerprint, ChangesWithEveryCanonicalField) {
  const RecordRechargeRequest base = Request();
  const std::string f = RequestFingerprint(base, "fp1");
  EXPECT_NE(f, RequestFingerprint(base, "fp2"));  // another card
  auto changed = [&](auto mutate) {
    RecordRechargeRequest r = base;
    mutate(r);
    return RequestFingerprint(r, "fp1");
  };
  EXPECT_NE(f, changed([](auto& r) { r.set_package_id("coins_330"); }));
  EXPECT_NE(f, changed([](auto& r) { r.set_user_id("user-2"); }));
  EXPECT_NE(f, changed([](auto& r) { r.set_seller_id("s1"); }));
  EXPECT_NE(f, changed([](auto& r) { r.mutable_amount()->set_minor_units(98); }));
  EXPECT_NE(f, changed([](auto& r) { r.set_region("PH"); }));
  EXPECT_NE(f, changed([](auto& r) { r.mutable_card()->set_exp_month(11); }));
  EXPECT_NE(f, changed([](auto& r) { (*r.mutable_metadata())["a"] = "x"; }));
  // Field boundaries are unambiguous: "ab"+"c" differs from "a"+"bc".
  EXPECT_NE(changed([](auto& r) { r.set_user_id("ab"); r.set_package_id("c"); }),
            changed([](auto& r) { r.set_user_id("a"); r.set_package_id("bc"); }));
}

TEST(RechargeId, HasPrefixAndIsUnique) {
  const std::string a = NewRechargeId(), b = NewRechargeId();
  EXPECT_EQ(a.rfind("rch_", 0), 0u);
  EXPECT_EQ(a.size(), 28u);
  EXPECT_NE(a, b);
  // Later ids sort later (their first 12 hex digits are the time in µs).
  std::string prev = NewRechargeId();
  for (int i = 0; i < 1000; ++i) {
    std::string next = NewRechargeId();
    EXPECT_LE(prev.substr(0, 16), next.substr(0, 16));
    EXPECT_EQ(next.find_first_not_of("0123456789abcdef", 4), std::string::npos) << next;
    prev = std::move(next);
  }
}

}  // namespace
}  // namespace recharge
