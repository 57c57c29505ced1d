// libFuzzer target: arbitrary bytes as a serialized RecordRechargeRequest,
// validated against the shipped catalogue (README.md).
//
// Validation must never crash, hang or read out of bounds, and must answer
// OK or INVALID_ARGUMENT with a short, printable message that names a field
// and contains no card number. An accepted request must be within every
// documented bound. Alongside, ValidUtf8 must agree with protobuf's own
// UTF-8 check on the raw bytes, and the echo of arbitrary bytes (a package
// id, a metadata key) must stay printable.
#include <google/protobuf/stubs/common.h>
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "gateway/catalogue.h"
#include "gateway/validation.h"
#include "recharge/v1/recharge.pb.h"

namespace {

using recharge::Catalogue;
using recharge::ValidatedRecharge;
using recharge::v1::RecordRechargeRequest;

constexpr recharge::YearMonth kToday{2026, 11};

void Check(bool ok) {
  if (!ok) std::abort();
}

const Catalogue& TheCatalogue() {
  static const Catalogue* catalogue = [] {
    absl::StatusOr<Catalogue> c = Catalogue::Load(RECHARGE_SOURCE_DIR "/configs/packages.yaml");
    Check(c.ok());
    return new Catalogue(*std::move(c));
  }();
  return *catalogue;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool HasDigitRun(std::string_view s, size_t n) {
  size_t run = 0;
  for (char c : s) {
    run = IsDigit(c) ? run + 1 : 0;
    if (run >= n) return true;
  }
  return false;
}

bool HasControlByte(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool StartsWithFieldPath(std::string_view m) {
  static constexpr std::string_view kFields[] = {
      "idempotency_key:", "user_id:", "package_id:", "amount:", "amount.currency:",
      "amount.minor_units:", "region:", "payment_method:", "card.number:", "card.exp_month:",
      "card.exp_year:", "card.cvc:", "card.holder_name:", "paypal.order_id:", "paypal.payer_id:",
      "ewallet.provider:", "ewallet.account_id:", "seller_id:", "client.ip:", "client.device_id:",
      "client.user_agent:", "metadata:", "metadata."};
  for (std::string_view f : kFields) {
    if (m.substr(0, f.size()) == f) return true;
  }
  return false;
}

bool Within(std::string_view s, size_t max) { return s.size() <= max && recharge::ValidUtf8(s); }

// Validates `req` and checks every promise of validation.h about the answer.
void ValidateAndCheck(const RecordRechargeRequest& req) {
  absl::StatusOr<ValidatedRecharge> v = recharge::ValidateRecharge(req, TheCatalogue(), kToday);
  if (!v.ok()) {
    Check(v.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string message(v.status().message());
    Check(StartsWithFieldPath(message));
    Check(message.size() <= 300);
    Check(recharge::ValidUtf8(message));
    Check(!HasControlByte(message));
    // No card number: neither the request's own nor anything that looks like one.
    Check(!HasDigitRun(message, 12));
    const std::string& number = req.card().number();
    if (number.size() >= 12 && number.find_first_not_of("0123456789") == std::string::npos) {
      Check(message.find(number) == std::string::npos);
    }
    return;
  }
  // Accepted: within every bound, and coherent.
  Check(v->package != nullptr);
  Check(v->price == req.amount().minor_units());
  Check(Within(req.idempotency_key(), 128) && req.idempotency_key().size() >= 8);
  Check(Within(req.user_id(), 128) && !req.user_id().empty());
  Check(Within(req.package_id(), 64));
  Check(req.region().size() == 2 && req.amount().currency().size() == 3);
  Check(Within(req.seller_id(), 128));
  Check(Within(req.client().ip(), 45) && Within(req.client().device_id(), 128) &&
        Within(req.client().user_agent(), 512));
  Check(req.metadata_size() <= 20);
  for (const auto& [key, value] : req.metadata()) {
    Check(!key.empty() && Within(key, 40) && Within(value, 500));
  }
  switch (req.payment_method_case()) {
    case RecordRechargeRequest::kCard: {
      const std::string& number = req.card().number();
      Check(v->method == "card" && number.size() >= 12 && number.size() <= 19);
      Check(v->card_masked.size() == number.size() && v->card_masked != number);
      Check(req.card().cvc().size() >= 3 && req.card().cvc().size() <= 4);
      Check(Within(req.card().holder_name(), 128));
      break;
    }
    case RecordRechargeRequest::kPaypal:
      Check(v->method == "paypal" && v->card_masked.empty());
      Check(Within(req.paypal().order_id(), 128) && Within(req.paypal().payer_id(), 128));
      break;
    case RecordRechargeRequest::kEwallet:
      Check(v->method == "ewallet" && v->method_label == "ewallet:" + v->wallet_provider);
      Check(Within(req.ewallet().provider(), 32) && Within(req.ewallet().account_id(), 128));
      break;
    case RecordRechargeRequest::PAYMENT_METHOD_NOT_SET:
      Check(false);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // The parser logs every string with invalid UTF-8 it refuses: millions of
  // lines in a bounded run. Its verdict is all this target needs.
  google::protobuf::SetLogHandler(nullptr);
  TheCatalogue();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // ValidUtf8 agrees with protobuf's validator (well-formed UTF-8, no
  // surrogates); a note is accepted only if short, valid and printable.
  const bool valid = recharge::ValidUtf8(bytes);
  Check(valid == google::protobuf::internal::IsStructurallyValidUTF8(bytes.data(),
                                                                    static_cast<int>(size)));
  const absl::Status note = recharge::ValidateNote("note", bytes);
  if (note.ok()) Check(valid && size <= 1024 && !HasControlByte(bytes));
  if (size > 1024) Check(note.message() == "note: must be at most 1024 bytes");
  if (size <= 1024 && valid && !note.ok()) {
    Check(note.message() == "note: must not contain control characters");
  }

  RecordRechargeRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  ValidateAndCheck(req);

  // The same request with the raw bytes where validation echoes a value:
  // the parser refuses invalid UTF-8 in a proto3 string, so this is how
  // arbitrary bytes reach the echo and the UTF-8 checks.
  RecordRechargeRequest raw = req;
  raw.set_package_id(std::string(bytes.substr(0, 70)));
  ValidateAndCheck(raw);
  raw = req;
  raw.clear_metadata();
  (*raw.mutable_metadata())[std::string(bytes.substr(0, 70))] = std::string(bytes.substr(0, 501));
  ValidateAndCheck(raw);
  return 0;
}
