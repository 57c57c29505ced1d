#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <initializer_list>
#include <utility>
#include <thread>

#include "adapters/money.h"
#include "adapters/paypal/token_cache.h"
#include "adapters/paypal/transformers.h"
#include "io/crypto.h"
#include "io/strings.h"

namespace recharge {
namespace {

using ::testing::HasSubstr;

TEST(Money, DecimalConversionFollowsIso4217Digits) {
  EXPECT_EQ(MinorUnitsToDecimal(99, "USD"), "0.99");
  EXPECT_EQ(MinorUnitsToDecimal(9999, "USD"), "99.99");
  EXPECT_EQ(MinorUnitsToDecimal(5, "EUR"), "0.05");
  EXPECT_EQ(MinorUnitsToDecimal(160, "JPY"), "160");
  EXPECT_EQ(MinorUnitsToDecimal(1400, "KRW"), "1400");
  EXPECT_EQ(MinorUnitsToDecimal(1234, "KWD"), "1.234");
  EXPECT_EQ(DecimalToMinorUnits("0.99", "USD"), 99);
  EXPECT_EQ(DecimalToMinorUnits("10", "USD"), 1000);
  EXPECT_EQ(DecimalToMinorUnits("160", "JPY"), 160);
  EXPECT_EQ(DecimalToMinorUnits("1.5", "JPY"), std::nullopt);
  EXPECT_EQ(DecimalToMinorUnits("0.999", "USD"), std::nullopt);
  EXPECT_EQ(DecimalToMinorUnits("abc", "USD"), std::nullopt);
}

TEST(PayPalTransformers, CredentialsFromJsonOrTwoLines) {
  auto json = paypal::ParseCredentials(R"({"client_id":"id1","client_secret":"s3cret"})");
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(json->client_id, "id1");
  EXPECT_EQ(json->client_secret.Reveal(), "s3cret");
  auto lines = paypal::ParseCredentials("id2\ns3cret2\n");
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ(lines->client_id, "id2");
  auto bad = paypal::ParseCredentials("only-one-line-s3cret");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::Not(HasSubstr("s3cret")));
}

TEST(PayPalTransformers, TokenRequestUsesBasicAuth) {
  auto req = paypal::BuildTokenRequest({"id", Secret("secret")});
  EXPECT_EQ(req.target(), "/v1/oauth2/token");
  EXPECT_EQ(req[http::field::authorization], "Basic " + Base64Encode("id:secret"));
  EXPECT_EQ(req.body(), "grant_type=client_credentials");
  auto token = paypal::ParseTokenResponse(200, R"({"access_token":"A21","expires_in":60})",
                                          std::chrono::steady_clock::time_point{});
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->value.Reveal(), "A21");
  EXPECT_EQ(token->expires_at, std::chrono::steady_clock::time_point{} + std::chrono::seconds(60));
  EXPECT_FALSE(paypal::ParseTokenResponse(401, R"({"error":"invalid_client"})", {}).ok());
}

TEST(PayPalTransformers, CaptureCarriesRequestIdAndDecimalAmount) {
  ChargeRequest r;
  r.idempotency_key = "key-1";
  r.paypal_order_id = "5O190127TN364715T";
  r.currency = "USD";
  r.minor_units = 499;
  auto req = paypal::BuildCaptureRequest(r, Secret("tok"));
  EXPECT_EQ(req.target(), "/v2/checkout/orders/5O190127TN364715T/capture");
  EXPECT_EQ(req["PayPal-Request-Id"], "key-1");
  EXPECT_EQ(req[http::field::authorization], "Bearer tok");
  EXPECT_THAT(req.body(), HasSubstr(R"("value":"4.99")"));
  EXPECT_THAT(req.body(), HasSubstr(R"("currency_code":"USD")"));
}

