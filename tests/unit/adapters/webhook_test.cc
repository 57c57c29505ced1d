// Provider notifications: the signature scheme (Stripe's t=,v1=) and the
// card and e-wallet notification bodies the sandbox sends
// (sandbox/README.md, "Webhooks").
#include <gtest/gtest.h>

#include "adapters/card/transformers.h"
#include "adapters/ewallet/transformers.h"
#include "adapters/notifications.h"
#include "adapters/webhook_signature.h"
#include "io/config_node.h"
#include "io/crypto.h"
#include "io/strings.h"

namespace recharge {
namespace {

using std::chrono::seconds;
using std::chrono::system_clock;

const Secret kSecret("whsec_unit_test_secret_0123456789");
constexpr int64_t kT = 1'800'000'000;
const system_clock::time_point kNow = system_clock::time_point(seconds(kT));

std::string Sign(std::string_view body, int64_t t = kT, const Secret& secret = kSecret) {
  return StrCat("t=", t, ",v1=", HexEncode(HmacSha256(secret, StrCat(t, ".", body))));
}

TEST(WebhookSignature, AcceptsTheSignatureOfTheExactBodyWithinTolerance) {
  const std::string body = R"({"id":"evt_1"})";
  EXPECT_TRUE(VerifyWebhookSignature(kSecret, Sign(body), body, kNow, seconds(300)).ok());
  // Skew either way up to the tolerance; a second v1 (rotation) may match.
  EXPECT_TRUE(VerifyWebhookSignature(kSecret, Sign(body, kT - 300), body, kNow, seconds(300)).ok());
  EXPECT_TRUE(VerifyWebhookSignature(kSecret, Sign(body, kT + 300), body, kNow, seconds(300)).ok());
  const std::string rotated = StrCat(Sign(body, kT, Secret("whsec_old_secret_0000000000000000")),
                                     ",v1=", Sign(body).substr(Sign(body).find("v1=") + 3));
  EXPECT_TRUE(VerifyWebhookSignature(kSecret, rotated, body, kNow, seconds(300)).ok()) << rotated;
}

TEST(WebhookSignature, RefusesAForgedStaleOrAlteredNotification) {
  const std::string body = R"({"id":"evt_1"})";
  auto code = [&](std::string_view header, std::string_view b) {
    return VerifyWebhookSignature(kSecret, header, b, kNow, seconds(300)).code();
  };
  EXPECT_EQ(code(Sign(body, kT, Secret("whsec_forged_00000000000000000000")), body),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(code(Sign(body), R"({"id":"evt_2"})"), absl::StatusCode::kUnauthenticated);
  absl::Status stale = VerifyWebhookSignature(kSecret, Sign(body, kT - 301), body, kNow, seconds(300));
  EXPECT_EQ(stale.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(stale.message().find("timestamp"), std::string_view::npos) << stale;
  // The signature is over "<t>.<body>": another t with the same digest fails.
  const std::string moved = "t=" + std::to_string(kT + 1) + Sign(body).substr(Sign(body).find(','));
  EXPECT_EQ(code(moved, body), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(code("", body), absl::StatusCode::kUnauthenticated);
  // The message never carries the expected digest.
  absl::Status forged = VerifyWebhookSignature(kSecret, Sign(body, kT, Secret("whsec_x_000000000000000000000000")),
                                               body, kNow, seconds(300));
  const std::string expected = Sign(body).substr(Sign(body).find("v1=") + 3);
  EXPECT_EQ(std::string(forged.message()).find(expected), std::string::npos);
}

TEST(WebhookSignature, HeaderErrorsNameThePart) {
  auto msg = [](std::string_view h) { return std::string(ParseSignatureHeader(h).status().message()); };
  EXPECT_NE(msg("v1=" + std::string(64, 'a')).find("no t"), std::string::npos);
  EXPECT_NE(msg("t=123").find("no v1"), std::string::npos);
  EXPECT_NE(msg("t=abc,v1=" + std::string(64, 'a')).find("t must"), std::string::npos);
  EXPECT_NE(msg("t=1,t=2,v1=" + std::string(64, 'a')).find("t must"), std::string::npos);
  EXPECT_NE(msg("t=1,v1=XYZ").find("v1 must"), std::string::npos);
  EXPECT_NE(msg("t=1,garbage").find("'='"), std::string::npos);
  EXPECT_NE(msg(std::string(2000, 'a')).find("too long"), std::string::npos);
  absl::StatusOr<SignatureHeader> ok = ParseSignatureHeader("t=5, v0=zz, v1=" + std::string(64, 'b'));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->timestamp, 5);
  EXPECT_EQ(ok->v1, std::vector<std::string>{std::string(64, 'b')});
}

TEST(CardNotification, AnAuthenticatedChargeIsAnUncapturedHoldOfItsKey) {
  auto n = card::ParseNotification(
      R"({"id":"evt_9","type":"charge.authenticated","created":1,"data":{"object":)"
      R"({"id":"ch_1","object":"charge","status":"succeeded","captured":false,"idempotency_key":"k-1"}}})");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->event_id, "evt_9");
  EXPECT_EQ(n->event_type, "charge.authenticated");
  EXPECT_EQ(n->idempotency_key, "k-1");
  EXPECT_EQ(n->outcome.result, ChargeResult::kApproved);
  EXPECT_FALSE(n->outcome.captured);
  EXPECT_EQ(n->outcome.provider_reference, "ch_1");
}

TEST(CardNotification, AFailedAuthenticationIsADeclineWithItsCode) {
  auto n = card::ParseNotification(
      R"({"id":"evt_8","type":"charge.authentication_failed","data":{"object":)"
      R"({"id":"ch_2","status":"failed","failure_code":"authentication_failed","idempotency_key":"k-2"}}})");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->outcome.result, ChargeResult::kDeclined);
  EXPECT_EQ(n->outcome.decline_code, "authentication_failed");
}

TEST(CardNotification, MalformedBodiesNameTheField) {
  auto msg = [](std::string_view b) { return std::string(card::ParseNotification(b).status().message()); };
  EXPECT_NE(msg("not json").find("body"), std::string::npos);
  EXPECT_NE(msg(R"({"type":"x","data":{"object":{}}})").find("id"), std::string::npos);
  EXPECT_NE(msg(R"({"id":"e","data":{}})").find("type"), std::string::npos);
  EXPECT_NE(msg(R"({"id":"e","type":"t","data":{}})").find("data.object"), std::string::npos);
  EXPECT_NE(msg(R"({"id":"e","type":"t","data":{"object":{"id":"ch_1","status":"succeeded"}}})")
                .find("idempotency_key"), std::string::npos);
}

TEST(EWalletNotification, SucceededCancelledAndFailedPayments) {
  auto parse = [](std::string_view type, std::string_view payment) {
    return ewallet::ParseNotification(StrCat(R"({"event_id":"EV-1","event_type":")", type,
                                             R"(","created_at":1,"payment":)", payment, "}"));
  };
  auto ok = parse("payment.succeeded", R"({"payment_id":"EW-1","status":"SUCCESS","merchant_ref":"rch_1"})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->event_id, "EV-1");
  EXPECT_EQ(ok->recharge_id, "rch_1");
  EXPECT_EQ(ok->outcome.result, ChargeResult::kApproved);
  EXPECT_EQ(ok->outcome.provider_reference, "EW-1");
  auto cancelled = parse("payment.cancelled", R"({"payment_id":"EW-2","status":"CANCELLED","merchant_ref":"rch_2"})");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->outcome.result, ChargeResult::kFailed);
  EXPECT_EQ(cancelled->outcome.decline_code, "cancelled");
  auto failed = parse("payment.failed",
                      R"({"payment_id":"EW-3","status":"FAILED","failure_code":"INSUFFICIENT_BALANCE","merchant_ref":"rch_3"})");
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->outcome.result, ChargeResult::kDeclined);
  EXPECT_EQ(failed->outcome.decline_code, "INSUFFICIENT_BALANCE");
  EXPECT_NE(std::string(parse("payment.succeeded", R"({"payment_id":"EW-1","status":"SUCCESS"})")
                            .status().message()).find("merchant_ref"), std::string::npos);
  EXPECT_NE(std::string(ewallet::ParseNotification("[]").status().message()).find("body"),
            std::string::npos);
}

}  // namespace
}  // namespace recharge

