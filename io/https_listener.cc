#include "io/https_listener.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/core/demangle.hpp>
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <typeinfo>
#include <unordered_set>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "io/log.h"
#include "io/strings.h"
#include "io/token_bucket.h"

namespace recharge {
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kMaxHeaderBytes = 16 * 1024;
// How long a closing connection reads and drops what the client still sends
// (see Connection::Serve, step 4).
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kMaxLoggedPath = 256;

// A request the parser refused (answered 400/413/431), as opposed to a
// connection that ended (closed, reset, timed out, Stop()ped): nobody to answer.
bool IsBadRequest(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

HttpAnswer Refusal(int status, std::string_view error) {
  return HttpAnswer{.status = status, .body = StrCat(R"({"error":")", error, R"("})")};
}

std::string FormatMs(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::chrono::duration<double, std::milli>(d).count());
  return buf;
}

}  // namespace

// What the listener and its coroutines share: the options, the TLS context,
// the acceptor (on a strand of its own) and the set of open connections.
class HttpsListener::Core : public std::enable_shared_from_this<Core> {
 public:
  Core(asio::io_context& ioc, Options o, Handler h)
      : options(std::move(o)),
        handler(std::move(h)),
        ssl_context(ssl::context::tls_server),
        acceptor(asio::make_strand(ioc)),
        bucket(options.rate_per_second, options.rate_burst),
        ioc_(ioc) {}

  absl::Status LoadCertificate();
  absl::Status Listen();
  static asio::awaitable<void> Accept(std::shared_ptr<Core> self);
  void Stop();
  bool WaitDrained(Clock::time_point deadline);

  // Counts a new connection in; false when max_connections are open or the
  // listener is stopping. A connection counts itself out when destroyed.
  bool Admit(Connection* c);
  void Remove(Connection* c);
  bool stopping() const { return stopping_.load(); }

  // The handler's answer; 500 if it throws or answers a status that is not final.
  asio::awaitable<HttpAnswer> Call(const HttpRequestView& request);
  void LogRequest(std::string_view method, std::string_view path, int status,
                  std::string_view client, Clock::time_point started) const;

  const Options options;
  const Handler handler;
  ssl::context ssl_context;
  tcp::acceptor acceptor;  // used on its strand only, once listening
  uint16_t port = 0;
  TokenBucket bucket;  // unused when options.rate_per_second is 0 (no limit)

 private:
  asio::io_context& ioc_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable changed_;
  std::unordered_set<Connection*> open_ ABSL_GUARDED_BY(mu_);
  bool listening_ ABSL_GUARDED_BY(mu_) = true;
};

// One accepted connection, owned by its Serve coroutine (and for a moment by
// what Stop() posts to it). Its stream and `busy_` are used on its strand only.
class HttpsListener::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Core> core, tcp::socket socket, std::string client)
      : core_(std::move(core)), stream_(MakeStream(*core_, std::move(socket))),
        client_(std::move(client)) {}
  ~Connection() { core_->Remove(this); }

  static asio::awaitable<void> Serve(std::shared_ptr<Connection> self);

  // For Stop(): ends a wait for a request; a request in progress finishes.
  void CloseIfIdle() {
    if (!busy_) Tcp().cancel();
  }
  asio::any_io_executor executor() { return Tcp().get_executor(); }
  const std::string& client() const { return client_; }

 private:
  // TLS, or plain HTTP (Options::plaintext: a loopback metrics port).
  using TlsStream = beast::ssl_stream<beast::tcp_stream>;
  using Stream = std::variant<TlsStream, beast::tcp_stream>;
  static Stream MakeStream(Core& core, tcp::socket socket) {
    if (core.options.plaintext) {
      return Stream(std::in_place_type<beast::tcp_stream>, std::move(socket));
    }
    return Stream(std::in_place_type<TlsStream>, beast::tcp_stream(std::move(socket)),
                  core.ssl_context);
  }
  beast::tcp_stream& Tcp() {
    return std::visit([](auto& s) -> beast::tcp_stream& { return beast::get_lowest_layer(s); },
                      stream_);
  }
  // The requests of one connection, over either stream.
  template <typename AnyStream>
  static asio::awaitable<void> ServeRequests(std::shared_ptr<Connection> self, AnyStream& stream);

  const std::shared_ptr<Core> core_;
  Stream stream_;
  const std::string client_;
  bool busy_ = false;  // between a request read and its answer written
};

absl::Status HttpsListener::Core::LoadCertificate() {
  boost::system::error_code ec;
  ssl_context.set_options(ssl::context::default_workarounds);
  SSL_CTX_set_min_proto_version(ssl_context.native_handle(), TLS1_2_VERSION);
  // Idle keep-alive connections give their TLS record buffers (~34 KiB) back.
  SSL_CTX_set_mode(ssl_context.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  ssl_context.use_certificate_chain_file(options.cert_file, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        StrCat("cannot load certificate \"", options.cert_file, "\": ", ec.message()));
  }
  ssl_context.use_private_key_file(options.key_file, ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        StrCat("cannot load private key \"", options.key_file, "\": ", ec.message()));
  }
  if (SSL_CTX_check_private_key(ssl_context.native_handle()) != 1) {
    return absl::InvalidArgumentError(StrCat("private key \"", options.key_file,
                                             "\" does not match certificate \"",
                                             options.cert_file, "\""));
  }
  return absl::OkStatus();
}

