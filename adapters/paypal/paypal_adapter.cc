#include "adapters/paypal/paypal_adapter.h"

#include <fstream>
#include <sstream>

#include "adapters/adapter_registry.h"
#include "io/log.h"
#include "io/strings.h"

namespace recharge {
namespace {

// The longest a token fetch may take, whatever the caller's deadline.
constexpr std::chrono::seconds kTokenFetchTimeout(10);

}  // namespace

PayPalAdapter::PayPalAdapter(std::string name, std::unique_ptr<HttpProvider> http,
                             paypal::Credentials credentials,
                             std::chrono::milliseconds refresh_margin)
    : name_(std::move(name)),
      http_(std::move(http)),
      credentials_(std::move(credentials)),
      tokens_([this](std::chrono::steady_clock::time_point deadline) { return FetchToken(deadline); },
              refresh_margin) {}

absl::StatusOr<std::unique_ptr<PaymentAdapter>> PayPalAdapter::FromConfig(
    const std::string& name, const ConfigNode& config) {
  if (absl::Status s = CheckAdapterKeys(config, {"endpoint", "ca_file", "credentials_file",
                                                "timeout", "pool_size", "token_refresh_margin"});
      !s.ok()) {
    return s;
  }
  absl::StatusOr<HttpProvider::Options> options = HttpProvider::ParseOptions(config);
  if (!options.ok()) return options.status();
  absl::StatusOr<std::string> file = config.GetString("credentials_file");
  if (!file.ok()) return file.status();
  std::ifstream in(*file);
  if (!in) return config.Child("credentials_file").Error(StrCat("cannot read \"", *file, "\""));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<paypal::Credentials> credentials = paypal::ParseCredentials(text.str());
  if (!credentials.ok()) {
    return config.Child("credentials_file").Error(StrCat("\"", *file, "\" ", credentials.status().message()));
  }
  absl::StatusOr<std::chrono::milliseconds> margin =
      config.GetDuration("token_refresh_margin", std::chrono::seconds(60));
  if (!margin.ok()) return margin.status();
  absl::StatusOr<std::unique_ptr<HttpProvider>> http = HttpProvider::Create(*std::move(options));
  if (!http.ok()) return config.Child("ca_file").Error(std::string(http.status().message()));
  return std::make_unique<PayPalAdapter>(name, *std::move(http), *std::move(credentials), *margin);
}

asio::awaitable<absl::StatusOr<AccessToken>> PayPalAdapter::FetchToken(
    std::chrono::steady_clock::time_point caller_deadline) {
  const auto deadline =
      std::min(caller_deadline, std::chrono::steady_clock::now() + kTokenFetchTimeout);
  HttpsResult r = co_await http_->Send(paypal::BuildTokenRequest(credentials_), deadline,
                                       /*idempotent=*/true);
  if (!r.status.ok()) {
    co_return absl::UnavailableError(StrCat("PayPal token request: ", r.status.message()));
  }
  absl::StatusOr<AccessToken> token = paypal::ParseTokenResponse(
      r.response.result_int(), r.response.body(), std::chrono::steady_clock::now());
  if (token.ok()) LogInfo("paypal_token_fetched", {{"adapter", name_}});
  co_return token;
}

template <typename Build>
asio::awaitable<HttpsResult> PayPalAdapter::SendAuthorized(
    Build build, std::chrono::steady_clock::time_point deadline) {
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<Secret> token = co_await tokens_.Get(deadline);
    if (!token.ok()) {
      HttpsResult failed;
      failed.status = token.status();
      failed.maybe_sent = false;  // nothing was sent to the capture or refund endpoint
      co_return failed;
    }
    HttpsResult r = co_await http_->Send(build(*token), deadline, /*idempotent=*/true);
    if (attempt == 0 && r.status.ok() &&
        paypal::IsTokenRejected(r.response.result_int(), r.response.body())) {
      tokens_.Invalidate(*token);  // refused before anything happened: safe to retry once
      continue;
    }
    co_return r;
  }
}

asio::awaitable<ChargeOutcome> PayPalAdapter::Charge(const ChargeRequest& request) {
  auto build = [&request](const Secret& token) {
    return paypal::BuildCaptureRequest(request, token);
  };
  HttpsResult r = co_await SendAuthorized(build, request.deadline);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return paypal::ParseCaptureResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> PayPalAdapter::Lookup(std::string_view idempotency_key,
                                                     std::chrono::steady_clock::time_point deadline) {
  std::string key(idempotency_key);
  auto build = [&key](const Secret& token) { return paypal::BuildLookupRequest(key, token); };
  HttpsResult r = co_await SendAuthorized(build, deadline);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return paypal::ParseLookupResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> PayPalAdapter::Refund(const PaymentOperation& op) {
  auto build = [&op](const Secret& token) { return paypal::BuildRefundRequest(op, token); };
  HttpsResult r = co_await SendAuthorized(build, op.deadline);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/false);
  co_return paypal::ParseRefundResponse(r.response.result_int(), r.response.body());
}

asio::awaitable<ChargeOutcome> PayPalAdapter::LookupRefund(
    std::string_view idempotency_key, std::chrono::steady_clock::time_point deadline) {
  std::string key(idempotency_key);
  auto build = [&key](const Secret& token) { return paypal::BuildRefundLookupRequest(key, token); };
  HttpsResult r = co_await SendAuthorized(build, deadline);
  if (!r.status.ok()) co_return TransportFailure(r, /*lookup=*/true);
  co_return paypal::ParseRefundLookupResponse(r.response.result_int(), r.response.body());
}

}  // namespace recharge
