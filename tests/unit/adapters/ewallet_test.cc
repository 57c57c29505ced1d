#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "adapters/ewallet/transformers.h"
#include "io/crypto.h"

namespace recharge {
namespace {

using ::testing::HasSubstr;

TEST(EWalletTransformers, SignatureIsHmacOverTimestampMethodTargetBody) {
  const Secret secret("wallet-secret");
  EXPECT_EQ(ewallet::Signature(secret, 1700000000, "POST", "/ewallet/v1/gcash/payments", "{}"),
            HexEncode(HmacSha256(secret, "1700000000\nPOST\n/ewallet/v1/gcash/payments\n{}")));
  EXPECT_NE(ewallet::Signature(secret, 1700000001, "POST", "/p", "{}"),
            ewallet::Signature(secret, 1700000000, "POST", "/p", "{}"));
}

TEST(EWalletTransformers, PaymentRequestIsSignedAndCarriesTheKey) {
  ChargeRequest r;
  r.idempotency_key = "key-9";
  r.recharge_id = "rch_9";
  r.wallet_account = "09171234567";
  r.minor_units = 5500;
  r.currency = "PHP";
  const Secret secret("s");
  auto req = ewallet::BuildPaymentRequest(r, "gcash", secret, 1700000000);
  EXPECT_EQ(req.target(), "/ewallet/v1/gcash/payments");
  EXPECT_EQ(req["X-Idempotency-Key"], "key-9");
  EXPECT_EQ(req["X-Timestamp"], "1700000000");
  EXPECT_EQ(req["X-Signature"],
            ewallet::Signature(secret, 1700000000, "POST", "/ewallet/v1/gcash/payments", req.body()));
  EXPECT_THAT(req.body(), HasSubstr(R"("amount":5500)"));
  EXPECT_THAT(req.body(), HasSubstr(R"("currency":"PHP")"));
  auto lookup = ewallet::BuildLookupRequest("key-9", "gcash", secret, 1700000000);
  EXPECT_EQ(lookup.target(), "/ewallet/v1/gcash/payments?idempotency_key=key-9");
  EXPECT_EQ(lookup["X-Signature"],
            ewallet::Signature(secret, 1700000000, "GET", lookup.target(), ""));
}

TEST(EWalletTransformers, OutcomesMapOntoTheSharedEnum) {
  auto ok = ewallet::ParsePaymentResponse(200, R"({"payment_id":"EW-1","status":"SUCCESS"})");
  EXPECT_EQ(ok.result, ChargeResult::kApproved);
  EXPECT_EQ(ok.provider_reference, "EW-1");
  auto declined = ewallet::ParsePaymentResponse(
      200, R"({"payment_id":"EW-2","status":"FAILED","failure_code":"INSUFFICIENT_BALANCE"})");
  EXPECT_EQ(declined.result, ChargeResult::kDeclined);
  EXPECT_EQ(declined.decline_code, "INSUFFICIENT_BALANCE");
  EXPECT_EQ(ewallet::ParsePaymentResponse(503, R"({"code":"SYSTEM_BUSY","charged":false})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(ewallet::ParsePaymentResponse(504, "").result, ChargeResult::kUnknown);
  auto sig = ewallet::ParsePaymentResponse(401, R"({"code":"INVALID_SIGNATURE"})");
  EXPECT_EQ(sig.result, ChargeResult::kFailed);
  EXPECT_THAT(sig.message, HasSubstr("INVALID_SIGNATURE"));
  EXPECT_EQ(ewallet::ParseLookupResponse(200, R"({"payments":[]})").result, ChargeResult::kNotFound);
  EXPECT_EQ(ewallet::ParseLookupResponse(200, R"({"payments":[{"payment_id":"EW-3","status":"SUCCESS"}]})").result,
            ChargeResult::kApproved);
}

}  // namespace
}  // namespace recharge
