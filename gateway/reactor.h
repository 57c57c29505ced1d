// Running a gRPC callback as a coroutine: Spawn() starts the body on the
// io_context and finishes the unary reactor exactly once with its status;
// DeadlineOf() is the caller's deadline (bounded, when it set none).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <exception>

#include "absl/status/status.h"
#include "io/asio.h"
#include "io/log.h"

namespace recharge {

grpc::Status ToGrpcStatus(const absl::Status& status);

// Used when the caller sets no deadline: the flow still needs one.
inline constexpr std::chrono::seconds kDefaultDeadline(30);

inline std::chrono::steady_clock::time_point DeadlineOf(const grpc::CallbackServerContext& ctx) {
  const auto now_sys = std::chrono::system_clock::now();
  const auto now = std::chrono::steady_clock::now();
  const auto remaining = ctx.deadline() - now_sys;
  if (remaining > kDefaultDeadline) return now + kDefaultDeadline;
  return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
}

// Runs `body` as a coroutine on `io` and finishes `reactor` with its status.
// An exception escaping the body is a bug: INTERNAL, logged.
template <typename Body>
inline grpc::ServerUnaryReactor* Spawn(asio::io_context& io, grpc::CallbackServerContext* ctx,
                                Body body) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  asio::co_spawn(io, std::move(body),
                 [reactor](std::exception_ptr e, absl::Status status) {
                   if (e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       LogError("handler_exception", {{"what", ex.what()}});
                     } catch (...) {
                       LogError("handler_exception", {{"what", "unknown"}});
                     }
                     reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "internal error"));
                     return;
                   }
                   reactor->Finish(ToGrpcStatus(status));
                 });
  return reactor;
}

}  // namespace recharge
