#include "gateway/event_feed.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/strand.hpp>

#include <charconv>
#include <deque>

#include "io/log.h"
#include "io/strings.h"

namespace recharge {

using recharge::v1::RechargeEvent;

namespace {
constexpr std::string_view kCursorPrefix = "ev1.";
}  // namespace

std::string EncodeEventCursor(int64_t seq) { return StrCat(kCursorPrefix, seq); }

absl::StatusOr<int64_t> DecodeEventCursor(std::string_view cursor) {
  const absl::Status bad = absl::InvalidArgumentError(
      "after_cursor: not a cursor this service issued (pass an event's cursor, or leave it empty)");
  if (!cursor.starts_with(kCursorPrefix)) return bad;
  std::string_view digits = cursor.substr(kCursorPrefix.size());
  int64_t seq = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), seq);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size() || seq < 0) {
    return bad;
  }
  return seq;
}

// One WatchRecharges call. Its state is touched only on its strand: gRPC's
// callbacks (any thread) post there. At most one of a ledger read, a write
// and a poll timer is outstanding at a time; `pending_` counts the reads and
// timers still to come back, and the stream is deleted once gRPC is done
// with it (OnDone) and nothing is to come back.
class EventFeed::Stream final : public grpc::ServerWriteReactor<RechargeEvent> {
 public:
  Stream(asio::io_context& io, LedgerStore& ledger, Options options,
         std::shared_ptr<Registry> registry, std::optional<int64_t> after, bool from_now)
      : strand_(asio::make_strand(io)),
        timer_(strand_),
        ledger_(ledger),
        options_(options),
        registry_(std::move(registry)),
        cursor_(after),
        from_now_(from_now) {}

  void Start() {
    asio::post(strand_, [this] {
      if (from_now_) {
        ReadTail();
      } else {
        SendStart();
      }
    });
  }

  // Shutdown: the stream ends at its next step (a poll ends at once).
  void Stop() {
    asio::post(strand_, [this] {
      if (deleting_) return;
      stopping_ = true;
      timer_.cancel();
    });
  }

  // Ends the stream before it started (a bad request).
  void Refuse(const absl::Status& status) { End(status); }

  void OnWriteDone(bool ok) override {
    asio::post(strand_, [this, ok] {
      writing_ = false;
      if (!ok) {  // the client is gone
        End(absl::CancelledError("the client went away"));
        return;
      }
      cursor_ = queue_.front().seq;
      queue_.pop_front();
      Next();
    });
  }

  void OnSendInitialMetadataDone(bool ok) override {
    asio::post(strand_, [this, ok] {
      writing_ = false;
      if (!ok) {
        End(absl::CancelledError("the client went away"));
        return;
      }
      Fetch();
    });
  }

  void OnCancel() override {
    asio::post(strand_, [this] {
      cancelled_ = true;
      timer_.cancel();
      if (!writing_ && pending_ == 0) End(absl::CancelledError("cancelled"));
    });
  }

  void OnDone() override {
    asio::post(strand_, [this] {
      done_ = true;
      MaybeDelete();
    });
  }

 private:
  // from_now: the cursor is the newest event committed before the call.
  void ReadTail() {
    ++pending_;
    asio::co_spawn(strand_, ReadLatest(), [this](std::exception_ptr e, absl::StatusOr<int64_t> latest) {
      --pending_;
      if (MaybeDelete()) return;
      if (e) latest = absl::InternalError("reading the feed's tail failed");
      if (!latest.ok()) {
        End(latest.status());
        return;
      }
      cursor_ = *latest;
      SendStart();
    });
  }

  // The initial metadata, once the starting point is fixed: a client that
  // waits for it knows every change committed from then on will reach it.
  void SendStart() {
    if (Ending()) return;
    writing_ = true;
    StartSendInitialMetadata();
  }

  void Fetch() {
    ++pending_;
    asio::co_spawn(strand_, ReadAfter(cursor_),
                   [this](std::exception_ptr e, absl::StatusOr<std::vector<FeedEvent>> events) {
                     --pending_;
                     if (MaybeDelete()) return;
                     if (e) events = absl::InternalError("reading the feed failed");
                     if (!events.ok()) {
                       End(events.status());
                       return;
                     }
                     if (events->empty()) {
                       if (!cursor_) cursor_ = 0;  // nothing retained yet: from the start
                       Poll();
                       return;
                     }
                     for (FeedEvent& f : *events) queue_.push_back(std::move(f));
                     Next();
                   });
  }

