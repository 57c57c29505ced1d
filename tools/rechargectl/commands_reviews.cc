// rechargectl reviews: list, approve, reject.
#include <iostream>

#include "recharge/v1/recharge.grpc.pb.h"
#include "tools/rechargectl/cli.h"
#include "tools/rechargectl/output.h"

namespace recharge::ctl {
namespace {

int List(Context& context, const Args&) {
  // Every page of the queue.
  v1::ListReviewsResponse all;
  std::string page_token;
  do {
    v1::ListReviewsRequest request;
    request.set_page_size(100);
    request.set_page_token(page_token);
    v1::ListReviewsResponse page;
    int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
      return stub.ListReviews(client_context, request, &page);
    });
    if (code != kExitOk) return code;
    for (v1::Recharge& recharge : *page.mutable_recharges()) {
      *all.add_recharges() = std::move(recharge);
    }
    page_token = page.next_page_token();
  } while (!page_token.empty());

  if (context.options.json) {
    PrintJson(ProtoJson(all));
    return kExitOk;
  }
  if (all.recharges().empty()) {
    std::cout << "no recharges waiting for review\n";
    return kExitOk;
  }
  std::vector<const v1::Recharge*> rows;
  for (const v1::Recharge& recharge : all.recharges()) rows.push_back(&recharge);
  PrintRechargeTable(std::cout, rows);
  return kExitOk;
}

int Resolve(Context& context, const Args& args, bool approve) {
  v1::ResolveReviewRequest request;
  request.set_recharge_id(args.positional[0]);
  request.set_approve(approve);
  request.set_note(args.Get("note"));
  v1::Recharge response;
  int code = CallGateway<v1::FraudAdmin::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.ResolveReview(client_context, request, &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) {
    PrintJson(ProtoJson(response));
    return kExitOk;
  }
  std::cout << "review " << (approve ? "approved" : "rejected") << "\n\n";
  PrintFields(std::cout, RechargeFields(response));
  return kExitOk;
}

}  // namespace

Group ReviewsCommands() {
  const FlagSpec note{"note", true, "a note kept with the decision (audited)", "TEXT"};
  return {"reviews",
          "recharges the fraud rules held for review",
          {
              {"list", "", "List the recharges waiting for review (FraudAdmin.ListReviews).", "",
               {}, 0, 0, List},
              {"approve", "ID [--note TEXT]",
               "Approve a held recharge: charge (capture) it and credit the coins "
               "(FraudAdmin.ResolveReview).",
               "", {note}, 1, 1,
               [](Context& context, const Args& args) { return Resolve(context, args, true); }},
              {"reject", "ID [--note TEXT]",
               "Reject a held recharge: nothing is charged (FraudAdmin.ResolveReview).", "",
               {note}, 1, 1,
               [](Context& context, const Args& args) { return Resolve(context, args, false); }},
          }};
}

}  // namespace recharge::ctl
