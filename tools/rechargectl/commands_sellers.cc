// rechargectl sellers: flagged, risk, clear.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "recharge/v1/recharge.grpc.pb.h"
#include "tools/rechargectl/cli.h"
#include "tools/rechargectl/output.h"

namespace recharge::ctl {
namespace {

int Flagged(Context& context, const Args&) {
  v1::ListFlaggedSellersResponse response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.ListFlaggedSellers(client_context, v1::ListFlaggedSellersRequest(), &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
    return kExitOk;
  }
  if (response.sellers().empty()) {
    std::cout << "no flagged sellers\n";
    return kExitOk;
  }
  Table table({"SELLER", "RULE", "FLAGGED AT", "EXPIRES AT", "REASON"});
  for (const v1::FlaggedSeller& seller : response.sellers()) {
    table.AddRow({seller.seller_id(), seller.rule_id(), FormatTime(seller.flagged_at()),
                  FormatTime(seller.expires_at()), seller.reason()});
  }
  table.Print(std::cout);
  return kExitOk;
}

int Risk(Context& context, const Args& args) {
  v1::GetSellerRiskRequest request;
  request.set_seller_id(args.positional[0]);
  v1::SellerRisk response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.GetSellerRisk(client_context, request, &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
    return kExitOk;
  }
  Fields fields = {{"seller", response.seller_id()}, {"flagged", YesNo(response.flagged())}};
  if (response.flagged()) {
    fields.emplace_back("flag rule", response.flag().rule_id());
    fields.emplace_back("flag reason", response.flag().reason());
    fields.emplace_back("flagged at", FormatTime(response.flag().flagged_at()));
    fields.emplace_back("expires at", FormatTime(response.flag().expires_at()));
  }
  PrintFields(std::cout, fields);
  // Sorted by name: a protobuf map has no order.
  std::map<std::string, double> counters(response.counters().begin(), response.counters().end());
  if (!counters.empty()) {
    std::cout << "\nCounters:\n";
    Table table({"COUNTER", "VALUE"});
    for (const auto& [name, value] : counters) table.AddRow({name, absl::StrCat(value)});
    table.Print(std::cout, 2);
  }
  if (!response.linked().empty()) {
    std::cout << "\nLinked sellers:\n";
    Table table({"SELLER", "BY", "SHARED INSTRUMENTS"});
    for (const v1::LinkedSeller& linked : response.linked()) {
      table.AddRow({linked.seller_id(), absl::StrJoin(linked.by(), ","),
                    absl::StrCat(linked.shared_instruments())});
    }
    table.Print(std::cout, 2);
  }
  return kExitOk;
}

int Clear(Context& context, const Args& args) {
  if (args.Get("note").empty()) return UsageError("sellers clear: --note TEXT is required");
  v1::ClearSellerFlagRequest request;
  request.set_seller_id(args.positional[0]);
  request.set_note(args.Get("note"));
  v1::ClearSellerFlagResponse response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.ClearSellerFlag(client_context, request, &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
  } else if (response.was_flagged()) {
    std::cout << "seller " << request.seller_id() << ": flag cleared\n";
  } else {
    std::cout << "seller " << request.seller_id() << ": was not flagged\n";
  }
  return kExitOk;
}

}  // namespace

Group SellersCommands() {
  return {"sellers",
          "sellers the fraud rules flagged",
          {
              {"flagged", "", "List the flagged sellers (FraudAdmin.ListFlaggedSellers).", "", {},
               0, 0, Flagged},
              {"risk", "ID", "A seller's flag, counters and linked sellers (FraudAdmin.GetSellerRisk).",
               "", {}, 1, 1, Risk},
              {"clear", "ID --note TEXT", "Clear a seller's flag (FraudAdmin.ClearSellerFlag).",
               "The note goes to the audit log.",
               {{"note", true, "why the flag is cleared (required; audited)", "TEXT"}}, 1, 1, Clear},
          }};
}

}  // namespace recharge::ctl
