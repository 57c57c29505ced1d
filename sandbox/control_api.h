// The sandbox's control API: test-only knobs, unauthenticated (bind the
// sandbox to loopback). Requests to it are not counted in the stats.
//
//   GET  /_sandbox/health       -> {"ok":true}
//   GET  /_sandbox/config       -> SandboxConfig::Snapshot()
//   POST /_sandbox/config       a JSON subset of the snapshot -> the new
//                               config; validated as a whole, a 400 changes
//                               nothing (see config.h)
//   GET  /_sandbox/stats        -> {"paypal_token_grants":N,
//                                   "requests":{"card":N,"paypal":N,"ewallet":N}}
//                               (with webhooks configured, also
//                               "webhooks":{"attempts","delivered",
//                               "failed_attempts","given_up"})
//   POST /_sandbox/stats/reset  zeroes the counters -> the zeroed stats
//   GET  /_sandbox/webhooks     -> WebhookSender::List(): every webhook
//                               with its body and last signature (never
//                               logged; this API is for tests only)
#pragma once

#include "sandbox/api.h"
#include "sandbox/config.h"
#include "sandbox/http.h"
#include "sandbox/webhooks.h"

namespace recharge::sandbox {

// REQUIRES: config, stats and webhooks outlive the router.
void AddControlRoutes(Router& router, SandboxConfig& config, Stats& stats,
                      const WebhookSender& webhooks);

}  // namespace recharge::sandbox
