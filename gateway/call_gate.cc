#include "gateway/call_gate.h"

#include <google/protobuf/util/time_util.h>

#include "absl/status/status.h"
#include "gateway/validation.h"
#include "io/gateway_metrics.h"
#include "io/grpc_code_name.h"
#include "io/strings.h"

namespace recharge {

void ObserveRpc(std::string_view method, grpc::StatusCode code,
                std::chrono::steady_clock::time_point started) {
  const std::string_view rpc = RpcShortName(method);
  GatewayMetrics& m = Metrics();
  m.rpc_requests.With({rpc, GrpcCodeName(code)}).Inc();
  m.rpc_seconds.With({rpc}).Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}
namespace {

using namespace recharge::v1;

constexpr size_t kMaxAuditField = 1024;

std::string Clip(std::string_view text, size_t max) {
  return std::string(text.substr(0, max));
}

}  // namespace

std::string RedactCardNumbers(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] < '0' || text[i] > '9') {
      out.push_back(text[i++]);
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    const std::string_view run = text.substr(i, j - i);
    if (run.size() >= 13 && run.size() <= 19 && LuhnValid(run)) {
      out += "[card number removed]";
    } else {
      out += run;
    }
    i = j;
  }
  return out;
}

AuditFacts AuditFactsOf(const ClearSellerFlagRequest& request, const ClearSellerFlagResponse& response) {
  return {request.seller_id(), request.note(), response.was_flagged() ? "was flagged" : ""};
}

AuditFacts AuditFactsOf(const ReloadRulesRequest&, const ReloadRulesResponse& response) {
  return {"fraud_rules", "", response.rules_version().empty() ? "" : StrCat("rules_version ", response.rules_version())};
}

AuditFacts AuditFactsOf(const ResolveReviewRequest& request, const Recharge& response) {
  std::string detail = request.approve() ? "approve" : "reject";
  if (response.status() != RECHARGE_STATUS_UNSPECIFIED) {
    detail += StrCat(" -> ", RechargeStatus_Name(response.status()));
  }
  return {request.recharge_id(), request.note(), std::move(detail)};
}

AuditFacts AuditFactsOf(const RefundRechargeRequest& request, const Recharge& response) {
  std::string detail;
  if (response.status() != RECHARGE_STATUS_UNSPECIFIED) {
    detail = StrCat(RechargeStatus_Name(response.status()), response.replayed() ? " (replayed)" : "");
  }
  return {request.recharge_id(), request.reason(), std::move(detail)};
}

AuditFacts AuditFactsOf(const ReportChargebackRequest& request, const ReportChargebackResponse& response) {
  std::string detail;
  for (const std::string& b : response.blocked()) detail += StrCat(detail.empty() ? "blocked " : ",", b);
  if (response.seller_flagged()) detail += detail.empty() ? "seller flagged" : "; seller flagged";
  return {request.recharge_id(), request.reason(), std::move(detail)};
}

CallGate::CallGate(asio::io_context& io, const CallerRegistry& callers, LedgerStore& audit_log,
                   Options options)
    : io_(io), callers_(callers), audit_log_(audit_log), options_(options) {}

std::chrono::steady_clock::time_point CallGate::DeadlineOf(const grpc::CallbackServerContext& ctx) const {
  const auto now_sys = std::chrono::system_clock::now();
  const auto now = std::chrono::steady_clock::now();
  const auto remaining = ctx.deadline() - now_sys;
  if (remaining > options_.call_deadline) return now + options_.call_deadline;
  return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
}

absl::Status CallGate::AdmitStream(grpc::CallbackServerContext& ctx, std::string_view method) const {
  const Caller* known = nullptr;
  return Admit(ctx, PolicyOf(method), &known).status();
}

