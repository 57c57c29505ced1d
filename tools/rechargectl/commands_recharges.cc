// rechargectl recharges: get, list, refund, watch.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "recharge/v1/recharge.grpc.pb.h"
#include "tools/rechargectl/cli.h"
#include "tools/rechargectl/output.h"

namespace recharge::ctl {
namespace {

int Get(Context& context, const Args& args) {
  v1::GetRechargeRequest request;
  request.set_recharge_id(args.positional[0]);
  v1::Recharge response;
  int code = CallGateway<v1::RechargeGateway::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.GetRecharge(client_context, request, &response);
  });
  if (code != kExitOk) return code;
  if (context.options.json) PrintJson(ProtoJson(response));
  else PrintFields(std::cout, RechargeFields(response));
  return kExitOk;
}

int List(Context& context, const Args& args) {
  if (args.Get("user").empty()) return UsageError("recharges list: --user U is required");
  int limit = 100;
  if (args.Has("limit")) {
    absl::StatusOr<int> parsed = ParsePositiveIntFlag("--limit", args.Get("limit"));
    if (!parsed.ok()) return UsageError(parsed.status().message());
    limit = *parsed;
  }
  // Pages until --limit recharges; next_page_token says whether more remain.
  v1::ListRechargesResponse all;
  do {
    v1::ListRechargesRequest request;
    request.set_user_id(args.Get("user"));
    request.set_page_size(std::min(100, limit - all.recharges_size()));
    request.set_page_token(all.next_page_token());
    v1::ListRechargesResponse page;
    int code = CallGateway<v1::RechargeGateway::Stub>(context, [&](auto& stub, auto* client_context) {
      return stub.ListRecharges(client_context, request, &page);
    });
    if (code != kExitOk) return code;
    for (v1::Recharge& recharge : *page.mutable_recharges()) {
      if (all.recharges_size() < limit) *all.add_recharges() = std::move(recharge);
    }
    all.set_next_page_token(page.next_page_token());
  } while (!all.next_page_token().empty() && all.recharges_size() < limit);

  if (context.options.json) {
    PrintJson(ProtoJson(all));
    return kExitOk;
  }
  if (all.recharges().empty()) {
    std::cout << "no recharges for user " << args.Get("user") << "\n";
    return kExitOk;
  }
  std::vector<const v1::Recharge*> rows;
  for (const v1::Recharge& recharge : all.recharges()) rows.push_back(&recharge);
  PrintRechargeTable(std::cout, rows);
  if (!all.next_page_token().empty()) {
    std::cout << "(more than " << limit << " recharges; raise --limit to see them)\n";
  }
  return kExitOk;
}

// A fresh idempotency key: "ctl-" and 32 random hex digits.
std::string NewIdempotencyKey() {
  std::random_device random;
  std::string key = "ctl-";
  for (int i = 0; i < 4; ++i) absl::StrAppend(&key, absl::Hex(random(), absl::kZeroPad8));
  return key;
}

int Refund(Context& context, const Args& args) {
  if (args.Get("reason").empty()) return UsageError("recharges refund: --reason R is required");
  v1::RefundRechargeRequest request;
  request.set_recharge_id(args.positional[0]);
  request.set_reason(args.Get("reason"));
  request.set_idempotency_key(args.Has("key") ? args.Get("key") : NewIdempotencyKey());
  v1::Recharge response;
  int code = CallGateway<v1::RechargeGateway::Stub>(context, [&](auto& stub, auto* client_context) {
    return stub.RefundRecharge(client_context, request, &response);
  });
  if (code != kExitOk) {
    std::cerr << "rechargectl: idempotency key: " << request.idempotency_key() << "\n";
    return code;
  }
  if (context.options.json) {
    PrintJson({{"idempotency_key", request.idempotency_key()}, {"recharge", ProtoJson(response)}});
    return kExitOk;
  }
  Fields fields = {{"idempotency key", request.idempotency_key()},
                   {"replayed", YesNo(response.replayed())}};
  for (auto& field : RechargeFields(response)) fields.push_back(std::move(field));
  PrintFields(std::cout, fields);
  return kExitOk;
}

std::string FormatDelta(int64_t delta) {
  return delta > 0 ? absl::StrCat("+", delta) : absl::StrCat(delta);
}