absl::Status HttpsListener::Core::Listen() {
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(StrCat("host \"", options.host, "\" is not an IP address"));
  }
  const tcp::endpoint endpoint(address, options.port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) port = acceptor.local_endpoint(ec).port();
  if (ec) {
    return absl::UnavailableError(
        StrCat("cannot listen on ", options.host, ":", options.port, ": ", ec.message()));
  }
  return absl::OkStatus();
}

bool HttpsListener::Core::Admit(Connection* c) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.load() || open_.size() >= static_cast<size_t>(options.max_connections)) {
    return false;
  }
  open_.insert(c);
  return true;
}

void HttpsListener::Core::Remove(Connection* c) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_.erase(c);
  }
  changed_.notify_all();
}

void HttpsListener::Core::Stop() {
  std::vector<std::shared_ptr<Connection>> open;
  {
    // Under the lock with Admit(): a connection is either counted in here,
    // and told below, or refused.
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.exchange(true)) return;
    for (Connection* c : open_) {
      // (null if it is being destroyed, waiting for the lock in Remove())
      if (auto live = c->weak_from_this().lock()) open.push_back(std::move(live));
    }
  }
  asio::post(acceptor.get_executor(), [self = shared_from_this()] {
    boost::system::error_code ec;
    self->acceptor.close(ec);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->listening_ = false;
    }
    self->changed_.notify_all();
  });
  // A connection that was busy sees stopping() after its answer and closes.
  for (std::shared_ptr<Connection>& c : open) {
    asio::post(c->executor(), [c] { c->CloseIfIdle(); });
  }
}

bool HttpsListener::Core::WaitDrained(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_until(lock, deadline, [this] { return !listening_ && open_.empty(); });
}