absl::StatusOr<const Caller*> CallGate::Admit(grpc::CallbackServerContext& ctx, const RpcPolicy& rpc,
                                              const Caller** known) const {
  CallCredentials credentials;
  const auto& metadata = ctx.client_metadata();
  auto [begin, end] = metadata.equal_range("authorization");
  for (auto it = begin; it != end; ++it) {
    credentials.authorization.emplace_back(it->second.data(), it->second.size());
  }
  if (options_.trust_client_certificates) {
    std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
    if (auth != nullptr && auth->IsPeerAuthenticated()) {
      for (const char* property : {"x509_common_name", "x509_subject_alternative_name"}) {
        for (const grpc::string_ref& v : auth->FindPropertyValues(property)) {
          credentials.certificate_names.emplace_back(v.data(), v.size());
        }
      }
    }
  }
  const std::string_view name = ShortMethodName(rpc.method);
  absl::StatusOr<const Caller*> caller = callers_.Authenticate(credentials);
  if (!caller.ok()) {
    LogWarn("call_unauthenticated", {{"rpc", std::string(name)},
                                     {"peer", ctx.peer()},
                                     {"reason", std::string(caller.status().message())}});
    return caller.status();
  }
  *known = *caller;
  if (absl::Status s = Authorize(**caller, rpc); !s.ok()) {
    LogWarn("call_denied", {{"rpc", std::string(name)},
                            {"caller", (*caller)->name},
                            {"roles", RoleNames((*caller)->roles)}});
    return s;
  }
  if ((*caller)->bucket != nullptr && !(*caller)->bucket->TryTake(std::chrono::steady_clock::now())) {
    const TokenBucket& b = *(*caller)->bucket;
    LogDebug("call_rate_limited", {{"rpc", std::string(name)}, {"caller", (*caller)->name}});
    return absl::ResourceExhaustedError(
        StrCat("caller \"", (*caller)->name, "\" is over its rate limit of ",
               static_cast<int64_t>(b.per_second()), " calls/s (burst ",
               static_cast<int64_t>(b.burst()), "); nothing was done, retry later"));
  }
  return caller;
}

asio::awaitable<void> CallGate::Audit(const Caller& caller, const RpcPolicy& rpc, AuditFacts facts,
                                      absl::Status outcome) {
  AuditEvent event;
  *event.mutable_at() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  event.set_caller(caller.name);
  event.set_rpc(std::string(ShortMethodName(rpc.method)));
  event.set_target(Clip(facts.target, 256));
  event.set_note(RedactCardNumbers(Clip(facts.note, kMaxAuditField)));
  event.set_outcome(absl::StatusCodeToString(outcome.code()));
  event.set_detail(RedactCardNumbers(
      Clip(outcome.ok() ? facts.detail : std::string(outcome.message()), kMaxAuditField)));
  LogInfo("admin_action", {{"caller", event.caller()},
                           {"rpc", event.rpc()},
                           {"target", event.target()},
                           {"note", event.note()},
                           {"outcome", event.outcome()},
                           {"detail", event.detail()}});
  absl::Status stored = co_await audit_log_.AppendAudit(event);
  if (!stored.ok()) {
    // The action stands (it happened); the log line above keeps the fact.
    LogError("audit_write_failed", {{"rpc", event.rpc()},
                                    {"caller", event.caller()},
                                    {"target", event.target()},
                                    {"error", std::string(stored.message())}});
  }
}

void CallGate::FinishAuditedDenial(grpc::ServerUnaryReactor* reactor, const Caller& caller,
                                   const RpcPolicy& rpc, AuditFacts facts, absl::Status denial) {
  asio::co_spawn(
      io_,
      [](CallGate* gate, const Caller* caller, const RpcPolicy* rpc, AuditFacts facts,
         absl::Status denial) -> asio::awaitable<absl::Status> {
        co_await gate->Audit(*caller, *rpc, std::move(facts), denial);
        co_return denial;
      }(this, &caller, &rpc, std::move(facts), std::move(denial)),
      [reactor](std::exception_ptr, absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
}

}  // namespace recharge
