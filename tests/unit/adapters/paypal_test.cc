#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "adapters/money.h"
#include "adapters/paypal/token_cache.h"
#include "adapters/paypal/transformers.h"
#include "io/crypto.h"

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