asio::awaitable<void> HttpsListener::Core::Accept(std::shared_ptr<Core> self) {
  for (;;) {
    // Each connection on a strand of its own: Beast's stream and its timer
    // must not run handlers concurrently on a multi-threaded io_context.
    tcp::socket socket(asio::make_strand(self->ioc_));
    boost::system::error_code ec;
    co_await self->acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (self->stopping()) co_return;  // an accepted socket closes unserved
    if (ec) {  // e.g. out of file descriptors: pause rather than spin
      LogWarn("http_accept_failed",
              {{"listener", self->options.log_name}, {"error", ec.message()}});
      asio::steady_timer pause(self->acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);  // an answer is often two TLS records
    const tcp::endpoint peer = socket.remote_endpoint(ec);
    auto connection = std::make_shared<Connection>(
        self, std::move(socket), ec ? std::string("-") : peer.address().to_string());
    if (!self->Admit(connection.get())) {
      if (!self->stopping()) {
        LogWarn("http_connection_refused",
                {{"listener", self->options.log_name}, {"client", connection->client()},
                 {"max_connections", std::to_string(self->options.max_connections)}});
      }
      continue;  // `connection` goes, closing the socket
    }
    asio::co_spawn(connection->executor(), Connection::Serve(connection), asio::detached);
  }
}

asio::awaitable<HttpAnswer> HttpsListener::Core::Call(const HttpRequestView& request) {
  std::string error;
  try {
    HttpAnswer answer = co_await handler(request);
    if (answer.status >= 200 && answer.status <= 599) co_return answer;
    error = StrCat("answered status ", answer.status);
  } catch (const std::exception& e) {
    // The type only: what() may quote the input (a JSON parser's "last
    // read: ..."), and the body is never logged.
    error = StrCat("threw ", boost::core::demangle(typeid(e).name()));
  } catch (...) {
    error = "threw a non-std exception";
  }
  LogError("http_handler_failed", {{"listener", options.log_name},
                                   {"method", std::string(request.method)},
                                   {"path", std::string(request.path.substr(0, kMaxLoggedPath))},
                                   {"error", error}});
  co_return Refusal(500, "internal");
}

void HttpsListener::Core::LogRequest(std::string_view method, std::string_view path, int status,
                                     std::string_view client, Clock::time_point started) const {
  LogInfo("http_request", {{"listener", options.log_name},
                           {"method", std::string(method)},
                           {"path", std::string(path.substr(0, kMaxLoggedPath))},
                           {"status", std::to_string(status)},
                           {"client", std::string(client)},
                           {"ms", FormatMs(Clock::now() - started)}});
}

asio::awaitable<void> HttpsListener::Connection::Serve(std::shared_ptr<Connection> self) {
  if (self->core_->stopping()) co_return;  // Stop() came before this coroutine started
  if (auto* plain = std::get_if<beast::tcp_stream>(&self->stream_)) {
    co_await ServeRequests(self, *plain);
    co_return;
  }
  TlsStream& tls = std::get<TlsStream>(self->stream_);
  boost::system::error_code ec;
  self->Tcp().expires_after(self->core_->options.io_timeout);
  co_await tls.async_handshake(ssl::stream_base::server,
                               asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;  // a scanner, a client that gave up, a timeout: nobody to answer
  co_await ServeRequests(self, tls);
}

template <typename AnyStream>
asio::awaitable<void> HttpsListener::Connection::ServeRequests(std::shared_ptr<Connection> self,
                                                               AnyStream& stream) {
  Core& core = *self->core_;
  beast::tcp_stream& tcp_layer = beast::get_lowest_layer(stream);
  const auto timeout = core.options.io_timeout;
  boost::system::error_code ec;
  beast::flat_buffer buffer;
  bool keep_alive = true;
  while (keep_alive && !core.stopping()) {
    // 1. A whole request (head and body), or why not.
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(core.options.max_body_bytes);
    tcp_layer.expires_after(timeout);
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec && !IsBadRequest(ec)) co_return;
    self->busy_ = true;
    const Clock::time_point started = Clock::now();
    tcp_layer.expires_never();  // the handler's time is its own

    // 2. The answer: the listener's refusal, or the handler's.
    const http::request<http::string_body>& request = parser.get();
    HttpRequestView view;
    view.method = "-";
    view.path = "-";
    view.client = self->client_;
    if (!request.target().empty()) {  // the request line was read (for the log if refused)
      view.method = request.method_string();
      view.target = request.target();
      const size_t q = view.target.find('?');
      view.path = view.target.substr(0, q);
      if (q != std::string_view::npos) view.query = view.target.substr(q + 1);
    }
    if (!ec) {
      view.body = request.body();
      view.header = [&request](std::string_view name) -> std::optional<std::string_view> {
        auto it = request.find(name);
        if (it == request.end()) return std::nullopt;
        return it->value();
      };
    }
    HttpAnswer answer;
    bool limited = false;
    if (ec == http::error::body_limit) {
      answer = Refusal(413, "body_too_large");
    } else if (ec == http::error::header_limit) {
      answer = Refusal(431, "header_too_large");
    } else if (ec) {
      answer = Refusal(400, "bad_request");
    } else if (core.options.rate_per_second > 0 && !core.bucket.TryTake(Clock::now())) {
      limited = true;
      answer = Refusal(429, "rate_limited");
    } else {
      answer = co_await core.Call(view);
    }

    // 3. Written back. After a refused request the stream's position in the
    // client's bytes is unknown: the connection closes.
    keep_alive = !ec && request.keep_alive() && !core.stopping();
    http::response<http::string_body> response;
    response.version(11);
    response.result(static_cast<unsigned>(answer.status));
    response.set(http::field::content_type, answer.content_type);
    response.set(http::field::cache_control, "no-store");
    if (limited) response.set(http::field::retry_after, "1");
    response.keep_alive(keep_alive);
    response.body() = std::move(answer.body);
    response.prepare_payload();
    tcp_layer.expires_after(timeout);
    co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
    core.LogRequest(view.method, view.path, answer.status, self->client_, started);
    self->busy_ = false;
    if (ec) co_return;
  }

  // 4. Closing after an answer. The client may still be sending (the rest
  // of a refused body); closing a socket with unread bytes resets the
  // connection, which can destroy the answer before the client reads it.
  // So: stop sending, then read and drop until the client closes, for
  // kLingerTime at most.
  tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ec);
  tcp_layer.expires_after(kLingerTime);
  std::array<char, 4096> sink;
  while (!ec) {
    co_await tcp_layer.async_read_some(asio::buffer(sink),
                                       asio::redirect_error(asio::use_awaitable, ec));
  }
}

absl::StatusOr<std::unique_ptr<HttpsListener>> HttpsListener::Start(
    asio::io_context& ioc, Options options, Handler handler) {
  if (!handler) return absl::InvalidArgumentError("a handler is required");
  if (options.max_connections < 1) {
    return absl::InvalidArgumentError("max_connections must be at least 1");
  }
  if (options.io_timeout.count() <= 0) {
    return absl::InvalidArgumentError("io_timeout must be positive");
  }
  if (options.rate_per_second < 0 || (options.rate_per_second > 0 && options.rate_burst < 1)) {
    return absl::InvalidArgumentError(
        "rate_per_second must be 0 (no limit), or positive with rate_burst at least 1");
  }
  auto core = std::make_shared<Core>(ioc, std::move(options), std::move(handler));
  if (!core->options.plaintext) {
    if (absl::Status loaded = core->LoadCertificate(); !loaded.ok()) return loaded;
  }
  if (absl::Status listening = core->Listen(); !listening.ok()) return listening;
  asio::co_spawn(core->acceptor.get_executor(), Core::Accept(core), asio::detached);
  return std::unique_ptr<HttpsListener>(new HttpsListener(std::move(core)));
}

HttpsListener::~HttpsListener() { core_->Stop(); }

uint16_t HttpsListener::port() const { return core_->port; }

void HttpsListener::Stop() { core_->Stop(); }

bool HttpsListener::WaitDrained(Clock::time_point deadline) {
  return core_->WaitDrained(deadline);
}

}  // namespace recharge
