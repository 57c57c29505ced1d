#include "gateway/service.h"

#include <charconv>

#include "io/strings.h"
#include "gateway/call_gate.h"
#include "gateway/validation.h"
#include "io/crypto.h"
#include "io/log.h"

namespace recharge {
namespace {

using namespace recharge::v1;

constexpr int kDefaultPageSize = 20;
constexpr int kMaxPageSize = 100;
}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

std::string EncodePageToken(const RechargeCursor& cursor, const std::string& user_id) {
  const std::string user_tag = HexEncode(Sha256(user_id)).substr(0, 8);
  return Base64UrlEncode(StrCat("v2:", cursor.created_at_us, ":", cursor.seq, ":", user_tag));
}

absl::StatusOr<RechargeCursor> DecodePageToken(const std::string& token,
                                               const std::string& user_id) {
  const absl::Status bad = absl::InvalidArgumentError("page_token: not a token this service issued");
  std::string raw;
  if (!Base64UrlDecode(token, &raw) || raw.rfind("v2:", 0) != 0) return bad;
  // v2:<created_at_us>:<seq>:<user tag>
  int64_t parts[2] = {0, 0};
  size_t pos = 3;
  for (int64_t& part : parts) {
    const size_t sep = raw.find(':', pos);
    if (sep == std::string::npos) return bad;
    auto [ptr, ec] = std::from_chars(raw.data() + pos, raw.data() + sep, part);
    if (ec != std::errc() || ptr != raw.data() + sep || part <= 0) return bad;
    pos = sep + 1;
  }
  if (raw.substr(pos) != HexEncode(Sha256(user_id)).substr(0, 8)) {
    return absl::InvalidArgumentError("page_token: was issued for another user_id");
  }
  return RechargeCursor{parts[0], parts[1]};
}

RechargeGatewayService::RechargeGatewayService(CallGate& gate, RechargeFlow& flow,
                                               RefundFlow& refunds, LedgerStore& ledger,
                                               const Catalogue& catalogue, EventFeed& feed)
    : gate_(gate),
      flow_(flow),
      refunds_(refunds),
      ledger_(ledger),
      catalogue_(catalogue),
      feed_(feed) {}

grpc::ServerUnaryReactor* RechargeGatewayService::RefundRecharge(grpc::CallbackServerContext* ctx,
                                                                 const RefundRechargeRequest* request,
                                                                 Recharge* response) {
  return gate_.Serve(ctx, "/recharge.v1.RechargeGateway/RefundRecharge", request, response,
                     [this, request, response](const CallInfo& call) -> asio::awaitable<absl::Status> {
    absl::StatusOr<Recharge> r = co_await refunds_.Refund(*request, call.caller->name, call.deadline);
    if (!r.ok()) co_return r.status();
    *response = *std::move(r);
    co_return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<RechargeEvent>* RechargeGatewayService::WatchRecharges(
    grpc::CallbackServerContext* ctx, const WatchRechargesRequest* request) {
  return feed_.Watch(*request, gate_.AdmitStream(*ctx, "/recharge.v1.RechargeGateway/WatchRecharges"));
}

grpc::ServerUnaryReactor* RechargeGatewayService::RecordRecharge(
    grpc::CallbackServerContext* ctx, const RecordRechargeRequest* request,
    RecordRechargeResponse* response) {
  if (draining_) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 "the gateway is shutting down; nothing was charged, retry"));
    return reactor;
  }
  return gate_.Serve(ctx, "/recharge.v1.RechargeGateway/RecordRecharge", request, response,
                     [this, request, response](const CallInfo& call) -> asio::awaitable<absl::Status> {
    absl::StatusOr<RecordRechargeResponse> r = co_await flow_.Record(*request, call.deadline);
    if (!r.ok()) co_return r.status();
    *response = *std::move(r);
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RechargeGatewayService::GetRecharge(grpc::CallbackServerContext* ctx,
                                                              const GetRechargeRequest* request,
                                                              Recharge* response) {
  return gate_.Serve(ctx, "/recharge.v1.RechargeGateway/GetRecharge", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (request->recharge_id().empty()) {
      co_return absl::InvalidArgumentError("recharge_id: is required");
    }
    if (absl::Status s = ValidateId("recharge_id", request->recharge_id(), true); !s.ok()) co_return s;
    absl::StatusOr<Recharge> r = co_await ledger_.GetRecharge(request->recharge_id());
    if (!r.ok()) co_return r.status();
    *response = *std::move(r);
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RechargeGatewayService::ListRecharges(
    grpc::CallbackServerContext* ctx, const ListRechargesRequest* request,
    ListRechargesResponse* response) {
  return gate_.Serve(ctx, "/recharge.v1.RechargeGateway/ListRecharges", request, response,
                     [this, request, response](const CallInfo&) -> asio::awaitable<absl::Status> {
    if (absl::Status s = ValidateId("user_id", request->user_id(), false); !s.ok()) co_return s;
    if (request->page_size() < 0) {
      co_return absl::InvalidArgumentError("page_size: must not be negative");
    }
    const int page_size = request->page_size() == 0 ? kDefaultPageSize
                                                    : std::min(request->page_size(), kMaxPageSize);
    std::optional<RechargeCursor> cursor;
    if (!request->page_token().empty()) {
      absl::StatusOr<RechargeCursor> c = DecodePageToken(request->page_token(), request->user_id());
      if (!c.ok()) co_return c.status();
      cursor = *c;
    }
    absl::StatusOr<RechargePage> page =
        co_await ledger_.ListRecharges(request->user_id(), page_size, cursor);
    if (!page.ok()) co_return page.status();
    for (Recharge& r : page->recharges) *response->add_recharges() = std::move(r);
    if (page->next_cursor) {
      response->set_next_page_token(EncodePageToken(*page->next_cursor, request->user_id()));
    }
    co_return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RechargeGatewayService::ListPackages(grpc::CallbackServerContext* ctx,
                                                               const ListPackagesRequest* request,
                                                               ListPackagesResponse* response) {
  // Pure and in memory: answered on the gRPC thread, no coroutine needed.
  return gate_.Serve(ctx, "/recharge.v1.RechargeGateway/ListPackages", request, response,
                     [this, request, response](const CallInfo&) -> absl::Status {
    if (absl::Status s = ValidateRegion(catalogue_, "region", request->region()); !s.ok()) return s;
    for (Package& p : catalogue_.List(request->region())) *response->add_packages() = std::move(p);
    return absl::OkStatus();
  });
}

}  // namespace recharge
