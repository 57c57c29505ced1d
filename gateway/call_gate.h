// CallGate: the one entry of every RPC of RechargeGateway and FraudAdmin
// (DESIGN §8). Before any handler runs it
//   1. authenticates the caller (bearer token, or the client certificate on
//      an mTLS port): UNAUTHENTICATED otherwise;
//   2. authorises the RPC from the table in auth.h: PERMISSION_DENIED naming
//      the role needed;
//   3. applies the caller's rate limit: RESOURCE_EXHAUSTED, nothing done;
// then runs the handler's body as a coroutine on the io_context (or inline,
// for a body that does no I/O) and finishes the reactor exactly once. An
// RPC that changes something (RpcPolicy::audited) is recorded in the
// ledger's audit log, and logged as an `admin_action` line, before its
// reactor finishes, whatever its outcome; a denied attempt by a known caller
// is recorded too. Handlers never check roles themselves.
//
// Thread-safety: Serve() may be called from any gRPC thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <exception>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "gateway/auth.h"
#include "io/asio.h"
#include "io/log.h"
#include "ledger/ledger_store.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

// The one conversion from the core's status to the wire's (service.cc).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Counts an answered RPC (`method` its full name) by code, and its time
// since `started` (recharge_rpc_requests_total, recharge_rpc_duration_seconds).
void ObserveRpc(std::string_view method, grpc::StatusCode code,
                std::chrono::steady_clock::time_point started);

// What a handler's body knows of its call.
struct CallInfo {
  const Caller* caller = nullptr;
  const RpcPolicy* rpc = nullptr;
  std::chrono::steady_clock::time_point deadline;
};

// What an audited RPC acted on, from its request (and response).
struct AuditFacts {
  std::string target;
  std::string note;
  std::string detail;
};
AuditFacts AuditFactsOf(const recharge::v1::ClearSellerFlagRequest& request,
                        const recharge::v1::ClearSellerFlagResponse& response);
AuditFacts AuditFactsOf(const recharge::v1::ReloadRulesRequest& request,
                        const recharge::v1::ReloadRulesResponse& response);
AuditFacts AuditFactsOf(const recharge::v1::ResolveReviewRequest& request,
                        const recharge::v1::Recharge& response);
AuditFacts AuditFactsOf(const recharge::v1::RefundRechargeRequest& request,
                        const recharge::v1::Recharge& response);
AuditFacts AuditFactsOf(const recharge::v1::ReportChargebackRequest& request,
                        const recharge::v1::ReportChargebackResponse& response);
template <typename Request, typename Response>
AuditFacts AuditFactsOf(const Request&, const Response&) {
  return {};
}

// Replaces every run of 13 to 19 digits that passes the Luhn check with
// "[card number removed]": free text (an ops note) never carries a PAN into
// the audit log.
std::string RedactCardNumbers(std::string_view text);

class CallGate {
 public:
  struct Options {
    // A call without a deadline gets this one; a longer one is cut to it.
    std::chrono::milliseconds call_deadline{30'000};
    // Client certificates identify callers (the port is mTLS).
    bool trust_client_certificates = false;
  };

  // `callers` and `audit_log` must outlive the gate.
  CallGate(asio::io_context& io, const CallerRegistry& callers, LedgerStore& audit_log,
           Options options);

  // Admits the call to `method` (its full name, in the table of auth.h),
  // then runs `body(const CallInfo&)`, which returns absl::Status (no I/O:
  // run inline) or asio::awaitable<absl::Status> (run as a coroutine).
  // `request` and `response` are gRPC's, valid until the reactor finishes.
  template <typename Request, typename Response, typename Body>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, std::string_view method,
                                  const Request* request, Response* response, Body body);

  std::chrono::steady_clock::time_point DeadlineOf(const grpc::CallbackServerContext& ctx) const;

  // Authentication, roles and the rate limit for a streaming RPC, which
  // runs its own reactor (and gets no deadline: a stream may stay open).
  absl::Status AdmitStream(grpc::CallbackServerContext& ctx, std::string_view method) const;

 private:
  // Authentication, authorisation and the rate limit. On a denial,
  // `*known` is the caller if it was authenticated.
  absl::StatusOr<const Caller*> Admit(grpc::CallbackServerContext& ctx, const RpcPolicy& rpc,
                                      const Caller** known) const;
  // Records an audited call (ledger + log line); never fails the call.
  asio::awaitable<void> Audit(const Caller& caller, const RpcPolicy& rpc, AuditFacts facts,
                              absl::Status outcome);
  void FinishAuditedDenial(grpc::ServerUnaryReactor* reactor, const Caller& caller,
                           const RpcPolicy& rpc, AuditFacts facts, absl::Status denial);

  template <typename Request, typename Response, typename Body>
  static asio::awaitable<absl::Status> Run(CallGate* gate, CallInfo info, const Request* request,
                                           Response* response, Body body) {
    absl::Status status = co_await body(info);
    if (info.rpc->audited) {
      co_await gate->Audit(*info.caller, *info.rpc, AuditFactsOf(*request, *response), status);
    }
    co_return status;
  }

  asio::io_context& io_;
  const CallerRegistry& callers_;
  LedgerStore& audit_log_;
  const Options options_;
};

template <typename Request, typename Response, typename Body>
grpc::ServerUnaryReactor* CallGate::Serve(grpc::CallbackServerContext* ctx, std::string_view method,
                                          const Request* request, Response* response, Body body) {
  const RpcPolicy& rpc = PolicyOf(method);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  // Every answer is counted by RPC and code, and timed (recharge_rpc_*).
  auto finish = [reactor, method, started = std::chrono::steady_clock::now()](
                    const grpc::Status& status) {
    ObserveRpc(method, status.error_code(), started);
    reactor->Finish(status);
  };
  const Caller* known = nullptr;
  absl::StatusOr<const Caller*> caller = Admit(*ctx, rpc, &known);
  if (!caller.ok()) {
    if (rpc.audited && known != nullptr && absl::IsPermissionDenied(caller.status())) {
      ObserveRpc(method, grpc::StatusCode::PERMISSION_DENIED, std::chrono::steady_clock::now());
      FinishAuditedDenial(reactor, *known, rpc, AuditFactsOf(*request, Response()), caller.status());
    } else {
      finish(ToGrpcStatus(caller.status()));
    }
    return reactor;
  }
  CallInfo info{*caller, &rpc, DeadlineOf(*ctx)};
  using Result = std::invoke_result_t<Body, const CallInfo&>;
  if constexpr (std::is_same_v<Result, absl::Status>) {
    finish(ToGrpcStatus(body(info)));
  } else {
    asio::co_spawn(io_, Run(this, info, request, response, std::move(body)),
                   [finish](std::exception_ptr e, absl::Status status) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         LogError("handler_exception", {{"what", ex.what()}});
                       } catch (...) {
                         LogError("handler_exception", {{"what", "unknown"}});
                       }
                       finish(grpc::Status(grpc::StatusCode::INTERNAL, "internal error"));
                       return;
                     }
                     finish(ToGrpcStatus(status));
                   });
  }
  return reactor;
}

}  // namespace recharge