  // Member coroutines (not lambdas): the stream outlives them (pending_).
  asio::awaitable<absl::StatusOr<int64_t>> ReadLatest() { co_return co_await ledger_.LatestEventSeq(); }
  asio::awaitable<absl::StatusOr<std::vector<FeedEvent>>> ReadAfter(std::optional<int64_t> after) {
    co_return co_await ledger_.ListEvents(after, options_.page);
  }

  void Poll() {
    if (Ending()) return;
    ++pending_;
    timer_.expires_after(options_.poll);
    timer_.async_wait(asio::bind_executor(strand_, [this](boost::system::error_code) {
      --pending_;
      if (MaybeDelete()) return;
      if (Ending()) return;
      Fetch();
    }));
  }

  // Writes the next queued event, or reads more.
  void Next() {
    if (Ending()) return;
    if (queue_.empty()) {
      Fetch();
      return;
    }
    FeedEvent& f = queue_.front();
    f.event.set_cursor(EncodeEventCursor(f.seq));
    writing_ = true;
    StartWrite(&f.event);
  }

  // True (and the stream ended) when it must stop: cancelled or shut down.
  bool Ending() {
    if (cancelled_) {
      End(absl::CancelledError("cancelled"));
      return true;
    }
    if (stopping_) {
      End(absl::UnavailableError(
          "the gateway is shutting down; watch again from your last cursor"));
      return true;
    }
    return finished_;
  }

  void End(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    timer_.cancel();
    Finish(status.ok() ? grpc::Status::OK
                       : grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                                      std::string(status.message())));
  }

  // Once gRPC is done with the stream and nothing is to come back: signs out
  // of the registry, then is deleted by a handler of its own strand, after
  // any Stop() posted before it signed out. True from then on.
  bool MaybeDelete() {
    if (deleting_) return true;
    if (!done_ || pending_ > 0) return false;
    deleting_ = true;
    {
      std::lock_guard<std::mutex> lock(registry_->mu);
      registry_->streams.erase(this);
    }
    asio::post(strand_, [this] { delete this; });
    return true;
  }

  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer timer_;
  LedgerStore& ledger_;
  const Options options_;
  const std::shared_ptr<Registry> registry_;
  std::optional<int64_t> cursor_;  // the last event sent (nullopt: from the oldest retained)
  const bool from_now_;
  std::deque<FeedEvent> queue_;   // read, not yet written; the front is being written
  int pending_ = 0;
  bool writing_ = false;
  bool cancelled_ = false;
  bool stopping_ = false;
  bool finished_ = false;
  bool done_ = false;
  bool deleting_ = false;
};

EventFeed::EventFeed(asio::io_context& io, LedgerStore& ledger, Options options)
    : io_(io), ledger_(ledger), options_(options), registry_(std::make_shared<Registry>()) {}

grpc::ServerWriteReactor<RechargeEvent>* EventFeed::Watch(
    const recharge::v1::WatchRechargesRequest& request, const absl::Status& admitted) {
  std::optional<int64_t> after;
  absl::Status refusal = admitted;
  if (refusal.ok() && !request.after_cursor().empty()) {
    if (request.from_now()) {
      refusal = absl::InvalidArgumentError("after_cursor: give it or from_now, not both");
    } else {
      absl::StatusOr<int64_t> seq = DecodeEventCursor(request.after_cursor());
      if (seq.ok()) {
        after = *seq;
      } else {
        refusal = seq.status();
      }
    }
  }
  auto* stream = new Stream(io_, ledger_, options_, registry_, after, request.from_now());
  {
    std::lock_guard<std::mutex> lock(registry_->mu);
    if (registry_->shut_down && refusal.ok()) {
      refusal = absl::UnavailableError("the gateway is shutting down; watch another instance");
    }
    registry_->streams.insert(stream);
  }
  if (!refusal.ok()) {
    stream->Refuse(refusal);
  } else {
    stream->Start();
  }
  return stream;
}

void EventFeed::Shutdown() {
  std::lock_guard<std::mutex> lock(registry_->mu);
  registry_->shut_down = true;
  for (Stream* s : registry_->streams) s->Stop();
}

size_t EventFeed::streams() const {
  std::lock_guard<std::mutex> lock(registry_->mu);
  return registry_->streams.size();
}

}  // namespace recharge
