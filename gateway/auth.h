// Callers, roles and the RPC table (DESIGN §8). A caller is a named client
// of the gateway (an app server, an ops tool) with a set of roles; it proves
// who it is with a bearer token (only the token's SHA-256 is configured) or,
// on an mTLS port, with the subject CN or a SAN of its client certificate.
// Each RPC names the roles that may call it. CallGate (call_gate.h) applies
// all of this in one place, before any handler runs.
//
// Thread-safety: a CallerRegistry is immutable after Create(), except for
// the callers' token buckets, which are internally synchronised.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "io/token_bucket.h"
#include "io/token_bucket.h"

namespace recharge {

// Roles as bits of a set.
enum Role : uint32_t {
  kRoleApp = 1u << 0,  // RecordRecharge, GetRecharge, ListRecharges, ListPackages
  kRoleOps = 1u << 1,  // FraudAdmin, plus the read RPCs of RechargeGateway
};
using RoleSet = uint32_t;

// "app" | "ops"; nullopt for an unknown name.
std::optional<Role> ParseRole(std::string_view name);
// "app", "ops", "app,ops" ("none" for the empty set).
std::string RoleNames(RoleSet roles);

struct CallerConfig {
  std::string name;
  RoleSet roles = 0;
  std::vector<std::string> token_sha256;          // raw 32-byte digests
  std::vector<std::string> certificate_subjects;  // CN or SAN of the client certificate
  double rate_per_second = 0;                     // 0: no limit
  double rate_burst = 0;
};

struct Caller {
  std::string name;
  RoleSet roles = 0;
  std::unique_ptr<TokenBucket> bucket;  // null: no limit
};

// What a call presents.
struct CallCredentials {
  // The values of the call's `authorization` metadata (normally 0 or 1).
  std::vector<std::string_view> authorization;
  // CN and SANs of the client certificate, only when the transport verified
  // it against the configured CA (mTLS).
  std::vector<std::string> certificate_names;
};

class CallerRegistry {
 public:
  // Errors (INVALID_ARGUMENT) name the caller and what is wrong: a duplicate
  // name, token or subject, no roles, no way to authenticate.
  static absl::StatusOr<std::unique_ptr<CallerRegistry>> Create(std::vector<CallerConfig> callers);

  // The caller the credentials prove, or UNAUTHENTICATED. A token is
  // compared (as its SHA-256) against every configured hash in constant
  // time. A presented token that is unknown fails even if a certificate
  // names a caller; a certificate and a token naming different callers fail.
  // Messages never contain the token.
  absl::StatusOr<const Caller*> Authenticate(const CallCredentials& credentials) const;

  size_t size() const { return callers_.size(); }

 private:
  CallerRegistry() = default;
  struct TokenEntry {
    std::string digest;  // 32 bytes
    const Caller* caller;
  };
  std::vector<std::unique_ptr<Caller>> callers_;
  std::vector<TokenEntry> tokens_;
  std::vector<std::pair<std::string, const Caller*>> subjects_;
};

// One RPC of the public API and who may call it.
struct RpcPolicy {
  std::string_view method;  // full name: "/recharge.v1.FraudAdmin/ClearSellerFlag"
  RoleSet roles;
  bool audited;             // changes something: recorded in the audit log
};

// The table: every RPC of RechargeGateway and FraudAdmin. Health and
// reflection are not in it (they need no credentials).
const std::vector<RpcPolicy>& RpcPolicies();
// REQUIRES: `method` is in the table (a programming error otherwise: aborts).
const RpcPolicy& PolicyOf(std::string_view method);

// PERMISSION_DENIED naming the role needed, or OK.
absl::Status Authorize(const Caller& caller, const RpcPolicy& rpc);

// "recharge.v1.FraudAdmin/ClearSellerFlag" -> "ClearSellerFlag".
std::string_view ShortMethodName(std::string_view method);

}  // namespace recharge
