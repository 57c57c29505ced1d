// Output helpers of rechargectl: see output.h.
#include "tools/rechargectl/output.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace recharge::ctl {
namespace {

// Columns a cell takes in a terminal: its UTF-8 code points (the arrow of
// "allow→review" is three bytes, one column).
size_t DisplayWidth(const std::string& text) {
  return std::count_if(text.begin(), text.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

}  // namespace

void Table::Print(std::ostream& out, int indent) const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) widths[c] = DisplayWidth(headers_[c]);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(row[c]));
    }
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line(indent, ' ');
    for (size_t c = 0; c < row.size(); ++c) {
      absl::StrAppend(&line, row[c]);
      if (c + 1 < row.size()) line.append(widths[c] - DisplayWidth(row[c]) + 2, ' ');
    }
    out << line << "\n";
  };
  print_row(headers_);
  for (const auto& row : rows_) print_row(row);
}

void PrintFields(std::ostream& out, const Fields& fields, int indent) {
  size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, key.size());
  for (const auto& [key, value] : fields) {
    out << std::string(indent, ' ') << key << ":" << std::string(width - key.size() + 1, ' ')
        << value << "\n";
  }
}

nlohmann::json ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string text;
  // Cannot fail for a message of a generated type.
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return nlohmann::json::parse(text);
}

void PrintJson(const nlohmann::json& document, bool compact) {
  std::cout << (compact ? document.dump() : document.dump(2)) << "\n" << std::flush;
}

std::string FormatTime(const google::protobuf::Timestamp& at) {
  if (at.seconds() == 0 && at.nanos() == 0) return "-";
  return google::protobuf::util::TimeUtil::ToString(at);
}

std::string FormatMoney(const v1::Money& money) {
  return absl::StrCat(money.currency(), " ", money.minor_units());
}

std::string StatusName(v1::RechargeStatus status) {
  return std::string(absl::StripPrefix(v1::RechargeStatus_Name(status), "RECHARGE_STATUS_"));
}

std::string ActionName(v1::FraudAction action) {
  return absl::AsciiStrToLower(absl::StripPrefix(v1::FraudAction_Name(action), "FRAUD_ACTION_"));
}

std::string EventName(v1::RechargeEventType type) {
  return std::string(absl::StripPrefix(v1::RechargeEventType_Name(type), "RECHARGE_EVENT_"));
}

std::string ChangeName(v1::FraudAction from, v1::FraudAction to) {
  return absl::StrCat(ActionName(from), "\u2192", ActionName(to));
}

std::string YesNo(bool value) { return value ? "yes" : "no"; }

Fields RechargeFields(const v1::Recharge& r) {
  Fields fields = {
      {"recharge", r.recharge_id()},
      {"status", StatusName(r.status())},
      {"user", r.user_id()},
      {"seller", r.seller_id().empty() ? "-" : r.seller_id()},
      {"package", absl::StrCat(r.package_id(), " (", r.coins(), " coins)")},
      {"amount", FormatMoney(r.amount())},
      {"region", r.region()},
      {"method", r.payment_method()},
      {"created", FormatTime(r.created_at())},
  };
  if (!r.card_masked().empty()) fields.emplace_back("card", r.card_masked());
  if (r.has_fraud()) {
    std::vector<std::string> hits;
    for (const v1::RuleHit& hit : r.fraud().hits()) {
      hits.push_back(absl::StrCat(hit.rule_id(), "(", ActionName(hit.action()),
                                  hit.shadow() ? ", shadow" : "", ")"));
    }
    fields.emplace_back("fraud", absl::StrCat(ActionName(r.fraud().decision()), ", rules ",
                                              r.fraud().rules_version(),
                                              r.fraud().degraded() ? ", degraded" : ""));
    if (!hits.empty()) fields.emplace_back("rule hits", absl::StrJoin(hits, " "));
  }
  if (r.has_payment()) {
    fields.emplace_back("adapter", r.payment().adapter());
    if (!r.payment().decline_code().empty()) fields.emplace_back("decline", r.payment().decline_code());
  }
  if (r.has_reviewed_at()) {
    fields.emplace_back("reviewed", absl::StrCat(FormatTime(r.reviewed_at()), " by ", r.reviewed_by(),
                                                 r.review_note().empty() ? "" : ": " + r.review_note()));
  }
  if (r.has_refund()) {
    fields.emplace_back("refunded", absl::StrCat(FormatTime(r.refund().refunded_at()), " by ",
                                                 r.refund().refunded_by(), ": ", r.refund().reason()));
  }
  if (r.charged_back()) fields.emplace_back("charged back", "yes");
  return fields;
}

void PrintRechargeTable(std::ostream& out, const std::vector<const v1::Recharge*>& recharges) {
  Table table({"RECHARGE", "CREATED", "USER", "SELLER", "METHOD", "AMOUNT", "COINS", "STATUS"});
  for (const v1::Recharge* r : recharges) {
    table.AddRow({r->recharge_id(), FormatTime(r->created_at()), r->user_id(),
                  r->seller_id().empty() ? "-" : r->seller_id(), r->payment_method(),
                  FormatMoney(r->amount()), absl::StrCat(r->coins()), StatusName(r->status())});
  }
  table.Print(out);
}

}  // namespace recharge::ctl
