// Output helpers of rechargectl: aligned tables and "key: value" blocks for
// people, JSON for scripts. Protobuf messages become JSON only through
// google::protobuf::util::MessageToJsonString (proto field names, every
// field printed, enums by name); ProtoJson returns it as a nlohmann::json so
// a command can wrap it with its own fields.
//
// Thread-safety: pure functions, except that the Print functions write to
// stdout.
#pragma once

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "recharge/v1/recharge.pb.h"

namespace recharge::ctl {

// A table with a header row; columns are as wide as their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  // REQUIRES: row.size() == the number of headers.
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  // Prints the header and the rows, each line indented by `indent` spaces.
  void Print(std::ostream& out, int indent = 0) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

using Fields = std::vector<std::pair<std::string, std::string>>;

// Prints "key: value" lines with the values aligned.
void PrintFields(std::ostream& out, const Fields& fields, int indent = 0);

// The message as JSON (see the file comment).
nlohmann::json ProtoJson(const google::protobuf::Message& message);

// Prints one JSON document on stdout: pretty, or on one line when `compact`.
void PrintJson(const nlohmann::json& document, bool compact = false);

// RFC 3339, "-" when unset.
std::string FormatTime(const google::protobuf::Timestamp& at);
// "USD 99" (minor units).
std::string FormatMoney(const v1::Money& money);
// The enum names without their prefix: "APPROVED", "allow", "DECIDED".
std::string StatusName(v1::RechargeStatus status);
std::string ActionName(v1::FraudAction action);
std::string EventName(v1::RechargeEventType type);
// "allow→review".
std::string ChangeName(v1::FraudAction from, v1::FraudAction to);
std::string YesNo(bool value);

// The usual fields of a recharge, for `recharges get` and the review and
// refund answers.
Fields RechargeFields(const v1::Recharge& recharge);
// Prints the recharges as a table (id, created, user, seller, method,
// amount, coins, status).
void PrintRechargeTable(std::ostream& out, const std::vector<const v1::Recharge*>& recharges);

}  // namespace recharge::ctl
