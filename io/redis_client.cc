#include "io/redis_client.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include <charconv>
#include <functional>
#include <optional>

#include "io/strings.h"

namespace recharge {

RedisReply CopyRedisReply(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(CopyRedisReply(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
  }
  return out;
}

namespace {

using Strand = asio::strand<asio::any_io_executor>;

}  // namespace

// One hiredis async context and its socket watchers, all on one strand.
class RedisClient::Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Done = std::function<void(absl::StatusOr<RedisReply>)>;
  using DoneAll = std::function<void(absl::StatusOr<std::vector<RedisReply>>)>;

  Connection(asio::any_io_executor ex, const Options& options)
      : strand_(asio::make_strand(ex)), options_(options) {}

  ~Connection() { Close(); }

  // Frees the hiredis context: pending commands fail with UNAVAILABLE.
  // REQUIRES: on strand_, or no io thread running.
  void Close() {
    if (ac_ == nullptr) return;
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;
    ac->onDisconnect = nullptr;
    redisAsyncFree(ac);  // calls the pending callbacks, then Cleanup
  }

  // REQUIRES: on strand_.
  void Send(std::vector<std::string> args, std::chrono::steady_clock::time_point deadline,
            Done done) {
    if (ac_ == nullptr && !Connect()) {
      done(absl::UnavailableError("cannot connect"));
      return;
    }
    auto pending = std::make_shared<Pending>(strand_, std::move(done));
    auto* privdata = new std::shared_ptr<Pending>(pending);
    if (!Queue(args, &Connection::OnReply, privdata)) {
      delete privdata;
      pending->Finish(absl::UnavailableError("command could not be queued"));
      return;
    }
    pending->timer.expires_at(deadline);
    pending->timer.async_wait([pending](boost::system::error_code ec) {
      if (!ec) pending->Finish(absl::DeadlineExceededError("no reply before the deadline"));
    });
  }

  // Queues every command before returning to the strand, so they leave in
  // one write, in order, with nothing in between. REQUIRES: on strand_.
  void SendAll(std::vector<std::vector<std::string>> commands,
               std::chrono::steady_clock::time_point deadline, DoneAll done) {
    if (commands.empty()) {
      done(std::vector<RedisReply>());
      return;
    }
    if (ac_ == nullptr && !Connect()) {
      done(absl::UnavailableError("cannot connect"));
      return;
    }
    auto batch = std::make_shared<Batch>(strand_, commands.size(), std::move(done));
    for (size_t i = 0; i < commands.size(); ++i) {
      auto* privdata = new BatchReply{batch, i};
      if (!Queue(commands[i], &Connection::OnBatchReply, privdata)) {
        delete privdata;  // the ones queued before are answered into a finished batch
        batch->Finish(absl::UnavailableError("command could not be queued"));
        return;
      }
    }
    batch->timer.expires_at(deadline);
    batch->timer.async_wait([batch](boost::system::error_code ec) {
      if (!ec) batch->Finish(absl::DeadlineExceededError("no reply before the deadline"));
    });
  }

  const Strand& strand() const { return strand_; }

 private:
  // A command waiting for its reply or its deadline, whichever comes first.
  struct Pending {
    Pending(const Strand& s, Done d) : timer(s), done(std::move(d)) {}
    void Finish(absl::StatusOr<RedisReply> r) {
      if (finished) return;
      finished = true;
      timer.cancel();
      done(std::move(r));
    }
    asio::steady_timer timer;
    Done done;
    bool finished = false;
  };

  // Commands sent back to back, waiting for all their replies or the
  // deadline, whichever comes first.
  struct Batch {
    Batch(const Strand& s, size_t n, DoneAll d) : timer(s), replies(n), left(n), done(std::move(d)) {}
    void Reply(size_t i, RedisReply r) {
      if (finished) return;
      replies[i] = std::move(r);
      if (--left == 0) Finish(std::move(replies));
    }
    void Finish(absl::StatusOr<std::vector<RedisReply>> r) {
      if (finished) return;
      finished = true;
      timer.cancel();
      done(std::move(r));
    }
    asio::steady_timer timer;
    std::vector<RedisReply> replies;
    size_t left;
    DoneAll done;
    bool finished = false;
  };
  struct BatchReply {
    std::shared_ptr<Batch> batch;
    size_t index;
  };

  bool Queue(const std::vector<std::string>& args, redisCallbackFn* callback, void* privdata) {
    std::vector<const char*> argv;
    std::vector<size_t> argvlen;
    argv.reserve(args.size());
    argvlen.reserve(args.size());
    for (const std::string& a : args) {
      argv.push_back(a.data());
      argvlen.push_back(a.size());
    }
    return redisAsyncCommandArgv(ac_, callback, privdata, static_cast<int>(argv.size()), argv.data(),
                                 argvlen.data()) == REDIS_OK;
  }

  bool Connect() {
    redisAsyncContext* ac = redisAsyncConnect(options_.host.c_str(), options_.port);
    if (ac == nullptr) return false;
    if (ac->err) {
      redisAsyncFree(ac);
      return false;
    }
    ac_ = ac;
    ac_->data = this;
    socket_.emplace(strand_, ac_->c.fd);
    // The watchers keep the connection alive while an async_wait is pending.
    ac_->ev.data = this;
    ac_->ev.addRead = [](void* p) { static_cast<Connection*>(p)->Watch(/*read=*/true, true); };
    ac_->ev.delRead = [](void* p) { static_cast<Connection*>(p)->Watch(/*read=*/true, false); };
    ac_->ev.addWrite = [](void* p) { static_cast<Connection*>(p)->Watch(/*read=*/false, true); };
    ac_->ev.delWrite = [](void* p) { static_cast<Connection*>(p)->Watch(/*read=*/false, false); };
    ac_->ev.cleanup = [](void* p) { static_cast<Connection*>(p)->Cleanup(); };
    redisAsyncSetConnectCallback(ac_, [](const redisAsyncContext*, int) {});
    redisAsyncSetDisconnectCallback(ac_, [](const redisAsyncContext* c, int) {
      // hiredis frees the context after this returns.
      static_cast<Connection*>(c->data)->ac_ = nullptr;
    });
    return true;
  }

  void Watch(bool read, bool on) {
    bool& flag = read ? reading_ : writing_;
    if (flag == on) return;
    flag = on;
    if (on) Arm(read);
  }

  void Arm(bool read) {
    if (!socket_) return;
    const uint64_t gen = generation_;
    socket_->async_wait(
        read ? asio::posix::stream_descriptor::wait_read : asio::posix::stream_descriptor::wait_write,
        asio::bind_executor(strand_, [self = shared_from_this(), read, gen](boost::system::error_code ec) {
          if (ec || gen != self->generation_ || self->ac_ == nullptr) return;
          bool& flag = read ? self->reading_ : self->writing_;
          if (!flag) return;
          if (read) {
            redisAsyncHandleRead(self->ac_);
          } else {
            redisAsyncHandleWrite(self->ac_);
          }
          // The context may be gone now (a disconnect); re-arm only if not.
          if (self->ac_ != nullptr && gen == self->generation_ && flag) self->Arm(read);
        }));
  }

  void Cleanup() {
    // hiredis is freeing the context (a disconnect, a failed connect — after
    // which no disconnect callback comes — or Close()).
    ac_ = nullptr;
    // hiredis owns and closes the fd: take it back from Asio without closing it.
    reading_ = writing_ = false;
    ++generation_;
    if (socket_) {
      socket_->release();
      socket_.reset();
    }
  }

  static void OnReply(redisAsyncContext*, void* r, void* privdata) {
    auto* holder = static_cast<std::shared_ptr<Pending>*>(privdata);
    std::shared_ptr<Pending> pending = std::move(*holder);
    delete holder;
    if (r == nullptr) {
      pending->Finish(absl::UnavailableError("connection lost"));
    } else {
      pending->Finish(CopyRedisReply(static_cast<redisReply*>(r)));
    }
  }

  static void OnBatchReply(redisAsyncContext*, void* r, void* privdata) {
    std::unique_ptr<BatchReply> reply(static_cast<BatchReply*>(privdata));
    if (r == nullptr) {
      reply->batch->Finish(absl::UnavailableError("connection lost"));
    } else {
      reply->batch->Reply(reply->index, CopyRedisReply(static_cast<redisReply*>(r)));
    }
  }

  Strand strand_;
  const Options options_;
  redisAsyncContext* ac_ = nullptr;
  std::optional<asio::posix::stream_descriptor> socket_;
  bool reading_ = false;
  bool writing_ = false;
  uint64_t generation_ = 0;
};

absl::StatusOr<RedisClient::Options> ParseRedisAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(StrCat("redis address \"", address, "\" must be host:port"));
  }
  RedisClient::Options o;
  o.host = address.substr(0, colon);
  unsigned port = 0;
  const char* begin = address.data() + colon + 1;
  const char* end = address.data() + address.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(StrCat("redis address \"", address, "\" has a bad port"));
  }
  o.port = static_cast<uint16_t>(port);
  return o;
}

