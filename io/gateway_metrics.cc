#include "io/gateway_metrics.h"

namespace recharge {
namespace {

GatewayMetrics* Make() {
  metrics::Registry& r = metrics::Registry::Default();
  const std::vector<double> latency = metrics::DefaultLatencyBuckets();
  return new GatewayMetrics{
      r.AddCounter("recharge_rpc_requests_total", "RPCs answered, by method and gRPC code.",
                   {"rpc", "code"}),
      r.AddHistogram("recharge_rpc_duration_seconds",
                     "Time from admission to the answer of a unary RPC.", {"rpc"}, latency),
      r.AddCounter("recharge_recharges_total",
                   "Recharges by their first answer: status, payment method, adapter instance "
                   "(empty if none was called) and region.",
                   {"status", "method", "adapter", "region"}),
      r.AddHistogram("recharge_fraud_round_trip_seconds",
                     "The fraud filter's one Redis round trip per decision.", {}, latency),
      r.AddCounter("recharge_fraud_degraded_total",
                   "Decisions made by the rule file's fail_mode because Redis did not answer in "
                   "time."),
      r.AddCounter("recharge_rule_evaluations_total", "Requests each rule was evaluated on.",
                   {"rule"}),
      r.AddCounter("recharge_rule_hits_total",
                   "Requests each rule matched; shadow=\"true\" for shadow (or demoted) rules.",
                   {"rule", "shadow"}),
      r.AddCounter("recharge_rule_demotions_total",
                   "Block rules demoted to shadow by the blast-radius guard."),
      r.AddCounter("recharge_redis_errors_total",
                   "Redis calls of the fraud filter that failed or timed out."),
      r.AddHistogram("recharge_adapter_call_seconds",
                     "One call to a payment provider, by adapter instance and result.",
                     {"adapter", "result"}, latency),
      r.AddCallbackGauge("recharge_adapter_circuit_open",
                         "Circuit breaker per adapter instance: 1 open, 0.5 half-open, 0 closed.",
                         {"adapter"}),
      r.AddHistogram("recharge_ledger_commit_seconds",
                     "One ledger write transaction (a group commit of many operations).", {},
                     latency),
      r.AddCounter("recharge_ledger_errors_total", "Ledger write transactions that failed."),
      r.AddGauge("recharge_reconciler_backlog",
                 "Recharges and refunds whose outcome the reconciler is settling (last pass)."),
      r.AddGauge("recharge_review_queue_depth", "Recharges waiting for review (last pass)."),
      r.AddCounter("recharge_webhooks_total",
                   "Provider notifications by adapter instance and answer.", {"instance", "result"}),
      r.AddGauge("recharge_build_info", "Always 1; the build's version as a label.", {"version"}),
  };
}

}  // namespace

GatewayMetrics& Metrics() {
  static GatewayMetrics* m = Make();
  return *m;
}

std::string_view RpcShortName(std::string_view method) {
  const size_t slash = method.rfind('/');
  return slash == std::string_view::npos ? method : method.substr(slash + 1);
}

}  // namespace recharge
