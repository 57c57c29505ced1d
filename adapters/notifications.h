// NotificationSettings: what an adapter instance that takes provider
// notifications (webhooks) and buyer actions shares, read from its block in
// configs/adapters.yaml:
//
//   notify_url          where the provider is told to send notifications: the
//                       gateway's webhook route for this instance,
//                       https://<webhooks.listen>/webhooks/<instance>
//   webhook_secret_file the provider's signing secret (a file), or
//   webhook_secret_env  the name of an environment variable holding it; both
//                       may be given while rotating (either signature passes)
//   webhook_tolerance   how far a notification's timestamp may be from now
//                       (default 5m): an older one is refused as a replay
//   action_expiry       how long the buyer has for a challenge or an approval
//                       (default 15m): past it the payment is cancelled and
//                       the recharge FAILED action_expired
//
// Thread-safety: immutable after FromConfig; Verify is pure.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/payment_adapter.h"
#include "io/config_node.h"
#include "io/secret.h"

namespace recharge {

struct NotificationSettings {
  // Errors name the file, line and field. No secret: notifications to this
  // instance are refused (a notify_url then is an error).
  static absl::StatusOr<NotificationSettings> FromConfig(const ConfigNode& config);

  // OK when `header_value` is a Sandbox-Signature over `body` by one of the
  // secrets within the tolerance; UNAUTHENTICATED naming the failed check.
  absl::Status Verify(const InboundNotification& notification,
                      std::string_view header_name) const;

  // When an action asked for now expires.
  std::chrono::system_clock::time_point ActionExpiresAt() const {
    return std::chrono::system_clock::now() + action_expiry;
  }

  std::string notify_url;  // empty: the provider is given none
  std::vector<Secret> secrets;
  std::chrono::seconds tolerance{300};
  std::chrono::milliseconds action_expiry{15 * 60 * 1000};
};

}  // namespace recharge