TEST(PayPalTransformers, PayPalErrorNamesMapOntoTheSharedOutcome) {
  auto ok = paypal::ParseCaptureResponse(
      201, R"({"id":"O1","status":"COMPLETED","purchase_units":[{"payments":{"captures":[{"id":"CAP1","status":"COMPLETED"}]}}]})");
  EXPECT_EQ(ok.result, ChargeResult::kApproved);
  EXPECT_EQ(ok.provider_reference, "CAP1");
  for (const char* issue : {"INSTRUMENT_DECLINED", "ORDER_NOT_APPROVED", "ORDER_ALREADY_CAPTURED"}) {
    auto d = paypal::ParseCaptureResponse(
        422, std::string(R"({"name":"UNPROCESSABLE_ENTITY","details":[{"issue":")") + issue + R"("}]})");
    EXPECT_EQ(d.result, ChargeResult::kDeclined) << issue;
    EXPECT_EQ(d.decline_code, issue);
  }
  EXPECT_EQ(paypal::ParseCaptureResponse(503, R"({"name":"SERVICE_UNAVAILABLE","charged":false})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(paypal::ParseCaptureResponse(500, R"({"name":"INTERNAL_SERVER_ERROR"})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(paypal::ParseCaptureResponse(400, R"({"name":"INVALID_REQUEST"})").result,
            ChargeResult::kFailed);
  EXPECT_TRUE(paypal::IsTokenRejected(401, R"({"error":"invalid_token"})"));
  EXPECT_FALSE(paypal::IsTokenRejected(401, R"({"error":"invalid_client"})"));
}

TEST(PayPalTransformers, LookupMapsCaptures) {
  EXPECT_EQ(paypal::ParseLookupResponse(200, R"({"captures":[]})").result, ChargeResult::kNotFound);
  auto found = paypal::ParseLookupResponse(200, R"({"captures":[{"id":"CAP2","status":"COMPLETED"}]})");
  EXPECT_EQ(found.result, ChargeResult::kApproved);
  EXPECT_EQ(found.provider_reference, "CAP2");
  auto declined = paypal::ParseLookupResponse(
      200, R"({"captures":[{"id":"CAP3","status":"DECLINED","issue":"INSTRUMENT_DECLINED"}]})");
  EXPECT_EQ(declined.result, ChargeResult::kDeclined);
  EXPECT_EQ(declined.decline_code, "INSTRUMENT_DECLINED");
}

PaymentOperation RefundOf(std::string capture_id) {
  PaymentOperation op;
  op.idempotency_key = "refund-rch_7";
  op.provider_reference = std::move(capture_id);
  op.currency = "USD";
  op.minor_units = 1250;
  op.reason = "buyer asked";
  return op;
}

// A refusal in the sandbox's exact shape (sandbox/paypal_api.cc, Invalid()).
std::string PayPalError(std::string_view name, std::string_view field, std::string_view issue) {
  return StrCat(R"({"name":")", name, R"(","message":"m","debug_id":"d1","details":[{"field":")",
                field, R"(","location":"body","issue":")", issue, R"(","description":"x"}]})");
}

TEST(PayPalTransformers, ARefundIsAFullRefundOfTheCaptureByRequestId) {
  auto req = paypal::BuildRefundRequest(RefundOf("CAP0123456789ABCDEF"), Secret("tok"));
  EXPECT_EQ(req.method(), http::verb::post);
  EXPECT_EQ(req.target(), "/v2/payments/captures/CAP0123456789ABCDEF/refund");
  EXPECT_EQ(req[http::field::authorization], "Bearer tok");
  EXPECT_EQ(req[http::field::content_type], "application/json");
  EXPECT_EQ(req["PayPal-Request-Id"], "refund-rch_7");
  auto body = nlohmann::json::parse(req.body());
  EXPECT_EQ(body, nlohmann::json::parse(
                      R"({"amount":{"currency_code":"USD","value":"12.50"},"note_to_payer":"buyer asked"})"));
  EXPECT_THAT(req.body(), ::testing::Not(HasSubstr("tok")));

  // No reason: no note. A zero-decimal currency has no decimal point.
  PaymentOperation yen = RefundOf("CAP1");
  yen.reason.clear();
  yen.currency = "JPY";
  yen.minor_units = 160;
  EXPECT_EQ(nlohmann::json::parse(paypal::BuildRefundRequest(yen, Secret("tok")).body()),
            nlohmann::json::parse(R"({"amount":{"currency_code":"JPY","value":"160"}})"));
  // A reason that is not UTF-8 does not throw.
  PaymentOperation bad = RefundOf("CAP1");
  bad.reason = "caf\xe9";
  EXPECT_NO_THROW(paypal::BuildRefundRequest(bad, Secret("tok")));
}

TEST(PayPalTransformers, ARefundNoteIsCutToPayPals255Characters) {
  PaymentOperation op = RefundOf("CAP1");
  std::string chars;
  for (int i = 0; i < 300; ++i) chars += "\xc3\xa9";  // é, two bytes
  op.reason = chars;
  auto note = nlohmann::json::parse(paypal::BuildRefundRequest(op, Secret("tok")).body())["note_to_payer"];
  EXPECT_EQ(note.get<std::string>(), chars.substr(0, 255 * 2));
  op.reason = std::string(255, 'x');
  note = nlohmann::json::parse(paypal::BuildRefundRequest(op, Secret("tok")).body())["note_to_payer"];
  EXPECT_EQ(note.get<std::string>(), op.reason);
}

