// The gRPC edge: thin callback services. Every call enters through the
// CallGate (authentication, roles, rate limits, audit) and runs as a
// coroutine on the Asio io_context; the reactor is finished exactly once.
// absl::Status becomes grpc::Status in one place (ToGrpcStatus).
//
// Thread-safety: the services hold only references to thread-safe parts.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "absl/status/status.h"
#include "gateway/call_gate.h"
#include "gateway/catalogue.h"
#include "gateway/event_feed.h"
#include "gateway/recharge_flow.h"
#include "gateway/refund_flow.h"
#include "ledger/ledger_store.h"
#include "recharge/v1/recharge.grpc.pb.h"

namespace recharge {

// Every RPC enters through `gate` (authentication, roles, rate limits).
class RechargeGatewayService final : public recharge::v1::RechargeGateway::CallbackService {
 public:
  RechargeGatewayService(CallGate& gate, RechargeFlow& flow, RefundFlow& refunds,
                         LedgerStore& ledger, const Catalogue& catalogue, EventFeed& feed);

  grpc::ServerUnaryReactor* RecordRecharge(grpc::CallbackServerContext* ctx,
                                           const recharge::v1::RecordRechargeRequest* request,
                                           recharge::v1::RecordRechargeResponse* response) override;
  grpc::ServerUnaryReactor* GetRecharge(grpc::CallbackServerContext* ctx,
                                        const recharge::v1::GetRechargeRequest* request,
                                        recharge::v1::Recharge* response) override;
  grpc::ServerUnaryReactor* ListRecharges(grpc::CallbackServerContext* ctx,
                                          const recharge::v1::ListRechargesRequest* request,
                                          recharge::v1::ListRechargesResponse* response) override;
  grpc::ServerUnaryReactor* ListPackages(grpc::CallbackServerContext* ctx,
                                         const recharge::v1::ListPackagesRequest* request,
                                         recharge::v1::ListPackagesResponse* response) override;
  grpc::ServerUnaryReactor* RefundRecharge(grpc::CallbackServerContext* ctx,
                                           const recharge::v1::RefundRechargeRequest* request,
                                           recharge::v1::Recharge* response) override;
  grpc::ServerWriteReactor<recharge::v1::RechargeEvent>* WatchRecharges(
      grpc::CallbackServerContext* ctx, const recharge::v1::WatchRechargesRequest* request) override;

  // Shutdown has begun: new recharges are refused with UNAVAILABLE (retry on
  // another instance) while the ones in flight finish.
  void StartDraining() { draining_ = true; }

 private:
  std::atomic<bool> draining_{false};
  CallGate& gate_;
  RechargeFlow& flow_;
  RefundFlow& refunds_;
  LedgerStore& ledger_;
  const Catalogue& catalogue_;
  EventFeed& feed_;
};

// Page tokens for ListRecharges: opaque to clients, bound to the user_id
// they were issued for.
std::string EncodePageToken(const RechargeCursor& cursor, const std::string& user_id);
absl::StatusOr<RechargeCursor> DecodePageToken(const std::string& token, const std::string& user_id);

}  // namespace recharge
