#include "sandbox/control_api.h"

#include <string>

namespace recharge::sandbox {
namespace {

Response BadConfig(std::string_view message) {
  return ErrorResponse(400, "invalid_request_error", "parameter_invalid", message);
}

Response SetConfig(SandboxConfig& config, const Request& req) {
  if (!ValidUtf8(req.body)) return BadConfig("Body must be a JSON object.");
  Json changes = Json::parse(req.body.empty() ? std::string_view("{}") : req.body, nullptr,
                             /*allow_exceptions=*/false);
  if (!changes.is_object()) return BadConfig("Body must be a JSON object.");
  absl::StatusOr<Json> updated = config.Update(changes);
  if (!updated.ok()) return BadConfig(std::string(updated.status().message()));
  return Response::FromJson(200, *updated);
}

}  // namespace

void AddControlRoutes(Router& router, SandboxConfig& config, Stats& stats,
                      const WebhookSender& webhooks) {
  router.Add("GET", "/_sandbox/health", [](Request&) -> asio::awaitable<Response> {
    Json body = Json::object();
    body["ok"] = true;
    co_return Response::FromJson(200, body);
  });
  router.Add("GET", "/_sandbox/config", [&config](Request&) -> asio::awaitable<Response> {
    co_return Response::FromJson(200, config.Snapshot());
  });
  router.Add("POST", "/_sandbox/config", [&config](Request& req) -> asio::awaitable<Response> {
    co_return SetConfig(config, req);
  });
  router.Add("GET", "/_sandbox/stats", [&stats](Request&) -> asio::awaitable<Response> {
    co_return Response::FromJson(200, stats.Snapshot());
  });
  router.Add("POST", "/_sandbox/stats/reset", [&stats](Request&) -> asio::awaitable<Response> {
    co_return Response::FromJson(200, stats.Reset());
  });
  router.Add("GET", "/_sandbox/webhooks", [&webhooks](Request&) -> asio::awaitable<Response> {
    co_return Response::FromJson(200, webhooks.List());
  });
}

}  // namespace recharge::sandbox
