#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <utility>

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

PaymentOperation RefundOf(std::string payment_id) {
  PaymentOperation op;
  op.idempotency_key = "refund-rch_9";
  op.provider_reference = std::move(payment_id);
  op.currency = "PHP";
  op.minor_units = 4500;
  op.reason = "duplicate";
  return op;
}

TEST(EWalletTransformers, ARefundIsASignedFullRefundOfThePaymentByKey) {
  const Secret secret("wallet-secret");
  auto req = ewallet::BuildRefundRequest(RefundOf("EW-0123456789AB"), "gcash", secret, 1700000000);
  EXPECT_EQ(req.method(), http::verb::post);
  EXPECT_EQ(req.target(), "/ewallet/v1/gcash/payments/EW-0123456789AB/refunds");
  EXPECT_EQ(req[http::field::content_type], "application/json");
  EXPECT_EQ(req["X-Idempotency-Key"], "refund-rch_9");
  EXPECT_EQ(req["X-Timestamp"], "1700000000");
  EXPECT_EQ(req.body(), R"({"amount":4500,"reason":"duplicate"})");
  EXPECT_EQ(req["X-Signature"],
            HexEncode(HmacSha256(secret, "1700000000\nPOST\n/ewallet/v1/gcash/payments/"
                                         "EW-0123456789AB/refunds\n{\"amount\":4500,\"reason\":\"duplicate\"}")));
  EXPECT_THAT(std::string(req["X-Signature"]), ::testing::Not(HasSubstr("wallet-secret")));
  // No reason: only the amount.
  PaymentOperation quiet = RefundOf("EW-1");
  quiet.reason.clear();
  EXPECT_EQ(ewallet::BuildRefundRequest(quiet, "gcash", secret, 1700000000).body(),
            R"({"amount":4500})");
  // A reason that is not UTF-8 does not throw.
  PaymentOperation bad = RefundOf("EW-1");
  bad.reason = "caf\xe9";
  EXPECT_NO_THROW(ewallet::BuildRefundRequest(bad, "gcash", secret, 1700000000));
}

TEST(EWalletTransformers, ARefundReasonIsCutToTheWallets255Characters) {
  PaymentOperation op = RefundOf("EW-1");
  std::string chars;
  for (int i = 0; i < 300; ++i) chars += "\xe2\x82\xac";  // €, three bytes
  op.reason = chars;
  EXPECT_EQ(ewallet::BuildRefundRequest(op, "gcash", Secret("s"), 1700000000).body(),
            R"({"amount":4500,"reason":")" + chars.substr(0, 255 * 3) + R"("})");
  op.reason = std::string(255, 'x');
  EXPECT_EQ(ewallet::BuildRefundRequest(op, "gcash", Secret("s"), 1700000000).body(),
            R"({"amount":4500,"reason":")" + op.reason + R"("})");
}

TEST(EWalletTransformers, ARefundedPaymentIsApprovedWithTheRefundId) {
  auto done = ewallet::ParseRefundResponse(200, R"({"refund_id":"RF-0123456789AB","payment_id":"EW-1",
      "provider":"gcash","status":"REFUNDED","amount":4500,"currency":"PHP","reason":"duplicate",
      "idempotency_key":"refund-rch_9","created":1714564800})");
  EXPECT_EQ(done.result, ChargeResult::kApproved);
  EXPECT_EQ(done.provider_reference, "RF-0123456789AB");
  // It said OK without a refund we can keep: it may have refunded.
  EXPECT_EQ(ewallet::ParseRefundResponse(200, "<html>").result, ChargeResult::kUnknown);
  EXPECT_EQ(ewallet::ParseRefundResponse(200, R"({"refund_id":"RF-2","status":"PROCESSING"})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(ewallet::ParseRefundResponse(200, R"({"status":"REFUNDED"})").result,
            ChargeResult::kUnknown);
}

