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

TEST(CardTransformers, AHoldIsAChargeWithCaptureFalse) {
  ChargeRequest r = Request();
  EXPECT_THAT(BuildChargeRequest(r, Secret("sk")).body(), ::testing::Not(HasSubstr("capture")));
  r.capture = false;
  EXPECT_THAT(BuildChargeRequest(r, Secret("sk")).body(), HasSubstr("&capture=false"));
  auto hold = ParseChargeResponse(200, R"({"id":"ch_h","status":"succeeded","captured":false})");
  EXPECT_EQ(hold.result, ChargeResult::kApproved);
  EXPECT_FALSE(hold.captured);
  auto lookup = ParseLookupResponse(200, R"({"object":"list","data":[{"id":"ch_h","status":"succeeded","captured":false}]})");
  EXPECT_FALSE(lookup.captured);
  // A charge without the field is an ordinary, captured one.
  EXPECT_TRUE(ParseChargeResponse(200, R"({"id":"ch_1","status":"succeeded"})").captured);
}

PaymentOperation Operation() {
  PaymentOperation op;
  op.idempotency_key = "capture-rch_1";
  op.provider_reference = "ch_h";
  op.currency = "USD";
  op.minor_units = 99;
  return op;
}

TEST(CardTransformers, CaptureAndVoidAreIdempotentPostsOnTheCharge) {
  for (std::string_view action : {"capture", "void"}) {
    auto req = BuildHoldRequest(action, Operation(), Secret("sk_x"));
    EXPECT_EQ(req.method(), http::verb::post);
    EXPECT_EQ(req.target(), std::string("/v1/charges/ch_h/") + std::string(action));
    EXPECT_EQ(req["Idempotency-Key"], "capture-rch_1");
    EXPECT_EQ(req[http::field::authorization], "Bearer sk_x");
  }
  auto captured = ParseHoldResponse("capture", 200, R"({"id":"ch_h","status":"succeeded","captured":true,"voided":false})");
  EXPECT_EQ(captured.result, ChargeResult::kApproved);
  EXPECT_TRUE(captured.captured);
  auto voided = ParseHoldResponse("void", 200, R"({"id":"ch_h","status":"succeeded","captured":false,"voided":true})");
  EXPECT_EQ(voided.result, ChargeResult::kApproved);
  EXPECT_FALSE(voided.captured);
  // A 200 that does not show the operation is not taken for it.
  EXPECT_EQ(ParseHoldResponse("capture", 200, R"({"id":"ch_h","captured":false})").result,
            ChargeResult::kUnknown);
}

TEST(CardTransformers, ARefusedOperationIsDeclinedWithTheProvidersCode) {
  auto again = ParseHoldResponse("capture", 400,
      R"({"error":{"type":"invalid_request_error","code":"charge_already_captured"}})");
  EXPECT_EQ(again.result, ChargeResult::kDeclined);
  EXPECT_EQ(again.decline_code, "charge_already_captured");
  EXPECT_EQ(ParseHoldResponse("void", 404, R"({"error":{"code":"resource_missing"}})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(ParseHoldResponse("void", 500, R"({"error":{"type":"api_error"}})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(ParseHoldResponse("void", 200, "not json").result, ChargeResult::kUnknown);
  // A key reused for another request: nothing done, not a verdict on the payment.
  auto reused = ParseRefundResponse(400,
      R"({"error":{"type":"idempotency_error","code":"idempotency_key_reused"}})");
  EXPECT_EQ(reused.result, ChargeResult::kFailed);
  EXPECT_EQ(reused.decline_code, "idempotency_key_reused");
}

TEST(CardTransformers, ARefundIsAFullRefundOfTheChargeByKey) {
  PaymentOperation op = Operation();
  op.idempotency_key = "refund-1";
  op.reason = "buyer asked";
  auto req = BuildRefundRequest(op, Secret("sk"));
  EXPECT_EQ(req.target(), "/v1/refunds");
  EXPECT_EQ(req["Idempotency-Key"], "refund-1");
  EXPECT_EQ(req.body(), "charge=ch_h&reason=buyer%20asked");
  auto done = ParseRefundResponse(200, R"({"id":"re_1","object":"refund","charge":"ch_h","status":"succeeded"})");
  EXPECT_EQ(done.result, ChargeResult::kApproved);
  EXPECT_EQ(done.provider_reference, "re_1");
  auto twice = ParseRefundResponse(400, R"({"error":{"code":"charge_already_refunded"}})");
  EXPECT_EQ(twice.result, ChargeResult::kDeclined);
  EXPECT_EQ(twice.decline_code, "charge_already_refunded");
  EXPECT_EQ(BuildRefundLookupRequest("refund-1", Secret("sk")).target(),
            "/v1/refunds?idempotency_key=refund-1");
  EXPECT_EQ(ParseRefundLookupResponse(200, R"({"object":"list","data":[]})").result,
            ChargeResult::kNotFound);
  EXPECT_EQ(ParseRefundLookupResponse(200, R"({"object":"list","data":[{"id":"re_1","status":"succeeded"}]})")
                .provider_reference,
            "re_1");
  EXPECT_EQ(ParseRefundLookupResponse(503, "").result, ChargeResult::kUnknown);
}

}  // namespace
}  // namespace recharge::card

namespace recharge::card {
namespace {

TEST(CardTransformers, ChargeRequestCarriesTheRegionAndWhereToNotify) {
  ChargeRequest r = Request();
  r.region = "DE";
  auto req = BuildChargeRequest(r, Secret("sk"), "https://127.0.0.1:8444/webhooks/card-primary");
  EXPECT_THAT(req.body(), HasSubstr("&region=DE"));
  EXPECT_THAT(req.body(),
              HasSubstr("&notify_url=https%3A%2F%2F127.0.0.1%3A8444%2Fwebhooks%2Fcard-primary"));
  EXPECT_THAT(BuildChargeRequest(Request(), Secret("sk")).body(),
              ::testing::Not(HasSubstr("notify_url")));
}

TEST(CardTransformers, AChallengedChargeRequiresActionWithItsPage) {
  ChargeOutcome o = ParseChargeResponse(
      200, R"({"id":"ch_9","status":"requires_action","captured":false,
               "next_action":{"type":"redirect_to_url",
                              "redirect_to_url":{"url":"https://psp/3ds/ch_9?token=t","return_url":null}}})");
  EXPECT_EQ(o.result, ChargeResult::kRequiresAction);
  EXPECT_EQ(o.provider_reference, "ch_9");
  EXPECT_FALSE(o.captured);
  ASSERT_TRUE(o.next_action.has_value());
  EXPECT_EQ(o.next_action->type, NextActionInfo::Type::kRedirect);
  EXPECT_EQ(o.next_action->url, "https://psp/3ds/ch_9?token=t");
  // Without a page to send the buyer to, nothing can be said: unknown.
  EXPECT_EQ(ParseChargeResponse(200, R"({"id":"ch_9","status":"requires_action"})").result,
            ChargeResult::kUnknown);
  // Voided while waiting: nothing charged.
  ChargeOutcome canceled = ParseLookupResponse(200, R"({"data":[{"id":"ch_9","status":"canceled"}]})");
  EXPECT_EQ(canceled.result, ChargeResult::kFailed);
  EXPECT_EQ(canceled.decline_code, "canceled");
}

}  // namespace
}  // namespace recharge::card
