// The gateway's metrics (issue 12, docs/operations.md): every family the
// process exports on /metrics, registered once in metrics::Registry::Default()
// and reached through Metrics(). Labels come from small fixed sets only: RPC
// names, gRPC codes, statuses, payment methods, adapter instances, regions,
// rule ids. Never a card number, user id, seller id or recharge id.
//
// Thread-safety: Metrics() and every family may be used from any thread.
#pragma once

#include "io/metrics.h"

namespace recharge {

struct GatewayMetrics {
  // RPCs answered, by method (short name) and gRPC code; handler latency.
  metrics::CounterFamily& rpc_requests;      // {rpc, code}
  metrics::HistogramFamily& rpc_seconds;     // {rpc}
  // Recharges by their first answer.
  metrics::CounterFamily& recharges;         // {status, method, adapter, region}
  // The fraud filter's Redis round trip, degraded decisions, rules.
  metrics::HistogramFamily& fraud_seconds;   // {}
  metrics::CounterFamily& fraud_degraded;    // {}
  metrics::CounterFamily& rule_evaluations;  // {rule}
  metrics::CounterFamily& rule_hits;         // {rule, shadow}
  metrics::CounterFamily& rule_demotions;    // {}
  metrics::CounterFamily& redis_errors;      // {}
  // One call to a provider, by instance and result (approved, declined...).
  metrics::HistogramFamily& adapter_seconds;  // {adapter, result}
  metrics::CallbackGaugeFamily& circuit_open;  // {adapter}: 1 open, 0.5 half-open, 0 closed
  // The ledger's transactions (a group commit each) and its failures.
  metrics::HistogramFamily& ledger_commit_seconds;  // {}
  metrics::CounterFamily& ledger_errors;            // {}
  // Work left: recharges the reconciler is settling, the review queue.
  metrics::GaugeFamily& reconciler_backlog;  // {}
  metrics::GaugeFamily& review_queue;        // {}
  // Provider notifications by instance and answer.
  metrics::CounterFamily& webhooks;          // {instance, result}
  metrics::GaugeFamily& build_info;          // {version}
};

GatewayMetrics& Metrics();

// "RecordRecharge" of "/recharge.v1.RechargeGateway/RecordRecharge".
std::string_view RpcShortName(std::string_view method);

}  // namespace recharge
