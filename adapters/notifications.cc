#include "adapters/notifications.h"

#include <cstdlib>

#include "adapters/http_provider.h"
#include "adapters/webhook_signature.h"
#include "io/https_client.h"
#include "io/strings.h"

namespace recharge {

absl::StatusOr<NotificationSettings> NotificationSettings::FromConfig(const ConfigNode& config) {
  NotificationSettings out;
  if (config.Has("notify_url")) {
    absl::StatusOr<std::string> url = config.GetString("notify_url");
    if (!url.ok()) return url.status();
    // The provider calls back over HTTPS: scheme, host, port and a path.
    const size_t path = url->find('/', std::string_view("https://").size());
    if (!url->starts_with("https://") || path == std::string::npos ||
        !ParseHttpsUrl(url->substr(0, path)).ok()) {
      return config.Child("notify_url")
          .Error("must be an https://host:port/path URL (the gateway's webhook route)");
    }
    out.notify_url = *std::move(url);
  }
  if (config.Has("webhook_secret_file")) {
    absl::StatusOr<Secret> secret = ReadSecretField(config, "webhook_secret_file");
    if (!secret.ok()) return secret.status();
    out.secrets.push_back(*std::move(secret));
  }
  if (config.Has("webhook_secret_env")) {
    absl::StatusOr<std::string> name = config.GetString("webhook_secret_env");
    if (!name.ok()) return name.status();
    const char* value = std::getenv(name->c_str());
    if (value == nullptr || std::string_view(value).empty()) {
      return config.Child("webhook_secret_env")
          .Error(StrCat("environment variable ", *name, " is not set"));
    }
    out.secrets.emplace_back(std::string(value));
  }
  if (!out.notify_url.empty() && out.secrets.empty()) {
    return config.Child("notify_url")
        .Error("needs webhook_secret_file or webhook_secret_env to check the notifications");
  }
  absl::StatusOr<std::chrono::milliseconds> tolerance =
      config.GetDuration("webhook_tolerance", std::chrono::milliseconds(300'000));
  if (!tolerance.ok()) return tolerance.status();
  if (*tolerance < std::chrono::seconds(1)) {
    return config.Child("webhook_tolerance").Error("must be at least 1s");
  }
  out.tolerance = std::chrono::duration_cast<std::chrono::seconds>(*tolerance);
  absl::StatusOr<std::chrono::milliseconds> expiry =
      config.GetDuration("action_expiry", std::chrono::milliseconds(15 * 60 * 1000));
  if (!expiry.ok()) return expiry.status();
  if (*expiry < std::chrono::seconds(1)) {
    return config.Child("action_expiry").Error("must be at least 1s");
  }
  out.action_expiry = *expiry;
  return out;
}

absl::Status NotificationSettings::Verify(const InboundNotification& notification,
                                          std::string_view header_name) const {
  if (secrets.empty()) {
    return absl::UnauthenticatedError("no webhook secret is configured for this instance");
  }
  const std::optional<std::string_view> header = notification.header(header_name);
  if (!header) return absl::UnauthenticatedError(StrCat(header_name, " header: missing"));
  absl::Status last;
  for (const Secret& secret : secrets) {
    last = VerifyWebhookSignature(secret, *header, notification.body, notification.received_at,
                                  tolerance);
    if (last.ok()) return last;
  }
  return last;
}

}  // namespace recharge