namespace recharge {
namespace {

absl::StatusOr<NotificationSettings> SettingsFrom(const std::string& yaml) {
  absl::StatusOr<ConfigNode> node = ConfigNode::LoadString(yaml, "adapters.yaml");
  if (!node.ok()) return node.status();
  return NotificationSettings::FromConfig(*node);
}

InboundNotification Inbound(const std::string& body, const std::string& signature,
                            system_clock::time_point at) {
  InboundNotification n;
  n.body = body;
  n.header = [signature](std::string_view name) -> std::optional<std::string_view> {
    if (name == "Sandbox-Signature" && !signature.empty()) return std::string_view(signature);
    return std::nullopt;
  };
  n.received_at = at;
  return n;
}

TEST(NotificationSettings, ANotifyUrlNeedsASecretAndAnHttpsRoute) {
  auto no_secret = SettingsFrom("notify_url: https://127.0.0.1:8444/webhooks/gcash-ph\n");
  ASSERT_FALSE(no_secret.ok());
  EXPECT_NE(no_secret.status().message().find("notify_url"), std::string_view::npos)
      << no_secret.status();
  ::setenv("RECHARGE_UNIT_WEBHOOK_SECRET", "whsec_unit_env_secret", 1);
  auto plain_http = SettingsFrom(
      "notify_url: http://127.0.0.1:8444/webhooks/x\nwebhook_secret_env: RECHARGE_UNIT_WEBHOOK_SECRET\n");
  EXPECT_FALSE(plain_http.ok());
  auto unset_env = SettingsFrom("webhook_secret_env: RECHARGE_UNIT_NO_SUCH_VARIABLE\n");
  ASSERT_FALSE(unset_env.ok());
  EXPECT_NE(unset_env.status().message().find("RECHARGE_UNIT_NO_SUCH_VARIABLE"),
            std::string_view::npos);
  auto defaults = SettingsFrom("{}\n");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->action_expiry, std::chrono::minutes(15));
  EXPECT_EQ(defaults->tolerance, std::chrono::minutes(5));
  EXPECT_TRUE(defaults->notify_url.empty());
}

TEST(NotificationSettings, VerifiesWithTheInstancesSecretWithinItsTolerance) {
  ::setenv("RECHARGE_UNIT_WEBHOOK_SECRET", "whsec_unit_env_secret", 1);
  auto s = SettingsFrom(
      "notify_url: https://127.0.0.1:8444/webhooks/gcash-ph\n"
      "webhook_secret_env: RECHARGE_UNIT_WEBHOOK_SECRET\n"
      "webhook_tolerance: 60s\naction_expiry: 2m\n");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->action_expiry, std::chrono::minutes(2));
  const std::string body = R"({"event_id":"EV-1"})";
  const Secret secret("whsec_unit_env_secret");
  EXPECT_TRUE(s->Verify(Inbound(body, Sign(body, kT, secret), kNow), "Sandbox-Signature").ok());
  // Another secret, a stale timestamp, no header: 401s, nothing read.
  EXPECT_TRUE(absl::IsUnauthenticated(
      s->Verify(Inbound(body, Sign(body, kT, kSecret), kNow), "Sandbox-Signature")));
  EXPECT_TRUE(absl::IsUnauthenticated(
      s->Verify(Inbound(body, Sign(body, kT, secret), kNow + seconds(61)), "Sandbox-Signature")));
  absl::Status missing = s->Verify(Inbound(body, "", kNow), "Sandbox-Signature");
  EXPECT_TRUE(absl::IsUnauthenticated(missing));
  EXPECT_NE(missing.message().find("Sandbox-Signature"), std::string_view::npos);
  // An instance without a secret takes no notification at all.
  auto none = SettingsFrom("{}\n");
  EXPECT_TRUE(absl::IsUnauthenticated(
      none->Verify(Inbound(body, Sign(body, kT, secret), kNow), "Sandbox-Signature")));
}

}  // namespace
}  // namespace recharge
