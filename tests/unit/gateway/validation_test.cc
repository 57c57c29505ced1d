#include "gateway/validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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

// ---- Hostile input: sizes, UTF-8, metadata bounds, what a message may echo.

std::string Message(const RecordRechargeRequest& r) {
  auto v = ValidateRecharge(r, TestCatalogue(), kToday);
  return v.ok() ? std::string("(accepted)") : std::string(v.status().message());
}

// Applies `mutate` to a good request and expects exactly `message`.
void ExpectMessage(const std::function<void(RecordRechargeRequest&)>& mutate,
                   const std::string& message) {
  RecordRechargeRequest r = GoodCardRequest();
  mutate(r);
  auto v = ValidateRecharge(r, TestCatalogue(), kToday);
  ASSERT_FALSE(v.ok()) << "expected: " << message;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(v.status().message()), message);
}

void AddMetadata(RecordRechargeRequest& r, int n) {
  for (int i = 0; i < n; ++i) (*r.mutable_metadata())["key_" + std::to_string(i)] = "v";
}

TEST(Validation, TwentyMetadataKeysAreAccepted) {
  RecordRechargeRequest r = GoodCardRequest();
  AddMetadata(r, 20);
  EXPECT_EQ(Message(r), "(accepted)");
}

TEST(Validation, TwentyOneMetadataKeysAreRefused) {
  ExpectMessage([](auto& r) { AddMetadata(r, 21); }, "metadata: at most 20 keys, got 21");
  ExpectMessage([](auto& r) { AddMetadata(r, 100); }, "metadata: at most 20 keys, got 100");
}

TEST(Validation, MetadataKeyOfFortyBytesIsAcceptedAndFortyOneRefused) {
  RecordRechargeRequest r = GoodCardRequest();
  (*r.mutable_metadata())[std::string(40, 'k')] = "v";
  EXPECT_EQ(Message(r), "(accepted)");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())[std::string(41, 'k')] = "v"; },
                "metadata: key \"" + std::string(41, 'k') + "\" is longer than 40 bytes");
}

TEST(Validation, HugeMetadataKeyIsEchoedCutToSixtyFourBytes) {
  ExpectMessage([](auto& r) { (*r.mutable_metadata())[std::string(1 << 20, 'k')] = "v"; },
                "metadata: key \"" + std::string(64, 'k') + "...\" is longer than 40 bytes");
  // The cut never splits a character: 21 three-byte characters are 63 bytes.
  std::string euros;
  for (int i = 0; i < 30; ++i) euros += "\u20ac";
  ExpectMessage([&](auto& r) { (*r.mutable_metadata())[euros] = "v"; },
                "metadata: key \"" + euros.substr(0, 63) + "...\" is longer than 40 bytes");
}

TEST(Validation, LongMetadataKeyThatIsNotPrintableIsNotEchoed) {
  ExpectMessage([](auto& r) { (*r.mutable_metadata())[std::string(50, '\xff')] = "v"; },
                "metadata: key (unprintable) is longer than 40 bytes");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["a\n" + std::string(40, 'k')] = "v"; },
                "metadata: key (unprintable) is longer than 40 bytes");
}

TEST(Validation, EmptyMetadataKeyIsRefused) {
  ExpectMessage([](auto& r) { (*r.mutable_metadata())[""] = "v"; },
                "metadata: keys must not be empty");
}

TEST(Validation, MetadataKeyWithInvalidUtf8OrControlCharactersIsRefused) {
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["ab\xc3("] = "v"; },
                "metadata: a key is not valid UTF-8");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["a\tb"] = "v"; },
                "metadata: a key contains control characters");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())[std::string("a\0b", 3)] = "v"; },
                "metadata: a key contains control characters");
  RecordRechargeRequest r = GoodCardRequest();
  (*r.mutable_metadata())["r\u00e9f\u00e9rence"] = "caf\u00e9 \U0001F600";  // UTF-8 is fine
  EXPECT_EQ(Message(r), "(accepted)");
}

TEST(Validation, MetadataValueOfFiveHundredBytesIsAcceptedAndFiveHundredOneRefused) {
  RecordRechargeRequest r = GoodCardRequest();
  (*r.mutable_metadata())["note"] = std::string(500, 'v');
  EXPECT_EQ(Message(r), "(accepted)");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["note"] = std::string(501, 'v'); },
                "metadata.note: must be at most 500 bytes");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["note"] = std::string(600, 'v'); },
                "metadata.note: must be at most 500 bytes");
}

