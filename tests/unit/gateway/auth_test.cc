// Callers, roles and the RPC table: authentication by token and by
// certificate name, authorisation, token buckets with an injected clock.
#include "gateway/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "gateway/call_gate.h"
#include "io/crypto.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {
namespace {

using ::testing::HasSubstr;

CallerConfig MakeCaller(std::string name, RoleSet roles, std::vector<std::string> tokens,
                        std::vector<std::string> subjects = {}) {
  CallerConfig c;
  c.name = std::move(name);
  c.roles = roles;
  for (const std::string& t : tokens) c.token_sha256.push_back(Sha256(t));
  c.certificate_subjects = std::move(subjects);
  return c;
}

std::unique_ptr<CallerRegistry> Registry() {
  auto r = CallerRegistry::Create({MakeCaller("app-server", kRoleApp, {"tok-app-1", "tok-app-2"}, {"app-client"}),
                                   MakeCaller("ops-team", kRoleOps, {"tok-ops"}, {"ops-client"})});
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

CallCredentials Bearer(std::string_view header) {
  CallCredentials c;
  c.authorization.push_back(header);
  return c;
}

TEST(CallerRegistry, EitherTokenOfACallerAuthenticatesIt) {
  auto reg = Registry();
  for (const char* h : {"Bearer tok-app-1", "Bearer tok-app-2", "bearer tok-app-1"}) {
    auto c = reg->Authenticate(Bearer(h));
    ASSERT_TRUE(c.ok()) << h << ": " << c.status();
    EXPECT_EQ((*c)->name, "app-server");
  }
  auto ops = reg->Authenticate(Bearer("Bearer tok-ops"));
  ASSERT_TRUE(ops.ok());
  EXPECT_EQ((*ops)->name, "ops-team");
}

TEST(CallerRegistry, NoUnknownOrMalformedCredentialsAreUnauthenticatedWithoutEchoingTheToken) {
  auto reg = Registry();
  auto none = reg->Authenticate(CallCredentials{});
  EXPECT_TRUE(absl::IsUnauthenticated(none.status()));
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no credentials"));
  auto wrong = reg->Authenticate(Bearer("Bearer sesame-open-123"));
  EXPECT_TRUE(absl::IsUnauthenticated(wrong.status()));
  EXPECT_THAT(std::string(wrong.status().message()), ::testing::Not(HasSubstr("sesame")));
  EXPECT_TRUE(absl::IsUnauthenticated(reg->Authenticate(Bearer("Basic dXNlcjpwYXNz")).status()));
  EXPECT_TRUE(absl::IsUnauthenticated(reg->Authenticate(Bearer("Bearer ")).status()));
  EXPECT_TRUE(absl::IsUnauthenticated(reg->Authenticate(Bearer("Bearer " + std::string(600, 'a'))).status()));
  CallCredentials two;
  two.authorization = {"Bearer tok-app-1", "Bearer tok-ops"};
  EXPECT_TRUE(absl::IsUnauthenticated(reg->Authenticate(two).status()));
}

TEST(CallerRegistry, ACertificateNameAuthenticatesAndMustAgreeWithAToken) {
  auto reg = Registry();
  CallCredentials cert;
  cert.certificate_names = {"ops-client", "DNS-ish-other"};
  auto c = reg->Authenticate(cert);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->name, "ops-team");

  cert.authorization = {"Bearer tok-ops"};
  EXPECT_TRUE(reg->Authenticate(cert).ok());
  cert.authorization = {"Bearer tok-app-1"};
  auto clash = reg->Authenticate(cert);
  EXPECT_TRUE(absl::IsUnauthenticated(clash.status()));
  EXPECT_THAT(std::string(clash.status().message()), HasSubstr("different callers"));
  cert.authorization = {"Bearer not-a-token"};
  EXPECT_TRUE(absl::IsUnauthenticated(reg->Authenticate(cert).status()));

  CallCredentials stranger;
  stranger.certificate_names = {"somebody-else"};
  EXPECT_THAT(std::string(reg->Authenticate(stranger).status().message()),
              HasSubstr("not a configured caller"));
}

TEST(CallerRegistry, RefusesDuplicatesAndCallersThatCannotAuthenticate) {
  EXPECT_FALSE(CallerRegistry::Create({}).ok());
  auto dup_name = CallerRegistry::Create({MakeCaller("a", kRoleApp, {"t1"}), MakeCaller("a", kRoleOps, {"t2"})});
  EXPECT_THAT(std::string(dup_name.status().message()), HasSubstr("duplicate name"));
  auto dup_token = CallerRegistry::Create({MakeCaller("a", kRoleApp, {"t1"}), MakeCaller("b", kRoleOps, {"t1"})});
  EXPECT_THAT(std::string(dup_token.status().message()), HasSubstr("also configured for \"a\""));
  auto dup_subject = CallerRegistry::Create(
      {MakeCaller("a", kRoleApp, {}, {"cn"}), MakeCaller("b", kRoleOps, {}, {"cn"})});
  EXPECT_FALSE(dup_subject.ok());
  auto no_roles = CallerRegistry::Create({MakeCaller("a", 0, {"t1"})});
  EXPECT_THAT(std::string(no_roles.status().message()), HasSubstr("at least one role"));
  auto no_way = CallerRegistry::Create({MakeCaller("a", kRoleApp, {})});
  EXPECT_THAT(std::string(no_way.status().message()), HasSubstr("no way to authenticate"));
}

TEST(Authorize, NamesTheRoleNeededAndTheCallersRoles) {
  Caller app{"app-server", kRoleApp, nullptr};
  Caller ops{"ops-team", kRoleOps, nullptr};
  const RpcPolicy& clear = PolicyOf("/recharge.v1.FraudAdmin/ClearSellerFlag");
  absl::Status denied = Authorize(app, clear);
  EXPECT_TRUE(absl::IsPermissionDenied(denied));
  EXPECT_EQ(denied.message(),
            "recharge.v1.FraudAdmin/ClearSellerFlag requires role ops; caller \"app-server\" has app");
  EXPECT_TRUE(Authorize(ops, clear).ok());
  const RpcPolicy& record = PolicyOf("/recharge.v1.RechargeGateway/RecordRecharge");
  EXPECT_TRUE(Authorize(app, record).ok());
  EXPECT_THAT(std::string(Authorize(ops, record).message()), HasSubstr("requires role app"));
  const RpcPolicy& get = PolicyOf("/recharge.v1.RechargeGateway/GetRecharge");
  EXPECT_TRUE(Authorize(app, get).ok());
  EXPECT_TRUE(Authorize(ops, get).ok());
}

TEST(RpcPolicies, CoverEveryRpcOfTheContractAndAuditEveryAdminChange) {
  std::set<std::string> in_proto;
  const auto* file = recharge::v1::RecordRechargeRequest::descriptor()->file();
  for (int s = 0; s < file->service_count(); ++s) {
    for (int m = 0; m < file->service(s)->method_count(); ++m) {
      const auto* method = file->service(s)->method(m);
      in_proto.insert("/" + method->service()->full_name() + "/" + method->name());
    }
  }
  std::set<std::string> in_table;
  for (const RpcPolicy& p : RpcPolicies()) {
    EXPECT_NE(p.roles, 0u) << p.method;
    in_table.insert(std::string(p.method));
  }
  EXPECT_EQ(in_proto, in_table);
  std::set<std::string> audited;
  for (const RpcPolicy& p : RpcPolicies()) {
    if (p.audited) audited.insert(std::string(ShortMethodName(p.method)));
    // Only ops may change things on the admin side.
    if (p.method.find("/recharge.v1.FraudAdmin/") == 0) {
      EXPECT_EQ(p.roles, kRoleOps) << p.method;
    }
  }
  // RefundRecharge moves money back: audited whoever calls it (app or ops).
  EXPECT_EQ(audited, (std::set<std::string>{"ClearSellerFlag", "ReloadRules", "ResolveReview",
                                            "ReportChargeback", "RefundRecharge"}));
}

TEST(TokenBucket, AllowsTheBurstThenRefillsAtTheRate) {
  TokenBucket b(2.0, 3.0);
  const auto t0 = TokenBucket::Clock::now() + std::chrono::seconds(1);
  EXPECT_TRUE(b.TryTake(t0));  // refilled to the burst (3) at most
  EXPECT_TRUE(b.TryTake(t0));
  EXPECT_TRUE(b.TryTake(t0));
  EXPECT_FALSE(b.TryTake(t0));
  EXPECT_FALSE(b.TryTake(t0 + std::chrono::milliseconds(400)));  // 0.8 token
  EXPECT_TRUE(b.TryTake(t0 + std::chrono::milliseconds(550)));   // 1.1
  EXPECT_FALSE(b.TryTake(t0 + std::chrono::milliseconds(550)));
  EXPECT_TRUE(b.TryTake(t0 + std::chrono::seconds(60)));  // capped at the burst
  EXPECT_TRUE(b.TryTake(t0 + std::chrono::seconds(60)));
  EXPECT_TRUE(b.TryTake(t0 + std::chrono::seconds(60)));
  EXPECT_FALSE(b.TryTake(t0 + std::chrono::seconds(60)));
}

TEST(RedactCardNumbers, RemovesLuhnValidRunsOnly) {
  EXPECT_EQ(RedactCardNumbers("buyer paid with 4242424242424242, ok"),
            "buyer paid with [card number removed], ok");
  EXPECT_EQ(RedactCardNumbers("order 4242424242424241 ticket 12345"),
            "order 4242424242424241 ticket 12345");  // fails Luhn: kept
  EXPECT_EQ(RedactCardNumbers("378282246310005"), "[card number removed]");  // 15 digits
  EXPECT_EQ(RedactCardNumbers(""), "");
}

}  // namespace
}  // namespace recharge
