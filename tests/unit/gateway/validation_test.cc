#include "gateway/validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

namespace recharge {
namespace {

using recharge::v1::RecordRechargeRequest;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const Catalogue& TestCatalogue() {
  static const Catalogue* c =
      new Catalogue(*Catalogue::Load(RECHARGE_SOURCE_DIR "/configs/packages.yaml"));
  return *c;
}

constexpr YearMonth kToday{2026, 11};

RecordRechargeRequest GoodCardRequest() {
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
  r.mutable_client()->set_ip("203.0.113.7");
  return r;
}

// Applies `mutate` to a good request and expects INVALID_ARGUMENT naming `field`.
void ExpectRejected(const std::function<void(RecordRechargeRequest&)>& mutate,
                    const std::string& field) {
  RecordRechargeRequest r = GoodCardRequest();
  mutate(r);
  auto v = ValidateRecharge(r, TestCatalogue(), kToday);
  ASSERT_FALSE(v.ok()) << "expected a rejection naming " << field;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.status().message()), StartsWith(field + ":"));
  EXPECT_THAT(std::string(v.status().message()), ::testing::Not(HasSubstr("4242424242")));
}

TEST(Validation, GoodCardRequestIsPricedAndMasked) {
  auto v = ValidateRecharge(GoodCardRequest(), TestCatalogue(), kToday);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->package->coins, 65);
  EXPECT_EQ(v->price, 99);
  EXPECT_EQ(v->method_label, "card");
  EXPECT_EQ(v->card_masked, "424242******4242");
}

TEST(Validation, IdempotencyKeyLengthAndCharset) {
  ExpectRejected([](auto& r) { r.set_idempotency_key("1234567"); }, "idempotency_key");
  ExpectRejected([](auto& r) { r.set_idempotency_key(std::string(129, 'a')); }, "idempotency_key");
  ExpectRejected([](auto& r) { r.set_idempotency_key("key with space"); }, "idempotency_key");
  ExpectRejected([](auto& r) { r.clear_idempotency_key(); }, "idempotency_key");
  RecordRechargeRequest ok = GoodCardRequest();
  ok.set_idempotency_key(std::string(128, 'k'));
  EXPECT_TRUE(ValidateRecharge(ok, TestCatalogue(), kToday).ok());
  ok.set_idempotency_key("a.b:c-d_e");
  EXPECT_TRUE(ValidateRecharge(ok, TestCatalogue(), kToday).ok());
}

TEST(Validation, IdsRegionPackageAndAmount) {
  ExpectRejected([](auto& r) { r.clear_user_id(); }, "user_id");
  ExpectRejected([](auto& r) { r.set_user_id("bad user"); }, "user_id");
  ExpectRejected([](auto& r) { r.set_seller_id("bad/seller"); }, "seller_id");
  ExpectRejected([](auto& r) { r.set_package_id("coins_99999"); }, "package_id");
  ExpectRejected([](auto& r) { r.clear_package_id(); }, "package_id");
  ExpectRejected([](auto& r) { r.set_region("us"); }, "region");
  ExpectRejected([](auto& r) { r.set_region("ZZ"); }, "region");
  ExpectRejected([](auto& r) { r.clear_amount(); }, "amount");
  ExpectRejected([](auto& r) { r.mutable_amount()->set_currency("PHP"); }, "amount.currency");
  ExpectRejected([](auto& r) { r.mutable_amount()->clear_currency(); }, "amount.currency");
  ExpectRejected([](auto& r) { r.mutable_amount()->set_minor_units(100); }, "amount.minor_units");
  ExpectRejected([](auto& r) { r.mutable_amount()->set_minor_units(-99); }, "amount.minor_units");
}

TEST(Validation, RegionalPriceInLocalCurrency) {
  RecordRechargeRequest r = GoodCardRequest();
  r.set_region("JP");
  r.mutable_amount()->set_currency("JPY");
  r.mutable_amount()->set_minor_units(160);
  EXPECT_TRUE(ValidateRecharge(r, TestCatalogue(), kToday).ok());
  r.mutable_amount()->set_minor_units(16000);  // JPY has no minor units
  EXPECT_FALSE(ValidateRecharge(r, TestCatalogue(), kToday).ok());
}