TEST(Validation, MetadataValueMustBeUtf8WithoutControlCharacters) {
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["note"] = "\xed\xa0\x80"; },
                "metadata.note: must be valid UTF-8");
  ExpectMessage([](auto& r) { (*r.mutable_metadata())["note"] = "a\x1b[31mred"; },
                "metadata.note: must not contain control characters");
}

TEST(Validation, OneMebibyteUserIdIsRefusedWithoutEcho) {
  ExpectMessage([](auto& r) { r.set_user_id(std::string(1 << 20, 'u')); },
                "user_id: must be at most 128 characters");
  ExpectMessage([](auto& r) { r.set_user_id(std::string(10'000, 'u')); },
                "user_id: must be at most 128 characters");
  ExpectMessage([](auto& r) { r.set_user_id(std::string(129, 'u')); },
                "user_id: must be at most 128 characters");
  RecordRechargeRequest ok = GoodCardRequest();
  ok.set_user_id(std::string(128, 'u'));
  EXPECT_EQ(Message(ok), "(accepted)");
}

TEST(Validation, EveryStringFieldHasAMaximumLength) {
  const std::string huge(1 << 20, '7');
  struct Case {
    std::function<void(RecordRechargeRequest&, const std::string&)> set;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& r, auto& v) { r.set_idempotency_key(v); },
       "idempotency_key: must be 8 to 128 characters"},
      {[](auto& r, auto& v) { r.set_user_id(v); }, "user_id: must be at most 128 characters"},
      {[](auto& r, auto& v) { r.set_package_id(v); }, "package_id: must be at most 64 characters"},
      {[](auto& r, auto& v) { r.mutable_amount()->set_currency(v); },
       "amount.currency: must be an ISO 4217 code such as \"USD\""},
      {[](auto& r, auto& v) { r.set_region(v); },
       "region: must be an ISO 3166-1 alpha-2 code such as \"US\""},
      {[](auto& r, auto& v) { r.mutable_card()->set_number(v); },
       "card.number: must be 12 to 19 digits"},
      {[](auto& r, auto& v) { r.mutable_card()->set_cvc(v); }, "card.cvc: must be 3 or 4 digits"},
      {[](auto& r, auto& v) { r.mutable_card()->set_holder_name(v); },
       "card.holder_name: must be at most 128 bytes"},
      {[](auto& r, auto& v) { r.mutable_paypal()->set_order_id(v); },
       "paypal.order_id: must be at most 128 characters"},
      {[](auto& r, auto& v) { r.mutable_paypal()->set_payer_id(v); },
       "paypal.payer_id: must be at most 128 characters"},
      {[](auto& r, auto& v) { r.mutable_ewallet()->set_provider(v); },
       "ewallet.provider: must be a provider name such as \"gcash\""},
      {[](auto& r, auto& v) { r.mutable_ewallet()->set_account_id(v); },
       "ewallet.account_id: must be at most 128 characters"},
      {[](auto& r, auto& v) { r.set_seller_id(v); }, "seller_id: must be at most 128 characters"},
      {[](auto& r, auto& v) { r.mutable_client()->set_ip(v); },
       "client.ip: must be an IPv4 or IPv6 address"},
      {[](auto& r, auto& v) { r.mutable_client()->set_device_id(v); },
       "client.device_id: must be at most 128 bytes"},
      {[](auto& r, auto& v) { r.mutable_client()->set_user_agent(v); },
       "client.user_agent: must be at most 512 bytes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    ExpectMessage([&](auto& r) { c.set(r, huge); }, c.message);
  }
  // Just past the bound is refused the same way.
  ExpectMessage([](auto& r) { r.set_package_id(std::string(65, 'p')); },
                "package_id: must be at most 64 characters");
  ExpectMessage([](auto& r) { r.mutable_client()->set_ip(std::string(46, '1')); },
                "client.ip: must be an IPv4 or IPv6 address");
  ExpectMessage([](auto& r) { r.mutable_client()->set_user_agent(std::string(513, 'a')); },
                "client.user_agent: must be at most 512 bytes");
  // The longest IPv6 text form (45 bytes) is accepted.
  RecordRechargeRequest ok = GoodCardRequest();
  ok.mutable_client()->set_ip("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
  ASSERT_EQ(ok.client().ip().size(), 45u);
  EXPECT_EQ(Message(ok), "(accepted)");
}

TEST(Validation, InvalidUtf8InEveryStringFieldIsRefusedNamingTheField) {
  const std::string bad = "ab\xc3(";  // a lead byte without its continuation
  struct Case {
    std::string field;
    std::function<void(RecordRechargeRequest&)> set;
  };
  const std::vector<Case> cases = {
      {"idempotency_key", [&](auto& r) { r.set_idempotency_key("key-0000" + bad); }},
      {"user_id", [&](auto& r) { r.set_user_id(bad); }},
      {"package_id", [&](auto& r) { r.set_package_id(bad); }},
      {"amount.currency", [&](auto& r) { r.mutable_amount()->set_currency("\xc3("); }},
      {"region", [&](auto& r) { r.set_region("\xff"); }},
      {"card.number", [&](auto& r) { r.mutable_card()->set_number("42424242" + bad); }},
      {"card.cvc", [&](auto& r) { r.mutable_card()->set_cvc("\xc3("); }},
      {"card.holder_name", [&](auto& r) { r.mutable_card()->set_holder_name(bad); }},
      {"paypal.order_id", [&](auto& r) { r.mutable_paypal()->set_order_id(bad); }},
      {"paypal.payer_id", [&](auto& r) { r.mutable_paypal()->set_payer_id(bad); }},
      {"ewallet.provider", [&](auto& r) { r.mutable_ewallet()->set_provider(bad); }},
      {"ewallet.account_id", [&](auto& r) { r.mutable_ewallet()->set_account_id(bad); }},
      {"seller_id", [&](auto& r) { r.set_seller_id(bad); }},
      {"client.ip", [&](auto& r) { r.mutable_client()->set_ip(bad); }},
      {"client.device_id", [&](auto& r) { r.mutable_client()->set_device_id(bad); }},
      {"client.user_agent", [&](auto& r) { r.mutable_client()->set_user_agent(bad); }},
      {"metadata.note", [&](auto& r) { (*r.mutable_metadata())["note"] = bad; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    ExpectMessage(c.set, c.field + ": must be valid UTF-8");
  }
}

TEST(Validation, OverlongAndSurrogateSequencesAreRefusedInTextFields) {
  for (const std::string bad : {"\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xed\xa0\x80",
                                "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80"}) {
    SCOPED_TRACE(testing::PrintToString(bad));
    ExpectMessage([&](auto& r) { r.mutable_card()->set_holder_name("Ann " + bad); },
                  "card.holder_name: must be valid UTF-8");
    ExpectMessage([&](auto& r) { r.mutable_client()->set_user_agent(bad + "Mozilla"); },
                  "client.user_agent: must be valid UTF-8");
  }
}

TEST(Validation, TextFieldsTakeUnicodeButNoControlCharacters) {
  RecordRechargeRequest ok = GoodCardRequest();
  ok.mutable_card()->set_holder_name("Jos\u00e9 M\u00fcller \u5c71\u7530");
  ok.mutable_client()->set_user_agent("App/1.0 (\U0001F4F1)");
  EXPECT_EQ(Message(ok), "(accepted)");
  ExpectMessage([](auto& r) { r.mutable_card()->set_holder_name("Ann\nSmith"); },
                "card.holder_name: must not contain control characters");
  ExpectMessage([](auto& r) { r.mutable_card()->set_holder_name("Ann\u0085Smith"); },  // C1 NEL
                "card.holder_name: must not contain control characters");
  ExpectMessage([](auto& r) { r.mutable_client()->set_device_id(std::string("dev\0ice", 7)); },
                "client.device_id: must not contain control characters");
}

TEST(Validation, ClientIpWithAnEmbeddedNulIsRefused) {
  ExpectMessage([](auto& r) { r.mutable_client()->set_ip(std::string("10.0.0.1\0junk", 13)); },
                "client.ip: must be an IPv4 or IPv6 address");
}

TEST(Validation, UnknownPackageAndCurrencyAreEchoedOnlyWhenPrintable) {
  ExpectMessage([](auto& r) { r.set_package_id("coins_9"); },
                "package_id: unknown package \"coins_9\"");
  ExpectMessage([](auto& r) { r.set_package_id(std::string(64, 'p')); },
                "package_id: unknown package \"" + std::string(64, 'p') + "\"");
  ExpectMessage([](auto& r) { r.set_package_id("coins\n65"); },
                "package_id: unknown package (unprintable)");
  ExpectMessage([](auto& r) { r.mutable_amount()->set_currency("EUR"); },
                "amount.currency: \"EUR\" is not offered in region US");
  ExpectMessage([](auto& r) { r.mutable_amount()->set_currency("U\x01"); },
                "amount.currency: (unprintable) is not offered in region US");
}

TEST(Validation, NoErrorMessageContainsTheCardNumberOrCvc) {
  const std::string pan = "4000056655665556";
  const std::string cvc = "737";
  const auto card_request = [&] {
    RecordRechargeRequest r = GoodCardRequest();
    r.mutable_card()->set_number(pan);
    r.mutable_card()->set_cvc(cvc);
    return r;
  };
  ASSERT_EQ(Message(card_request()), "(accepted)");
  const std::vector<std::function<void(RecordRechargeRequest&)>> mutations = {
      // The card's own fields.
      [&](auto& r) { r.mutable_card()->set_number(pan.substr(0, 15) + "7"); },  // Luhn
      [&](auto& r) { r.mutable_card()->set_number(pan + "123"); },              // 19, Luhn
      [&](auto& r) { r.mutable_card()->set_number(pan + "1234"); },             // 20 digits
      [&](auto& r) { r.mutable_card()->set_number(pan + "x"); },
      [&](auto& r) { r.mutable_card()->set_number(pan + std::string(1 << 20, '0')); },
      [&](auto& r) { r.mutable_card()->set_cvc(cvc + "99"); },
      [&](auto& r) { r.mutable_card()->set_cvc(cvc + "x"); },
      [&](auto& r) { r.mutable_card()->set_cvc(cvc + "\xff"); },
      [&](auto& r) { r.mutable_card()->set_exp_year(2020); },
      [&](auto& r) { r.mutable_card()->set_holder_name(pan + "\n" + cvc); },
      // The card number pasted where other fields are echoed.
      [&](auto& r) { r.set_package_id(pan); },
      [&](auto& r) { r.set_package_id("pkg-" + pan); },
      [&](auto& r) { r.mutable_amount()->set_minor_units(std::stoll(pan)); },
      [&](auto& r) { (*r.mutable_metadata())[pan + pan + pan] = "v"; },
      [&](auto& r) { (*r.mutable_metadata())[pan] = std::string(501, 'v'); },
      [&](auto& r) { r.set_user_id(pan + " " + cvc); },
      [&](auto& r) { r.mutable_client()->set_ip(pan); },
  };
  for (size_t i = 0; i < mutations.size(); ++i) {
    SCOPED_TRACE("mutation " + std::to_string(i));
    RecordRechargeRequest r = card_request();
    mutations[i](r);
    const std::string message = Message(r);
    EXPECT_NE(message, "(accepted)");
    EXPECT_LT(message.size(), 200u) << message.substr(0, 200);
    EXPECT_THAT(message, ::testing::Not(HasSubstr(pan.substr(0, 12))));
    EXPECT_THAT(message, ::testing::Not(HasSubstr(pan.substr(4, 12))));
    EXPECT_THAT(message, ::testing::Not(HasSubstr(cvc)));
  }
  // Where the number is masked, the mask says so.
  RecordRechargeRequest r = card_request();
  r.set_package_id(pan);
  EXPECT_EQ(Message(r), "package_id: unknown package \"****************\"");
}

TEST(ValidationUtf8, AcceptsWellFormedText) {
  EXPECT_TRUE(ValidUtf8(""));
  EXPECT_TRUE(ValidUtf8("plain ASCII, longer than eight bytes"));
  EXPECT_TRUE(ValidUtf8(std::string("nul \0 is a character", 21)));
  EXPECT_TRUE(ValidUtf8("\xc2\x80"));              // U+0080
  EXPECT_TRUE(ValidUtf8("\xdf\xbf"));              // U+07FF
  EXPECT_TRUE(ValidUtf8("\xe0\xa0\x80"));          // U+0800
  EXPECT_TRUE(ValidUtf8("\xed\x9f\xbf"));          // U+D7FF, just below the surrogates
  EXPECT_TRUE(ValidUtf8("\xee\x80\x80"));          // U+E000, just above them
  EXPECT_TRUE(ValidUtf8("\xef\xbf\xbf"));          // U+FFFF
  EXPECT_TRUE(ValidUtf8("\xf0\x90\x80\x80"));      // U+10000
  EXPECT_TRUE(ValidUtf8("\xf4\x8f\xbf\xbf"));      // U+10FFFF
  EXPECT_TRUE(ValidUtf8("caf\u00e9 \u20ac \U0001F600"));
}

TEST(ValidationUtf8, RefusesOverlongsSurrogatesAndOutOfRange) {
  for (const std::string bad : {
           "\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf",  // overlong
           "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf",                                   // overlong
           "\xed\xa0\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbf\xbf",           // surrogates
           "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf7\xbf\xbf\xbf",               // > U+10FFFF
           "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xfe", "\xff",       // 5, 6 bytes
           "\xc2", "\xe2\x82", "\xf0\x9f\x98",                                       // truncated
           "\xc2\x41", "\xe2\x28\xa1", "\xf0\x9f\x28\x80"}) {                         // bad trail
    SCOPED_TRACE(testing::PrintToString(bad));
    EXPECT_FALSE(ValidUtf8(bad));
    EXPECT_FALSE(ValidUtf8("0123456789abcdef" + bad));  // after the ASCII fast path
    EXPECT_FALSE(ValidUtf8(bad + "0123456789abcdef"));
  }
}

// Against a decoder written the long way round: decode any lead/trail
// shape, then refuse by code point.
TEST(ValidationUtf8, AgreesWithAReferenceOnEveryShortSequence) {
  const auto reference = [](const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
      const unsigned char b = s[i];
      int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
      if (len == 0 || i + len > s.size()) return false;
      uint32_t cp = len == 1 ? b : (b & (0x7f >> len));
      for (int k = 1; k < len; ++k) {
        const unsigned char t = s[i + k];
        if ((t & 0xc0) != 0x80) return false;
        cp = (cp << 6) | (t & 0x3f);
      }
      const uint32_t min = len == 1 ? 0 : len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
      i += len;
    }
    return true;
  };
  // Every one- and two-byte sequence; three bytes: every lead byte with the
  // trail bytes at and around each boundary of the tables.
  const int kEdges[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                        0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff};
  std::string s;
  for (int b0 = 0; b0 < 256; ++b0) {
    s = {static_cast<char>(b0)};
    EXPECT_EQ(ValidUtf8(s), reference(s)) << testing::PrintToString(s);
    for (int b1 = 0; b1 < 256; ++b1) {
      s = {static_cast<char>(b0), static_cast<char>(b1)};
      EXPECT_EQ(ValidUtf8(s), reference(s)) << testing::PrintToString(s);
      for (int b2 : kEdges) {
        s = {static_cast<char>(b0), static_cast<char>(b1), static_cast<char>(b2)};
        EXPECT_EQ(ValidUtf8(s), reference(s)) << testing::PrintToString(s);
      }
    }
  }
  // Four-byte sequences: every lead byte with the boundary trail bytes.
  for (int b0 = 0xf0; b0 <= 0xff; ++b0) {
    for (int b1 : {0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0}) {
      for (int b2 : {0x80, 0xbf, 0xc0}) {
        for (int b3 : {0x7f, 0x80, 0xbf}) {
          s = {static_cast<char>(b0), static_cast<char>(b1), static_cast<char>(b2),
               static_cast<char>(b3)};
          EXPECT_EQ(ValidUtf8(s), reference(s)) << testing::PrintToString(s);
        }
      }
    }
  }
}

TEST(ValidationNote, FreeTextUpToOneKilobyte) {
  EXPECT_TRUE(ValidateNote("note", "").ok());
  EXPECT_TRUE(ValidateNote("note", "refund approved by J\u00f6rg \u2714").ok());
  EXPECT_TRUE(ValidateNote("note", std::string(1024, 'n')).ok());
  const absl::Status long_note = ValidateNote("note", std::string(1 << 20, 'n'));
  EXPECT_EQ(long_note.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(long_note.message(), "note: must be at most 1024 bytes");
  EXPECT_EQ(ValidateNote("note", std::string(1025, 'n')).message(),
            "note: must be at most 1024 bytes");
  EXPECT_EQ(ValidateNote("reason", "bad \xed\xa0\x80").message(), "reason: must be valid UTF-8");
  EXPECT_EQ(ValidateNote("reason", "two\nlines").message(),
            "reason: must not contain control characters");
  EXPECT_EQ(ValidateNote("reason", "tab\there").message(),
            "reason: must not contain control characters");
  EXPECT_EQ(ValidateNote("reason", "\u009b31m").message(),  // C1 CSI
            "reason: must not contain control characters");
}

TEST(Validation, AnyTwelveDigitRunInAMessageIsMasked) {
  // A note is never echoed; a field name never holds a card number either,
  // but any 12+ digit run in a message is masked all the same.
  EXPECT_EQ(ValidateId("id4242424242424242", "a b", true).message(),
            "id****************: may contain only A-Z a-z 0-9 _ . : - @");
}

TEST(ValidationId, RefusesInvalidUtf8) {
  EXPECT_EQ(ValidateId("recharge_id", "rch_\xff", true).message(),
            "recharge_id: must be valid UTF-8");
  EXPECT_EQ(ValidateId("recharge_id", std::string(1 << 20, 'r'), true).message(),
            "recharge_id: must be at most 128 characters");
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
