// The answer to a lookup by idempotency key, as every provider here gives
// it: a JSON object whose `list_key` array holds what the provider has under
// the key (at most one item). Shared by the adapters' transformers.
#pragma once

#include <string_view>

#include "adapters/json_fields.h"
#include "adapters/payment_adapter.h"
#include "io/strings.h"

namespace recharge {

// kNotFound for an empty list; the first item through `from_item`
// (nlohmann::json -> ChargeOutcome). A lookup that could not be read is
// kUnknown for a 5xx or an unreadable 200, kFailed for any other status;
// the reconciler asks again either way. `what` names the lookup in the
// message, e.g. "PayPal refund lookup".
template <typename FromItem>
ChargeOutcome ParseLookupList(int http_status, std::string_view body, const char* list_key,
                              std::string_view what, const FromItem& from_item) {
  const nlohmann::json j = ParseJson(body);
  if (http_status != 200 || j.is_discarded() || !j.is_object() || !j.contains(list_key) ||
      !j[list_key].is_array()) {
    ChargeOutcome out;
    out.result = http_status == 200 || http_status >= 500 ? ChargeResult::kUnknown
                                                          : ChargeResult::kFailed;
    out.message = StrCat(what, " failed (HTTP ", http_status, ")");
    return out;
  }
  if (j[list_key].empty()) {
    ChargeOutcome out;
    out.result = ChargeResult::kNotFound;
    return out;
  }
  return from_item(j[list_key][0]);
}

}  // namespace recharge
