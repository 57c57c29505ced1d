// WebhookIntake: provider notifications (webhooks) in, recharge changes out.
//
//   POST /webhooks/<instance>   body and signature as the provider sends them
//
// The instance's adapter checks the signature (its scheme, its secret, its
// timestamp tolerance) and reads the notification; only then is the ledger
// asked anything. Answers, and what they tell the provider:
//   200 {"result":"applied"}    the recharge moved (one ledger transaction:
//                               the change, its outbox event, the
//                               notification's id)
//   200 {"result":"duplicate"}  this notification was applied before
//   200 {"result":"ignored", "reason":...}  no such recharge, another
//                               instance's or payment's, already final, or
//                               still waiting: logged, nothing changed
//   400 unreadable body, 401 bad or stale signature, 404 no such instance
//   (or one that takes no notifications), 405 not a POST: nothing changed
//   503 the outcome could not be made final yet (the ledger; a recharge whose
//   key is claimed and not recorded yet; a capture whose answer was lost):
//   the provider sends it again later
// 2xx stops the provider's retries; anything else asks for one.
//
// Thread-safety: Handle may run concurrently on any io thread.
#pragma once

#include <chrono>

#include "adapters/router.h"
#include "fraud/fraud_filter.h"
#include "io/asio.h"
#include "io/https_listener.h"
#include "ledger/ledger_store.h"

namespace recharge {

class WebhookIntake {
 public:
  // References must outlive the intake. `hold_expiry`: review.hold_expiry
  // (a card the rules sent to review is held once authenticated).
  // A decline it records is counted by `fraud` (`on: decline` counters).
  WebhookIntake(LedgerStore& ledger, const Router& router, FraudFilter& fraud,
                std::chrono::milliseconds hold_expiry)
      : ledger_(ledger), router_(router), fraud_(fraud), hold_expiry_(hold_expiry) {}

  asio::awaitable<HttpAnswer> Handle(const HttpRequestView& request);

  // An answer and its `result` label on recharge_webhooks_total.
  struct Handled {
    HttpAnswer answer;
    std::string_view result;  // applied, duplicate, ignored, unauthenticated, retry_later, refused
  };

 private:
  asio::awaitable<Handled> HandleOne(const HttpRequestView& request);

  LedgerStore& ledger_;
  const Router& router_;
  FraudFilter& fraud_;
  const std::chrono::milliseconds hold_expiry_;
};

}  // namespace recharge
