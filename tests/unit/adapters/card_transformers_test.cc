#include "adapters/card/transformers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace recharge::card {
namespace {

using ::testing::HasSubstr;

ChargeRequest Request() {
  ChargeRequest r;
  r.idempotency_key = "key-00000001";
  r.recharge_id = "rch_1";
  r.currency = "USD";
  r.minor_units = 99;
  r.card = CardDetails{Secret("4242424242424242"), 12, 2030, Secret("123"), "A B"};
  return r;
}

TEST(CardTransformers, ChargeRequestCarriesIdempotencyKeyAndBearerSecret) {
  auto req = BuildChargeRequest(Request(), Secret("sk_test_abc"));
  EXPECT_EQ(req.method(), http::verb::post);
  EXPECT_EQ(req.target(), "/v1/charges");
  EXPECT_EQ(req["Idempotency-Key"], "key-00000001");
  EXPECT_EQ(req[http::field::authorization], "Bearer sk_test_abc");
  EXPECT_THAT(req.body(), HasSubstr("amount=99&currency=USD"));
  EXPECT_THAT(req.body(), HasSubstr("card%5Bnumber%5D=4242424242424242"));
  EXPECT_THAT(req.body(), HasSubstr("metadata%5Brecharge_id%5D=rch_1"));
}

TEST(CardTransformers, LookupIsByIdempotencyKey) {
  auto req = BuildLookupRequest("a:b", Secret("sk"));
  EXPECT_EQ(req.method(), http::verb::get);
  EXPECT_EQ(req.target(), "/v1/charges?idempotency_key=a%3Ab");
}

TEST(CardTransformers, SucceededChargeIsApproved) {
  auto o = ParseChargeResponse(200, R"({"id":"ch_1","status":"succeeded","amount":99})");
  EXPECT_EQ(o.result, ChargeResult::kApproved);
  EXPECT_EQ(o.provider_reference, "ch_1");
}

TEST(CardTransformers, CardErrorIsDeclinedWithTheProvidersCode) {
  auto o = ParseChargeResponse(
      402, R"({"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","charge":"ch_2","message":"Your card was declined."}})");
  EXPECT_EQ(o.result, ChargeResult::kDeclined);
  EXPECT_EQ(o.decline_code, "insufficient_funds");
  EXPECT_EQ(o.provider_reference, "ch_2");
}

TEST(CardTransformers, ServerErrorIsDefiniteOnlyWhenItSaysNothingWasCharged) {
  EXPECT_EQ(ParseChargeResponse(500, R"({"error":{"type":"api_error","charged":false}})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(ParseChargeResponse(500, R"({"error":{"type":"api_error"}})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(ParseChargeResponse(502, "<html>bad gateway</html>").result, ChargeResult::kUnknown);
}

TEST(CardTransformers, RejectedRequestIsAFailureAndUnreadableSuccessIsUnknown) {
  auto o = ParseChargeResponse(401, R"({"error":{"code":"unauthorized"}})");
  EXPECT_EQ(o.result, ChargeResult::kFailed);
  EXPECT_THAT(o.message, HasSubstr("unauthorized"));
  EXPECT_EQ(ParseChargeResponse(200, "not json").result, ChargeResult::kUnknown);
}

TEST(CardTransformers, LookupMapsListToOutcome) {
  EXPECT_EQ(ParseLookupResponse(200, R"({"object":"list","data":[]})").result,
            ChargeResult::kNotFound);
  auto ok = ParseLookupResponse(200, R"({"data":[{"id":"ch_3","status":"succeeded"}]})");
  EXPECT_EQ(ok.result, ChargeResult::kApproved);
  EXPECT_EQ(ok.provider_reference, "ch_3");
  auto declined = ParseLookupResponse(
      200, R"({"data":[{"id":"ch_4","status":"failed","failure_code":"card_declined"}]})");
  EXPECT_EQ(declined.result, ChargeResult::kDeclined);
  EXPECT_EQ(declined.decline_code, "card_declined");
  EXPECT_EQ(ParseLookupResponse(503, "").result, ChargeResult::kUnknown);
}

TEST(CardTransformers, FormEncodingEscapesReservedCharacters) {
  EXPECT_EQ(FormEncode("a b&c=d"), "a%20b%26c%3Dd");
  EXPECT_EQ(FormEncode("AZaz09-_.~"), "AZaz09-_.~");
}

}  // namespace
}  // namespace recharge::card
