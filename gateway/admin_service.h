// FraudAdminService: the ops API (DESIGN §4 FraudAdmin): flagged sellers and
// their risk, rule reload and statistics, the review queue, chargebacks.
// Thin like the RechargeGateway service: each call enters through the
// CallGate (role ops; the calls that change something are audited there),
// runs as a coroutine, and errors leave through ToGrpcStatus.
//
// Thread-safety: holds only references to thread-safe parts.
#pragma once

#include <boost/asio/thread_pool.hpp>

#include "adapters/router.h"
#include "gateway/call_gate.h"
#include "gateway/rules_sync.h"
#include "fraud/rule_engine.h"
#include "ledger/ledger_store.h"
#include "recharge/v1/recharge.grpc.pb.h"

namespace recharge {

class FraudAdminService final : public recharge::v1::FraudAdmin::CallbackService {
 public:
  // `engine` may be null (fraud.rules empty: the allow-all policy); the
  // rule and seller calls then answer FAILED_PRECONDITION.
  // `sync` (may be null: one replica) tells the other replicas of a reload.
  FraudAdminService(CallGate& gate, RuleEngine* engine, LedgerStore& ledger,
                    const Router& router, RulesSync* sync = nullptr);

  grpc::ServerUnaryReactor* ListFlaggedSellers(grpc::CallbackServerContext* ctx,
                                               const recharge::v1::ListFlaggedSellersRequest* request,
                                               recharge::v1::ListFlaggedSellersResponse* response) override;
  grpc::ServerUnaryReactor* GetSellerRisk(grpc::CallbackServerContext* ctx,
                                          const recharge::v1::GetSellerRiskRequest* request,
                                          recharge::v1::SellerRisk* response) override;
  grpc::ServerUnaryReactor* ClearSellerFlag(grpc::CallbackServerContext* ctx,
                                            const recharge::v1::ClearSellerFlagRequest* request,
                                            recharge::v1::ClearSellerFlagResponse* response) override;
  grpc::ServerUnaryReactor* ReloadRules(grpc::CallbackServerContext* ctx,
                                        const recharge::v1::ReloadRulesRequest* request,
                                        recharge::v1::ReloadRulesResponse* response) override;
  grpc::ServerUnaryReactor* GetRuleStats(grpc::CallbackServerContext* ctx,
                                         const recharge::v1::GetRuleStatsRequest* request,
                                         recharge::v1::GetRuleStatsResponse* response) override;
  grpc::ServerUnaryReactor* ListReviews(grpc::CallbackServerContext* ctx,
                                        const recharge::v1::ListReviewsRequest* request,
                                        recharge::v1::ListReviewsResponse* response) override;
  grpc::ServerUnaryReactor* ResolveReview(grpc::CallbackServerContext* ctx,
                                          const recharge::v1::ResolveReviewRequest* request,
                                          recharge::v1::Recharge* response) override;
  grpc::ServerUnaryReactor* BacktestRules(grpc::CallbackServerContext* ctx,
                                          const recharge::v1::BacktestRulesRequest* request,
                                          recharge::v1::BacktestRulesResponse* response) override;
  grpc::ServerUnaryReactor* ReportChargeback(grpc::CallbackServerContext* ctx,
                                             const recharge::v1::ReportChargebackRequest* request,
                                             recharge::v1::ReportChargebackResponse* response) override;
  grpc::ServerUnaryReactor* ListAuditEvents(grpc::CallbackServerContext* ctx,
                                            const recharge::v1::ListAuditEventsRequest* request,
                                            recharge::v1::ListAuditEventsResponse* response) override;

 private:
  // ResolveReview of a card recharge on an authorisation hold: capture on
  // approval, void on rejection.
  asio::awaitable<absl::Status> ResolveHeld(recharge::v1::Recharge held, recharge::v1::Recharge next,
                                            bool approve, std::chrono::steady_clock::time_point deadline,
                                            recharge::v1::Recharge* response);

  CallGate& gate_;
  RuleEngine* engine_;
  RulesSync* sync_;
  LedgerStore& ledger_;
  const Router& router_;
  // Backtests replay on a thread of their own, one at a time: a long replay
  // never holds up an io thread.
  asio::thread_pool backtests_{1};
};

}  // namespace recharge