absl::StatusOr<std::vector<RedisClient::Options>> ParseRedisAddresses(const std::string& addresses) {
  std::vector<RedisClient::Options> out;
  size_t start = 0;
  while (start <= addresses.size()) {
    size_t end = addresses.find(',', start);
    if (end == std::string::npos) end = addresses.size();
    size_t first = start;
    size_t last = end;
    while (first < last && addresses[first] == ' ') ++first;
    while (last > first && addresses[last - 1] == ' ') --last;
    absl::StatusOr<RedisClient::Options> one = ParseRedisAddress(addresses.substr(first, last - first));
    if (!one.ok()) return one.status();
    out.push_back(*std::move(one));
    start = end + 1;
  }
  return out;
}

RedisClient::RedisClient(asio::any_io_executor executor, Options options)
    : options_(std::move(options)), address_(StrCat(options_.host, ":", options_.port)) {
  for (int i = 0; i < std::max(1, options_.connections); ++i) {
    connections_.push_back(std::make_shared<Connection>(executor, options_));
  }
}

RedisClient::~RedisClient() {
  for (auto& c : connections_) c->Close();
}

absl::Status RedisClient::NameServer(const absl::Status& status) const {
  return absl::Status(status.code(), StrCat("redis ", address_, ": ", status.message()));
}