TEST(PayPalTransformers, ACompletedRefundIsApprovedWithTheRefundId) {
  auto done = paypal::ParseRefundResponse(201, R"({"id":"REF0123456789ABCDEF","status":"COMPLETED",
      "amount":{"currency_code":"USD","value":"12.50"},"note_to_payer":"buyer asked",
      "paypal_request_id":"refund-rch_7","create_time":"2024-05-01T12:00:00Z",
      "links":[{"href":"/v2/payments/refunds/REF0123456789ABCDEF","rel":"self","method":"GET"}]})");
  EXPECT_EQ(done.result, ChargeResult::kApproved);
  EXPECT_EQ(done.provider_reference, "REF0123456789ABCDEF");
  EXPECT_EQ(done.decline_code, "");
  // It said OK without a completed refund we can keep: it may have refunded.
  EXPECT_EQ(paypal::ParseRefundResponse(201, "not json").result, ChargeResult::kUnknown);
  EXPECT_EQ(paypal::ParseRefundResponse(201, R"({"id":"REF1","status":"PENDING"})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(paypal::ParseRefundResponse(201, R"({"status":"COMPLETED"})").result,
            ChargeResult::kUnknown);
  auto failed = paypal::ParseRefundResponse(201, R"({"id":"REF2","status":"FAILED"})");
  EXPECT_EQ(failed.result, ChargeResult::kDeclined);
  EXPECT_EQ(failed.decline_code, "REFUND_FAILED");
}

TEST(PayPalTransformers, ARefusedRefundIsDeclinedWithPayPalsIssue) {
  for (auto [field, issue] : std::initializer_list<std::pair<const char*, const char*>>{
           {"capture_id", "CAPTURE_FULLY_REFUNDED"},
           {"capture_id", "REFUND_NOT_ALLOWED"},
           {"/amount/value", "PARTIAL_REFUND_NOT_ALLOWED"},
           {"/amount/value", "REFUND_AMOUNT_EXCEEDED"},
           {"/amount/currency_code", "REFUND_CAPTURE_CURRENCY_MISMATCH"}}) {
    auto d = paypal::ParseRefundResponse(422, PayPalError("UNPROCESSABLE_ENTITY", field, issue));
    EXPECT_EQ(d.result, ChargeResult::kDeclined) << issue;
    EXPECT_EQ(d.decline_code, issue);
    EXPECT_THAT(d.message, HasSubstr(issue));
  }
}