TEST(Validation, CardFields) {
  ExpectRejected([](auto& r) { r.clear_payment_method(); }, "payment_method");
  ExpectRejected([](auto& r) { r.mutable_card()->set_number("42424242424"); }, "card.number");
  ExpectRejected([](auto& r) { r.mutable_card()->set_number("42424242424242424242"); }, "card.number");
  ExpectRejected([](auto& r) { r.mutable_card()->set_number("4242-4242-4242-4242"); }, "card.number");
  ExpectRejected([](auto& r) { r.mutable_card()->set_number("4242424242424241"); }, "card.number");
  ExpectRejected([](auto& r) { r.mutable_card()->clear_number(); }, "card.number");
  ExpectRejected([](auto& r) { r.mutable_card()->set_exp_month(13); }, "card.exp_month");
  ExpectRejected([](auto& r) { r.mutable_card()->set_exp_month(0); }, "card.exp_month");
  ExpectRejected([](auto& r) { r.mutable_card()->set_exp_year(2025); }, "card.exp_year");
  ExpectRejected([](auto& r) {
    r.mutable_card()->set_exp_year(2026);
    r.mutable_card()->set_exp_month(10);
  }, "card.exp_year");
  ExpectRejected([](auto& r) { r.mutable_card()->set_cvc("12"); }, "card.cvc");
  ExpectRejected([](auto& r) { r.mutable_card()->set_cvc("12345"); }, "card.cvc");
  ExpectRejected([](auto& r) { r.mutable_card()->set_cvc("12a"); }, "card.cvc");
  // The current month is not past.
  RecordRechargeRequest ok = GoodCardRequest();
  ok.mutable_card()->set_exp_year(2026);
  ok.mutable_card()->set_exp_month(11);
  EXPECT_TRUE(ValidateRecharge(ok, TestCatalogue(), kToday).ok());
  ok.mutable_card()->set_cvc("1234");
  EXPECT_TRUE(ValidateRecharge(ok, TestCatalogue(), kToday).ok());
}

TEST(Validation, PaypalAndEwalletFields) {
  ExpectRejected([](auto& r) { r.mutable_paypal()->set_payer_id("P1"); }, "paypal.order_id");
  ExpectRejected([](auto& r) { r.mutable_paypal()->set_order_id("O1"); }, "paypal.payer_id");
  ExpectRejected([](auto& r) { r.mutable_ewallet()->set_account_id("a1"); }, "ewallet.provider");
  ExpectRejected([](auto& r) { r.mutable_ewallet()->set_provider("GCash!"); }, "ewallet.provider");
  ExpectRejected([](auto& r) { r.mutable_ewallet()->set_provider("gcash"); }, "ewallet.account_id");
  RecordRechargeRequest r = GoodCardRequest();
  r.mutable_ewallet()->set_provider("gcash");
  r.mutable_ewallet()->set_account_id("09171234567");
  auto v = ValidateRecharge(r, TestCatalogue(), kToday);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->method_label, "ewallet:gcash");
  EXPECT_EQ(v->card_masked, "");
}

TEST(Validation, ClientContext) {
  ExpectRejected([](auto& r) { r.mutable_client()->set_ip("300.1.1.1"); }, "client.ip");
  ExpectRejected([](auto& r) { r.mutable_client()->set_ip("example.com"); }, "client.ip");
  ExpectRejected([](auto& r) { r.mutable_client()->set_device_id(std::string(129, 'd')); },
                 "client.device_id");
  RecordRechargeRequest r = GoodCardRequest();
  r.mutable_client()->set_ip("2001:db8::1");
  EXPECT_TRUE(ValidateRecharge(r, TestCatalogue(), kToday).ok());
}

TEST(Luhn, KnownNumbers) {
  EXPECT_TRUE(LuhnValid("4242424242424242"));
  EXPECT_TRUE(LuhnValid("4000000000000002"));
  EXPECT_TRUE(LuhnValid("4000000000009995"));
  EXPECT_TRUE(LuhnValid("5555555555554444"));
  EXPECT_TRUE(LuhnValid("378282246310005"));
  EXPECT_FALSE(LuhnValid("4242424242424241"));
  EXPECT_FALSE(LuhnValid("1234567812345678"));
}

TEST(MaskPan, KeepsFirstSixAndLastFour) {
  EXPECT_EQ(MaskPan("4242424242424242"), "424242******4242");
  EXPECT_EQ(MaskPan("378282246310005"), "378282*****0005");
  EXPECT_EQ(MaskPan("4000056655665556123"), "400005*********6123");
  EXPECT_EQ(MaskPan("123456789012"), "123456**9012");
}

}  // namespace
}  // namespace recharge
