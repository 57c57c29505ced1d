#include "gateway/auth.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstdlib>

#include "io/crypto.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

constexpr size_t kMaxTokenBytes = 512;

bool StartsWithBearer(std::string_view v) {
  if (v.size() < 7) return false;
  static constexpr std::string_view kBearer = "bearer ";
  for (size_t i = 0; i < kBearer.size(); ++i) {
    char c = v[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kBearer[i]) return false;
  }
  return true;
}

absl::Status Unauthenticated(std::string_view why) {
  return absl::UnauthenticatedError(
      StrCat(why, " (send `authorization: Bearer <token>` metadata, or a client certificate on an mTLS port)"));
}

}  // namespace

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "app") return kRoleApp;
  if (name == "ops") return kRoleOps;
  return std::nullopt;
}

std::string RoleNames(RoleSet roles) {
  std::string out;
  if (roles & kRoleApp) out += "app";
  if (roles & kRoleOps) out += out.empty() ? "ops" : ",ops";
  return out.empty() ? "none" : out;
}

absl::StatusOr<std::unique_ptr<CallerRegistry>> CallerRegistry::Create(
    std::vector<CallerConfig> callers) {
  if (callers.empty()) {
    return absl::InvalidArgumentError(
        "callers: at least one caller is required (every call must be authenticated)");
  }
  std::unique_ptr<CallerRegistry> reg(new CallerRegistry());
  for (CallerConfig& c : callers) {
    const std::string where = StrCat("callers: \"", c.name, "\"");
    if (c.name.empty()) return absl::InvalidArgumentError("callers: a caller has no name");
    for (const auto& existing : reg->callers_) {
      if (existing->name == c.name) return absl::InvalidArgumentError(StrCat(where, ": duplicate name"));
    }
    if (c.roles == 0) return absl::InvalidArgumentError(StrCat(where, ": needs at least one role (app, ops)"));
    if (c.token_sha256.empty() && c.certificate_subjects.empty()) {
      return absl::InvalidArgumentError(
          StrCat(where, ": needs token_sha256 or certificate_subjects (no way to authenticate)"));
    }
    auto caller = std::make_unique<Caller>();
    caller->name = c.name;
    caller->roles = c.roles;
    if (c.rate_per_second > 0) {
      caller->bucket = std::make_unique<TokenBucket>(
          c.rate_per_second, c.rate_burst > 0 ? c.rate_burst : std::max(1.0, c.rate_per_second));
    }
    for (std::string& digest : c.token_sha256) {
      if (digest.size() != 32) return absl::InvalidArgumentError(StrCat(where, ": a token digest is not 32 bytes"));
      for (const TokenEntry& t : reg->tokens_) {
        if (t.digest == digest) {
          return absl::InvalidArgumentError(
              StrCat(where, ": a token hash is also configured for \"", t.caller->name, "\""));
        }
      }
      reg->tokens_.push_back({std::move(digest), caller.get()});
    }
    for (std::string& subject : c.certificate_subjects) {
      for (const auto& [s, other] : reg->subjects_) {
        if (s == subject) {
          return absl::InvalidArgumentError(
              StrCat(where, ": certificate subject \"", subject, "\" is also \"", other->name, "\"'s"));
        }
      }
      reg->subjects_.emplace_back(std::move(subject), caller.get());
    }
    reg->callers_.push_back(std::move(caller));
  }
  return reg;
}