TEST(EWalletTransformers, ARefusedRefundIsDeclinedWithTheWalletsCode) {
  for (const char* code : {"ALREADY_REFUNDED", "PAYMENT_NOT_REFUNDABLE"}) {
    auto d = ewallet::ParseRefundResponse(409, std::string(R"({"code":")") + code + R"("})");
    EXPECT_EQ(d.result, ChargeResult::kDeclined) << code;
    EXPECT_EQ(d.decline_code, code);
  }
}

TEST(EWalletTransformers, ARefundRequestRefusedBeforeAnythingHappenedIsAFailure) {
  for (auto [status, body] : std::initializer_list<std::pair<int, const char*>>{
           {404, R"({"code":"PAYMENT_NOT_FOUND"})"},
           {404, R"({"code":"UNKNOWN_PROVIDER"})"},
           {400, R"({"code":"INVALID_REQUEST","field":"amount","message":"m"})"},
           {401, R"({"code":"INVALID_SIGNATURE"})"},
           {401, R"({"code":"STALE_TIMESTAMP"})"},
           {409, R"({"code":"IDEMPOTENCY_CONFLICT"})"},
           {409, ""}}) {
    auto f = ewallet::ParseRefundResponse(status, body);
    EXPECT_EQ(f.result, ChargeResult::kFailed) << status << " " << body;
    EXPECT_EQ(f.decline_code, "");
  }
  EXPECT_THAT(ewallet::ParseRefundResponse(409, R"({"code":"IDEMPOTENCY_CONFLICT"})").message,
              HasSubstr("IDEMPOTENCY_CONFLICT"));
}

TEST(EWalletTransformers, ARefundServerErrorIsUnknownUnlessItSaysNothingWasDone) {
  EXPECT_EQ(ewallet::ParseRefundResponse(500, R"({"code":"SYSTEM_ERROR","charged":false})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(ewallet::ParseRefundResponse(500, R"({"code":"SYSTEM_ERROR"})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(ewallet::ParseRefundResponse(502, "").result, ChargeResult::kUnknown);
}

TEST(EWalletTransformers, RefundLookupIsSignedAndByKey) {
  const Secret secret("s");
  auto req = ewallet::BuildRefundLookupRequest("refund rch/9", "gcash", secret, 1700000000);
  EXPECT_EQ(req.method(), http::verb::get);
  EXPECT_EQ(req.target(), "/ewallet/v1/gcash/refunds?idempotency_key=refund%20rch%2F9");
  EXPECT_EQ(req["X-Timestamp"], "1700000000");
  EXPECT_EQ(req["X-Signature"], ewallet::Signature(secret, 1700000000, "GET", req.target(), ""));
  auto found = ewallet::ParseRefundLookupResponse(
      200, R"({"refunds":[{"refund_id":"RF-3","payment_id":"EW-1","status":"REFUNDED"}]})");
  EXPECT_EQ(found.result, ChargeResult::kApproved);
  EXPECT_EQ(found.provider_reference, "RF-3");
  EXPECT_EQ(ewallet::ParseRefundLookupResponse(200, R"({"refunds":[]})").result,
            ChargeResult::kNotFound);
  // A payments list is not a refunds list.
  EXPECT_EQ(ewallet::ParseRefundLookupResponse(200, R"({"payments":[]})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(ewallet::ParseRefundLookupResponse(500, R"({"code":"SYSTEM_ERROR"})").result,
            ChargeResult::kUnknown);
  EXPECT_EQ(ewallet::ParseRefundLookupResponse(401, R"({"code":"INVALID_SIGNATURE"})").result,
            ChargeResult::kFailed);
}

}  // namespace
}  // namespace recharge

namespace recharge {
namespace {

TEST(EWalletTransformers, ARedirectPaymentAsksForTheFlowAndTheNotification) {
  ChargeRequest r;
  r.idempotency_key = "key-r";
  r.recharge_id = "rch_r";
  r.wallet_account = "09171234567";
  r.minor_units = 5500;
  r.currency = "PHP";
  ewallet::PaymentFlow flow;
  flow.redirect = true;
  flow.notify_url = "https://127.0.0.1:8444/webhooks/gcash-ph";
  auto req = ewallet::BuildPaymentRequest(r, "gcash", Secret("s"), 1700000000, flow);
  EXPECT_THAT(req.body(), HasSubstr(R"("flow":"redirect")"));
  EXPECT_THAT(req.body(), HasSubstr(R"("notify_url":"https://127.0.0.1:8444/webhooks/gcash-ph")"));
  EXPECT_THAT(ewallet::BuildPaymentRequest(r, "gcash", Secret("s"), 1700000000).body(),
              ::testing::Not(HasSubstr("flow")));
}

TEST(EWalletTransformers, APendingApprovalRequiresActionWithTheConfiguredLink) {
  const std::string body =
      R"({"payment_id":"P1","status":"PENDING_APPROVAL","approval_url":"https://psp/approve/P1",
          "deep_link":"gcash://pay?payment_id=P1","qr_payload":"https://psp/approve/P1?qr"})";
  ChargeOutcome page = ewallet::ParsePaymentResponse(200, body);
  EXPECT_EQ(page.result, ChargeResult::kRequiresAction);
  ASSERT_TRUE(page.next_action.has_value());
  EXPECT_EQ(page.next_action->type, NextActionInfo::Type::kRedirect);
  EXPECT_EQ(page.next_action->url, "https://psp/approve/P1");
  ChargeOutcome link = ewallet::ParsePaymentResponse(200, body, NextActionInfo::Type::kDeepLink);
  EXPECT_EQ(link.next_action->url, "gcash://pay?payment_id=P1");
  ChargeOutcome qr = ewallet::ParsePaymentResponse(200, body, NextActionInfo::Type::kQr);
  EXPECT_EQ(qr.next_action->url, "https://psp/approve/P1?qr");
  EXPECT_EQ(ewallet::ParsePaymentResponse(200, R"({"payment_id":"P1","status":"PENDING_APPROVAL"})")
                .result,
            ChargeResult::kUnknown);
  ChargeOutcome cancelled =
      ewallet::ParseLookupResponse(200, R"({"payments":[{"payment_id":"P1","status":"CANCELLED"}]})");
  EXPECT_EQ(cancelled.result, ChargeResult::kFailed);
  EXPECT_EQ(cancelled.decline_code, "cancelled");
}

TEST(EWalletTransformers, CancellingAPendingPaymentIsASignedPostOnIt) {
  PaymentOperation op;
  op.idempotency_key = "rch_r:void";
  op.provider_reference = "P1";
  const Secret secret("s");
  auto req = ewallet::BuildCancelRequest(op, "gcash", secret, 1700000000);
  EXPECT_EQ(req.target(), "/ewallet/v1/gcash/payments/P1/cancel");
  EXPECT_EQ(req["X-Signature"], ewallet::Signature(secret, 1700000000, "POST",
                                                   "/ewallet/v1/gcash/payments/P1/cancel", req.body()));
  EXPECT_EQ(ewallet::ParseCancelResponse(200, R"({"payment_id":"P1","status":"CANCELLED"})").result,
            ChargeResult::kApproved);
  ChargeOutcome completed = ewallet::ParseCancelResponse(409, R"({"code":"ALREADY_COMPLETED"})");
  EXPECT_EQ(completed.result, ChargeResult::kDeclined);
  EXPECT_EQ(completed.decline_code, "ALREADY_COMPLETED");
  EXPECT_EQ(ewallet::ParseCancelResponse(200, R"({"payment_id":"P1","status":"SUCCESS"})").result,
            ChargeResult::kDeclined);
  EXPECT_EQ(ewallet::ParseCancelResponse(502, "").result, ChargeResult::kUnknown);
  EXPECT_EQ(ewallet::ParseCancelResponse(500, R"({"code":"SYSTEM_ERROR","charged":false})").result,
            ChargeResult::kFailed);
  EXPECT_EQ(ewallet::ParseCancelResponse(404, R"({"code":"PAYMENT_NOT_FOUND"})").result,
            ChargeResult::kFailed);
}

}  // namespace
}  // namespace recharge
