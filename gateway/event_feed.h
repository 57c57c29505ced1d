// EventFeed: RechargeGateway.WatchRecharges (docs/lifecycle.md). Each stream
// reads the ledger's outbox after its cursor, in pages, and writes the
// events one at a time in commit order; when it has caught up it looks again
// every `poll` (a timer: no thread waits). A stream has no deadline: it
// stays open until the client leaves or the gateway shuts down, and the
// server's HTTP/2 keepalive pings keep an idle one alive.
//
// A cursor is opaque to clients: "ev1." and the event's seq in the outbox.
// A stream sends its initial metadata once its starting point is fixed (for
// from_now, the newest event at that moment): a client that waits for it
// knows every later change will reach it.
//
// Thread-safety: Watch may be called from any gRPC thread; each stream runs
// on its own strand of the io_context.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <memory>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "io/asio.h"
#include "ledger/ledger_store.h"
#include "recharge/v1/recharge.pb.h"

namespace recharge {

std::string EncodeEventCursor(int64_t seq);
// INVALID_ARGUMENT naming after_cursor for anything EncodeEventCursor did not make.
absl::StatusOr<int64_t> DecodeEventCursor(std::string_view cursor);

class EventFeed {
 public:
  struct Options {
    std::chrono::milliseconds poll{100};  // how often a caught-up stream looks again
    int page = 256;                       // events read from the ledger at once
  };

  // `io` and `ledger` must outlive the feed and every stream.
  EventFeed(asio::io_context& io, LedgerStore& ledger, Options options);

  // A new stream. `admitted` is the call gate's answer: an error ends the
  // stream with it at once; so does a bad cursor, and an expired one ends
  // it with OUT_OF_RANGE before any event.
  grpc::ServerWriteReactor<recharge::v1::RechargeEvent>* Watch(
      const recharge::v1::WatchRechargesRequest& request, const absl::Status& admitted);

  // Ends every stream with UNAVAILABLE ("resume from your last cursor") and
  // refuses new ones. Streams end within one poll.
  void Shutdown();

  size_t streams() const;

 private:
  class Stream;
  // The open streams; shared with them, so a stream that ends after the
  // feed is gone still has somewhere to sign out.
  struct Registry {
    mutable std::mutex mu;
    std::unordered_set<Stream*> streams ABSL_GUARDED_BY(mu);
    bool shut_down ABSL_GUARDED_BY(mu) = false;
  };

  asio::io_context& io_;
  LedgerStore& ledger_;
  const Options options_;
  const std::shared_ptr<Registry> registry_;
};

}  // namespace recharge