absl::StatusOr<const Caller*> CallerRegistry::Authenticate(const CallCredentials& credentials) const {
  const Caller* by_token = nullptr;
  if (credentials.authorization.size() > 1) {
    return Unauthenticated("more than one authorization header");
  }
  if (credentials.authorization.size() == 1) {
    std::string_view value = credentials.authorization[0];
    if (!StartsWithBearer(value)) return Unauthenticated("the authorization header is not a Bearer token");
    std::string_view token = value.substr(7);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    if (token.empty() || token.size() > kMaxTokenBytes) return Unauthenticated("unknown bearer token");
    const std::string digest = Sha256(token);
    // Every configured hash is compared, whatever matched: the time taken
    // does not depend on which token (if any) it is.
    for (const TokenEntry& t : tokens_) {
      const bool equal = CRYPTO_memcmp(t.digest.data(), digest.data(), digest.size()) == 0;
      if (equal) by_token = t.caller;
    }
    if (by_token == nullptr) return Unauthenticated("unknown bearer token");
  }
  const Caller* by_cert = nullptr;
  for (const std::string& name : credentials.certificate_names) {
    for (const auto& [subject, caller] : subjects_) {
      if (subject == name) {
        if (by_cert != nullptr && by_cert != caller) {
          return Unauthenticated("the client certificate names two different callers");
        }
        by_cert = caller;
      }
    }
  }
  if (by_token != nullptr && by_cert != nullptr && by_token != by_cert) {
    return Unauthenticated("the client certificate and the bearer token name different callers");
  }
  if (by_token != nullptr) return by_token;
  if (by_cert != nullptr) return by_cert;
  if (!credentials.certificate_names.empty()) {
    return Unauthenticated("the client certificate is not a configured caller's");
  }
  return Unauthenticated("no credentials");
}

const std::vector<RpcPolicy>& RpcPolicies() {
  static const std::vector<RpcPolicy> kTable = {
      {"/recharge.v1.RechargeGateway/RecordRecharge", kRoleApp, false},
      {"/recharge.v1.RechargeGateway/GetRecharge", kRoleApp | kRoleOps, false},
      {"/recharge.v1.RechargeGateway/ListRecharges", kRoleApp | kRoleOps, false},
      {"/recharge.v1.RechargeGateway/ListPackages", kRoleApp | kRoleOps, false},
      {"/recharge.v1.RechargeGateway/WatchRecharges", kRoleApp | kRoleOps, false},
      {"/recharge.v1.RechargeGateway/RefundRecharge", kRoleApp | kRoleOps, true},
      {"/recharge.v1.FraudAdmin/ListFlaggedSellers", kRoleOps, false},
      {"/recharge.v1.FraudAdmin/GetSellerRisk", kRoleOps, false},
      {"/recharge.v1.FraudAdmin/ClearSellerFlag", kRoleOps, true},
      {"/recharge.v1.FraudAdmin/ReloadRules", kRoleOps, true},
      {"/recharge.v1.FraudAdmin/GetRuleStats", kRoleOps, false},
      {"/recharge.v1.FraudAdmin/ListReviews", kRoleOps, false},
      {"/recharge.v1.FraudAdmin/ResolveReview", kRoleOps, true},
      {"/recharge.v1.FraudAdmin/ReportChargeback", kRoleOps, true},
      {"/recharge.v1.FraudAdmin/ListAuditEvents", kRoleOps, false},
      {"/recharge.v1.FraudAdmin/BacktestRules", kRoleOps, false},
  };
  return kTable;
}

const RpcPolicy& PolicyOf(std::string_view method) {
  for (const RpcPolicy& p : RpcPolicies()) {
    if (p.method == method) return p;
  }
  LogError("rpc_without_policy", {{"method", std::string(method)}});
  std::abort();  // a handler whose RPC is missing from the table: a bug
}

absl::Status Authorize(const Caller& caller, const RpcPolicy& rpc) {
  if ((caller.roles & rpc.roles) != 0) return absl::OkStatus();
  return absl::PermissionDeniedError(StrCat(rpc.method.substr(1), " requires role ",
                                            RoleNames(rpc.roles).find(',') == std::string::npos
                                                ? RoleNames(rpc.roles)
                                                : StrCat("app or ops"),
                                            "; caller \"", caller.name, "\" has ",
                                            RoleNames(caller.roles)));
}

std::string_view ShortMethodName(std::string_view method) {
  const size_t slash = method.rfind('/');
  return slash == std::string_view::npos ? method : method.substr(slash + 1);
}

}  // namespace recharge
