// rechargectl chargeback and audit: the admin actions that are not about
// rules, sellers or reviews.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "recharge/v1/recharge.grpc.pb.h"
#include "tools/rechargectl/cli.h"
#include "tools/rechargectl/output.h"

namespace recharge::ctl {
namespace {

int Chargeback(Context& context, const Args& args) {
  if (args.Get("reason").empty()) return UsageError("chargeback: --reason R is required");
  v1::ReportChargebackRequest request;
  request.set_recharge_id(args.positional[0]);
  request.set_reason(args.Get("reason"));
  v1::ReportChargebackResponse response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.ReportChargeback(client_context, request, &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
    return kExitOk;
  }
  PrintFields(std::cout,
              {{"chargeback recorded", request.recharge_id()},
               {"seller flagged", YesNo(response.seller_flagged())},
               {"blocked", response.blocked().empty() ? "-" : absl::StrJoin(response.blocked(), ", ")}});
  return kExitOk;
}

int AuditList(Context& context, const Args& args) {
  int limit = 50;
  if (args.Has("limit")) {
    absl::StatusOr<int> parsed = ParsePositiveIntFlag("--limit", args.Get("limit"));
    if (!parsed.ok()) return UsageError(parsed.status().message());
    limit = *parsed;
  }
  v1::ListAuditEventsResponse all;
  do {
    v1::ListAuditEventsRequest request;
    request.set_page_size(std::min(100, limit - all.events_size()));
    request.set_page_token(all.next_page_token());
    v1::ListAuditEventsResponse page;
    int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
      return stub.ListAuditEvents(client_context, request, &page);
    });
    if (code != kExitOk) return code;
    for (v1::AuditEvent& event : *page.mutable_events()) {
      if (all.events_size() < limit) *all.add_events() = std::move(event);
    }
    all.set_next_page_token(page.next_page_token());
  } while (!all.next_page_token().empty() && all.events_size() < limit);

  if (context.options.json) {
    PrintJson(ProtoJson(all));
    return kExitOk;
  }
  if (all.events().empty()) {
    std::cout << "no audit events\n";
    return kExitOk;
  }
  Table table({"SEQ", "AT", "CALLER", "RPC", "TARGET", "OUTCOME", "NOTE", "DETAIL"});
  for (const v1::AuditEvent& event : all.events()) {
    table.AddRow({absl::StrCat(event.seq()), FormatTime(event.at()), event.caller(), event.rpc(),
                  event.target(), event.outcome(), event.note().empty() ? "-" : event.note(),
                  event.detail().empty() ? "-" : event.detail()});
  }
  table.Print(std::cout);
  return kExitOk;
}

}  // namespace

Group ChargebackCommands() {
  return {"chargeback",
          "report a chargeback",
          {{"", "ID --reason R",
            "Report that the buyer's bank reversed a recharge (FraudAdmin.ReportChargeback).",
            "Takes the coins back; the chargeback counters may flag the seller and block\n"
            "the instruments.",
            {{"reason", true, "the bank's reason (required; audited)", "R"}}, 1, 1, Chargeback}}};
}

Group AuditCommands() {
  return {"audit",
          "the audit log of admin actions",
          {{"list", "[--limit N]", "The audit log, newest first (FraudAdmin.ListAuditEvents).", "",
            {{"limit", true, "at most this many events (default 50)", "N"}}, 0, 0, AuditList}}};
}

}  // namespace recharge::ctl