// Follows the event feed until --max events, Ctrl-C (SIGINT) or SIGTERM, or
// the gateway ending the stream. Threads: a second thread waits for the
// signals and cancels the call.
int Watch(Context& context, const Args& args) {
  if (args.Has("from-now") && args.Has("after")) {
    return UsageError("recharges watch: --from-now goes without --after");
  }
  int64_t max_events = 0;  // 0: no limit
  if (args.Has("max")) {
    absl::StatusOr<int> parsed = ParsePositiveIntFlag("--max", args.Get("max"));
    if (!parsed.ok()) return UsageError(parsed.status().message());
    max_events = *parsed;
  }
  // Blocked before Connect() starts gRPC's threads, so that only the waiter
  // below takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (std::optional<int> code = context.gateway.Connect()) return *code;
  v1::WatchRechargesRequest request;
  request.set_from_now(args.Has("from-now"));
  request.set_after_cursor(args.Get("after"));
  std::shared_ptr<grpc::ClientContext> client_context = context.gateway.NewContext(/*streaming=*/true);
  auto interrupted = std::make_shared<std::atomic<bool>>(false);
  // Detached: it may still be waiting when the process exits; it owns what
  // it touches.
  std::thread([signals, client_context, interrupted] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    interrupted->store(true);
    client_context->TryCancel();
  }).detach();

  auto stub = v1::RechargeGateway::NewStub(context.gateway.channel());
  std::unique_ptr<grpc::ClientReader<v1::RechargeEvent>> reader =
      stub->WatchRecharges(client_context.get(), request);
  // The gateway sends the initial metadata once it has fixed the stream's
  // starting point: from then on (the header printed) no event is missed.
  reader->WaitForInitialMetadata();
  if (!context.options.json) {
    std::cout << absl::StrFormat("%-24s  %-17s  %-30s  %-15s  %s\n", "CURSOR", "TYPE", "RECHARGE",
                                 "STATUS", "COINS")
              << std::flush;
  }
  v1::RechargeEvent event;
  int64_t seen = 0;
  bool done = false;
  while (!done && reader->Read(&event)) {
    if (context.options.json) {
      PrintJson(ProtoJson(event), /*compact=*/true);
    } else {
      std::cout << absl::StrFormat("%-24s  %-17s  %-30s  %-15s  %s\n", event.cursor(),
                                   EventName(event.type()), event.recharge().recharge_id(),
                                   StatusName(event.recharge().status()),
                                   FormatDelta(event.coins_delta()))
                << std::flush;
    }
    done = max_events > 0 && ++seen >= max_events;
  }
  if (done) client_context->TryCancel();
  grpc::Status status = reader->Finish();
  if (done || interrupted->load()) return kExitOk;
  return ReportStatus(status);
}

}  // namespace

Group RechargesCommands() {
  return {
      "recharges",
      "look up, list, refund and follow recharges",
      {
          {"get", "ID", "Show one recharge (RechargeGateway.GetRecharge).", "", {}, 1, 1, Get},
          {"list", "--user U [--limit N]",
           "List a user's recharges, newest first (RechargeGateway.ListRecharges).",
           "Follows next_page_token until --limit recharges.",
           {{"user", true, "the user id (required)", "U"},
            {"limit", true, "at most this many recharges (default 100)", "N"}},
           0, 0, List},
          {"refund", "ID --reason R [--key K]",
           "Refund an approved recharge in full (RechargeGateway.RefundRecharge).",
           "The idempotency key defaults to a fresh random one, printed with the answer;\n"
           "run again with --key K to repeat the same refund safely.",
           {{"reason", true, "why (required; kept with the refund)", "R"},
            {"key", true, "idempotency key, 8-128 of A-Z a-z 0-9 _ . : - (default: random)", "K"}},
           1, 1, Refund},
          {"watch", "[--from-now] [--after CURSOR] [--max N]",
           "Follow the event feed, one line per event (RechargeGateway.WatchRecharges).",
           "Each line: cursor, event type, recharge id, status, coins delta. With --json,\n"
           "one JSON object (a recharge.v1.RechargeEvent) per line instead. Without\n"
           "--from-now or --after it starts at the oldest event kept. Ctrl-C ends it\n"
           "(exit 0). --timeout applies to connecting only.",
           {{"from-now", false, "only events committed from now on", ""},
            {"after", true, "resume strictly after this cursor", "CURSOR"},
            {"max", true, "stop after N events", "N"}},
           0, 0, Watch},
      }};
}

}  // namespace recharge::ctl