TEST(PayPalTransformers, ARefundRequestRefusedBeforeAnythingHappenedIsAFailure) {
  auto unknown = paypal::ParseRefundResponse(
      404, PayPalError("RESOURCE_NOT_FOUND", "capture_id", "INVALID_RESOURCE_ID"));
  EXPECT_EQ(unknown.result, ChargeResult::kFailed);
  EXPECT_EQ(unknown.decline_code, "");
  EXPECT_THAT(unknown.message, HasSubstr("INVALID_RESOURCE_ID"));
  EXPECT_EQ(paypal::ParseRefundResponse(
                400, PayPalError("INVALID_REQUEST", "/note_to_payer", "INVALID_PARAMETER_VALUE"))
                .result,
            ChargeResult::kFailed);
  EXPECT_EQ(paypal::ParseRefundResponse(
                415, PayPalError("UNSUPPORTED_MEDIA_TYPE", "Content-Type", "UNSUPPORTED_MEDIA_TYPE"))
                .result,
            ChargeResult::kFailed);
  EXPECT_EQ(paypal::ParseRefundResponse(401, R"({"error":"invalid_token"})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(paypal::ParseRefundResponse(422, "").result, ChargeResult::kFailed);
  // The request id names another request: this one did nothing.
  auto reused = paypal::ParseRefundResponse(
      422, PayPalError("UNPROCESSABLE_ENTITY", "PayPal-Request-Id", "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"));
  EXPECT_EQ(reused.result, ChargeResult::kFailed);
  EXPECT_THAT(reused.message, HasSubstr("PAYPAL_REQUEST_ID_PREVIOUSLY_USED"));
}

TEST(PayPalTransformers, ARefundServerErrorIsUnknownUnlessItSaysNothingWasDone) {
  EXPECT_EQ(paypal::ParseRefundResponse(500, R"({"name":"INTERNAL_SERVER_ERROR","charged":false})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(paypal::ParseRefundResponse(500, R"({"name":"INTERNAL_SERVER_ERROR"})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(paypal::ParseRefundResponse(503, "").result, ChargeResult::kUnknown);
}

TEST(PayPalTransformers, RefundLookupIsByRequestId) {
  auto req = paypal::BuildRefundLookupRequest("refund rch/7", Secret("tok"));
  EXPECT_EQ(req.method(), http::verb::get);
  EXPECT_EQ(req.target(), "/v2/payments/refunds?paypal_request_id=refund%20rch%2F7");
  EXPECT_EQ(req[http::field::authorization], "Bearer tok");
  auto found = paypal::ParseRefundLookupResponse(
      200, R"({"refunds":[{"id":"REF3","status":"COMPLETED","amount":{"currency_code":"USD","value":"1.00"}}]})");
  EXPECT_EQ(found.result, ChargeResult::kApproved);
  EXPECT_EQ(found.provider_reference, "REF3");
  EXPECT_EQ(paypal::ParseRefundLookupResponse(200, R"({"refunds":[]})").result,
            ChargeResult::kNotFound);
  // A capture's list is not a refund's.
  EXPECT_EQ(paypal::ParseRefundLookupResponse(200, R"({"captures":[]})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(paypal::ParseRefundLookupResponse(503, "").result, ChargeResult::kUnknown);
  EXPECT_EQ(paypal::ParseRefundLookupResponse(
                400, PayPalError("INVALID_REQUEST", "paypal_request_id", "MISSING_REQUIRED_PARAMETER"))
                .result,
            ChargeResult::kFailed);
}

class TokenCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  void TearDown() override {
    work_.reset();
    for (auto& t : threads_) t.join();
  }
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
};

TEST_F(TokenCacheTest, ConcurrentCallersShareOneFetchAndExpiryFetchesOnceMore) {
  std::atomic<int> fetched{0};
  std::atomic<std::chrono::seconds::rep> lifetime{3600};
  TokenCache cache(
      [&](std::chrono::steady_clock::time_point) -> asio::awaitable<absl::StatusOr<AccessToken>> {
        const int n = ++fetched;
        // Stay in flight for a while so that other callers pile up behind.
        asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
        co_await t.async_wait(asio::use_awaitable);
        co_return AccessToken{Secret("tok-" + std::to_string(n)),
                              std::chrono::steady_clock::now() + std::chrono::seconds(lifetime.load())};
      },
      std::chrono::seconds(60));

  auto get_many = [&](int n) {
    std::vector<std::future<absl::StatusOr<Secret>>> f;
    for (int i = 0; i < n; ++i) f.push_back(asio::co_spawn(io_, cache.Get(std::chrono::steady_clock::now() + std::chrono::seconds(5)), asio::use_future));
    std::vector<std::string> out;
    for (auto& x : f) {
      auto r = x.get();
      EXPECT_TRUE(r.ok());
      out.push_back(std::string(r->Reveal()));
    }
    return out;
  };
  for (const std::string& t : get_many(50)) EXPECT_EQ(t, "tok-1");
  EXPECT_EQ(fetched.load(), 1);
  EXPECT_EQ(cache.fetches(), 1u);
  get_many(10);
  EXPECT_EQ(fetched.load(), 1);  // still valid: no fetch

  // A token inside the refresh margin counts as expired: one new fetch for all.
  cache.Invalidate(Secret("tok-1"));
  lifetime = 30;  // shorter than the 60 s margin: every Get refetches
  for (const std::string& t : get_many(20)) EXPECT_EQ(t, "tok-2");
  EXPECT_EQ(fetched.load(), 2);
}

TEST_F(TokenCacheTest, FailedFetchIsReportedToEveryWaiter) {
  TokenCache cache(
      [](std::chrono::steady_clock::time_point) -> asio::awaitable<absl::StatusOr<AccessToken>> {
        asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(20));
        co_await t.async_wait(asio::use_awaitable);
        co_return absl::UnavailableError("token endpoint down");
      },
      std::chrono::seconds(1));
  std::vector<std::future<absl::StatusOr<Secret>>> f;
  for (int i = 0; i < 5; ++i) f.push_back(asio::co_spawn(io_, cache.Get(std::chrono::steady_clock::now() + std::chrono::seconds(5)), asio::use_future));
  for (auto& x : f) EXPECT_FALSE(x.get().ok());
}

}  // namespace
}  // namespace recharge