asio::awaitable<absl::StatusOr<RedisReply>> RedisClient::Command(
    std::vector<std::string> args, std::chrono::steady_clock::time_point deadline,
    std::string /*route_key: one server*/) {
  std::shared_ptr<Connection> c = connections_[next_++ % connections_.size()];
  ++sent_;
  auto initiation = [c, deadline](auto handler, std::vector<std::string> args) {
    using Handler = decltype(handler);
    auto shared = std::make_shared<Handler>(std::move(handler));
    Connection::Done done = [shared](absl::StatusOr<RedisReply> r) {
      auto ex = asio::get_associated_executor(*shared);
      asio::post(ex, [shared, r = std::move(r)]() mutable { std::move(*shared)(std::move(r)); });
    };
    asio::dispatch(c->strand(), [c, args = std::move(args), deadline, done = std::move(done)]() mutable {
      c->Send(std::move(args), deadline, std::move(done));
    });
  };
  absl::StatusOr<RedisReply> r =
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(absl::StatusOr<RedisReply>)>(
          initiation, asio::use_awaitable, std::move(args));
  if (!r.ok()) co_return NameServer(r.status());
  co_return r;
}

asio::awaitable<absl::StatusOr<std::vector<RedisReply>>> RedisClient::Commands(
    std::vector<std::vector<std::string>> commands, std::chrono::steady_clock::time_point deadline) {
  std::shared_ptr<Connection> c = connections_[next_++ % connections_.size()];
  sent_ += commands.size();
  auto initiation = [c, deadline](auto handler, std::vector<std::vector<std::string>> commands) {
    using Handler = decltype(handler);
    auto shared = std::make_shared<Handler>(std::move(handler));
    Connection::DoneAll done = [shared](absl::StatusOr<std::vector<RedisReply>> r) {
      auto ex = asio::get_associated_executor(*shared);
      asio::post(ex, [shared, r = std::move(r)]() mutable { std::move(*shared)(std::move(r)); });
    };
    asio::dispatch(c->strand(), [c, commands = std::move(commands), deadline,
                                 done = std::move(done)]() mutable {
      c->SendAll(std::move(commands), deadline, std::move(done));
    });
  };
  absl::StatusOr<std::vector<RedisReply>> r =
      co_await asio::async_initiate<const asio::use_awaitable_t<>&,
                                    void(absl::StatusOr<std::vector<RedisReply>>)>(
          initiation, asio::use_awaitable, std::move(commands));
  if (!r.ok()) co_return NameServer(r.status());
  co_return r;
}

}  // namespace recharge
