// PaymentAdapter: one configured account at one payment provider (DESIGN §7).
//
// An adapter turns a ChargeRequest into its provider's wire format, sends it
// with the idempotency key as the provider's own idempotency header, and maps
// the provider's answer onto the shared ChargeOutcome. The mapping lives in
// the adapter's transformers; nothing above this layer knows a wire format.
//
// Implementations are thread-safe: Charge and Lookup run concurrently from
// many coroutines on any io thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "io/asio.h"
#include "io/secret.h"

namespace recharge {

struct CardDetails {
  Secret number;  // PAN, digits only
  int exp_month = 0;
  int exp_year = 0;
  Secret cvc;
  std::string holder_name;
};

struct ChargeRequest {
  std::string idempotency_key;  // sent as the provider's idempotency header
  std::string recharge_id;
  std::string currency;         // ISO 4217
  int64_t minor_units = 0;
  std::string region;
  std::string description;
  std::optional<CardDetails> card;
  std::string paypal_order_id;
  std::string paypal_payer_id;
  std::string wallet_provider;
  std::string wallet_account;
  // false: authorise only (a hold, captured later by Capture or released by
  // Void). Only adapters that say SupportsHolds() take it.
  bool capture = true;
  // The call must be answered by then (never later than the caller's deadline).
  std::chrono::steady_clock::time_point deadline;
};

// A later operation on a payment an adapter took: capture or void a hold,
// refund a payment in full.
struct PaymentOperation {
  std::string idempotency_key;     // the provider's idempotency header: one effect per key
  std::string provider_reference;  // the payment's reference from its ChargeOutcome
  std::string currency;
  int64_t minor_units = 0;         // the payment's whole amount
  std::string reason;              // Refund: kept by the provider, never a secret
  std::chrono::steady_clock::time_point deadline;
};

enum class ChargeResult {
  kApproved,  // money moved
  kDeclined,  // the provider refused; nothing charged
  kFailed,    // a definite error before money moved; safe to try another instance
  kUnknown,   // ambiguous (timeout, connection cut after sending): may have charged
  kNotFound,  // Lookup only: the provider has no charge under that key
  // The buyer must act first (a 3-D Secure challenge, a wallet approval):
  // nothing charged yet; ChargeOutcome::next_action says what to show. The
  // outcome comes later, by notification or Lookup.
  kRequiresAction,
};

// What the buyer is sent to do (the contract's NextAction).
struct NextActionInfo {
  enum class Type { kRedirect, kDeepLink, kQr };
  Type type = Type::kRedirect;
  std::string url;  // the page, deep link or QR payload (no secret)
  // The adapter instance's action_expiry after the charge was made: not
  // completed by then, the payment is cancelled and the recharge FAILED.
  std::chrono::system_clock::time_point expires_at;
};

std::string_view ChargeResultName(ChargeResult r);

struct ChargeOutcome {
  ChargeResult result = ChargeResult::kFailed;
  std::string provider_reference;  // the provider's charge id
  std::string decline_code;        // kDeclined: the provider's reason, e.g. "insufficient_funds"
  std::string message;             // human-readable, never a secret
  // kApproved: false for an authorisation hold not captured (yet); a
  // captured payment, or any other result, is true.
  bool captured = true;
  // kRequiresAction: what the buyer must do.
  std::optional<NextActionInfo> next_action;
};

// What a provider's notification (webhook) says about one of its payments.
struct ProviderNotification {
  std::string event_id;         // the provider's id for this notification (a resend keeps it)
  std::string event_type;       // as the provider names it, e.g. "charge.authenticated"
  std::string idempotency_key;  // the payment's idempotency key, when the provider says it
  std::string recharge_id;      // our reference, when the provider echoes it (merchant_ref)
  ChargeOutcome outcome;        // the payment as the notification shows it
};

// A notification as it arrived: the raw body (signatures cover its exact
// bytes) and a case-insensitive header lookup.
struct InboundNotification {
  std::string_view body;
  std::function<std::optional<std::string_view>(std::string_view)> header;
  std::chrono::system_clock::time_point received_at;
};

class PaymentAdapter {
 public:
  virtual ~PaymentAdapter() = default;
  // The instance name from configs/adapters.yaml, e.g. "card-primary".
  virtual std::string_view name() const = 0;
  // Charges once per idempotency key, however often it is called.
  virtual asio::awaitable<ChargeOutcome> Charge(const ChargeRequest& request) = 0;
  // What the provider holds under `idempotency_key`: kApproved or kDeclined
  // with its reference, kNotFound, or kFailed/kUnknown if it could not be asked.
  virtual asio::awaitable<ChargeOutcome> Lookup(std::string_view idempotency_key,
                                                std::chrono::steady_clock::time_point deadline) = 0;

  // Authorisation holds (ChargeRequest::capture = false), Capture and Void.
  virtual bool SupportsHolds() const { return false; }
  // The operations below answer like Charge: kApproved when done
  // (provider_reference: the refund's id for Refund), kDeclined when the
  // provider refused it (decline_code its reason, e.g.
  // "charge_already_captured"), kFailed / kUnknown as for Charge. Adapters
  // without them answer kFailed.
  virtual asio::awaitable<ChargeOutcome> Capture(const PaymentOperation& op);
  virtual asio::awaitable<ChargeOutcome> Void(const PaymentOperation& op);
  virtual asio::awaitable<ChargeOutcome> Refund(const PaymentOperation& op);
  // What the provider holds under a refund's idempotency key, like Lookup.
  virtual asio::awaitable<ChargeOutcome> LookupRefund(
      std::string_view idempotency_key, std::chrono::steady_clock::time_point deadline);

  // Provider notifications. Checks a notification's signature (UNAUTHENTICATED
  // naming the failed check: no or bad signature, stale timestamp) and reads
  // it (INVALID_ARGUMENT naming the field). Adapters that take none answer
  // NOT_FOUND. Pure: no I/O.
  virtual absl::StatusOr<ProviderNotification> ReadNotification(
      const InboundNotification& notification) const;
};

}  // namespace recharge
