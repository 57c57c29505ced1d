#include "io/https_client.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"

#include "io/async_semaphore.h"
#include "io/strings.h"

namespace recharge {
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

struct Connection {
  Connection(asio::any_io_executor ex, asio::ssl::context& ctx) : stream(ex, ctx) {}
  beast::ssl_stream<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
};

}  // namespace

absl::StatusOr<HttpsEndpoint> ParseHttpsUrl(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  if (!url.starts_with(kScheme)) {
    return absl::InvalidArgumentError(StrCat("must start with https://, got \"", url, "\""));
  }
  std::string_view rest = url.substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    return absl::InvalidArgumentError("must not have a path");
  }
  HttpsEndpoint out;
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos) {
    out.host = std::string(rest);
  } else {
    out.host = std::string(rest.substr(0, colon));
    std::string_view port = rest.substr(colon + 1);
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || ptr != port.data() + port.size() || value == 0 || value > 65535) {
      return absl::InvalidArgumentError(StrCat("bad port \"", port, "\""));
    }
    out.port = static_cast<uint16_t>(value);
  }
  if (out.host.empty()) return absl::InvalidArgumentError("has no host");
  return out;
}

namespace {

// An idle keep-alive connection the server has closed (or sent anything on,
// such as a TLS close_notify) must not carry a request: a failure on it would
// look ambiguous although nothing could have been processed.
bool StillOpen(Connection& c) {
  char byte;
  const int fd = beast::get_lowest_layer(c.stream).socket().native_handle();
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

// The connections to one endpoint: at most max_connections open, the idle
// ones kept for reuse.
//
// A call holds a slot of `slots_` from Acquire() until its Lease gives it
// back, with the connection for reuse or without it (closed first, so the
// server never sees more than max_connections at once). A call that finds
// every slot taken waits for one in arrival order, without a thread, until
// its deadline (AsyncSemaphore). Each open connection is either idle or held
// by the call in a slot.
class HttpsClient::Pool : public std::enable_shared_from_this<Pool> {
 public:
  explicit Pool(Options o)
      : options(std::move(o)),
        ssl_context(asio::ssl::context::tls_client),
        slots_(std::make_shared<AsyncSemaphore>(options.max_connections)) {}

  static asio::awaitable<HttpsResult> Send(std::shared_ptr<Pool> pool,
                                           http::request<http::string_body> request,
                                           std::chrono::steady_clock::time_point deadline,
                                           bool idempotent);
  // Fails the waiting calls and closes the idle connections; slots given back
  // later close their connection.
  void Close();

  const Options options;
  asio::ssl::context ssl_context;

 private:
  class Lease;

  // A slot, and an idle connection in it if there is one (else the caller
  // opens one); or why not.
  asio::awaitable<absl::Status> Acquire(Lease& lease,
                                        std::chrono::steady_clock::time_point deadline);
  // Gives a slot back: with its connection for reuse (`reusable`), else
  // closes the connection first.
  void Release(std::unique_ptr<Connection> connection, bool reusable);
  asio::awaitable<absl::Status> Connect(Connection& connection,
                                        std::chrono::steady_clock::time_point deadline);

  const std::shared_ptr<AsyncSemaphore> slots_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// A slot held by one call; given back exactly once, by Return() (the
// connection may carry another call) or by the destructor (it is closed).
class HttpsClient::Pool::Lease {
 public:
  explicit Lease(Pool& pool) : pool_(pool) {}
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease() {
    if (held) pool_.Release(std::move(connection), false);
  }
  void Return() {
    held = false;
    pool_.Release(std::move(connection), true);
  }

  bool held = false;
  std::unique_ptr<Connection> connection;  // null while held: open one

 private:
  Pool& pool_;
};

void HttpsClient::Pool::Release(std::unique_ptr<Connection> connection, bool reusable) {
  if (!reusable) connection.reset();
  if (connection) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) idle_.push_back(std::move(connection));
  }
  connection.reset();  // the client is closed: closed on return
  slots_->Release();
}

void HttpsClient::Pool::Close() {
  std::vector<std::unique_ptr<Connection>> idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    idle.swap(idle_);
  }
  slots_->Close();
}

asio::awaitable<absl::Status> HttpsClient::Pool::Acquire(
    Lease& lease, std::chrono::steady_clock::time_point deadline) {
  switch (co_await slots_->Acquire(deadline)) {
    case AsyncSemaphore::Wait::kGranted:
      break;
    case AsyncSemaphore::Wait::kTimedOut:
      co_return absl::DeadlineExceededError(StrCat(
          "no provider connection free within the deadline (max ", options.max_connections, ")"));
    case AsyncSemaphore::Wait::kQueueFull:
    case AsyncSemaphore::Wait::kClosed:
      co_return absl::UnavailableError(StrCat("HTTPS client for ", options.endpoint.host, ":",
                                              options.endpoint.port, " is shut down"));
  }
  lease.held = true;
  // An idle connection the server closed meanwhile is dropped (outside the
  // lock); the call then takes the next, or opens one.
  std::vector<std::unique_ptr<Connection>> stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!idle_.empty()) {
      std::unique_ptr<Connection> c = std::move(idle_.back());
      idle_.pop_back();
      if (StillOpen(*c)) {
        lease.connection = std::move(c);
        break;
      }
      stale.push_back(std::move(c));
    }
  }
  co_return absl::OkStatus();
}

HttpsClient::~HttpsClient() { pool_->Close(); }

const HttpsEndpoint& HttpsClient::endpoint() const { return pool_->options.endpoint; }

absl::StatusOr<std::unique_ptr<HttpsClient>> HttpsClient::Create(Options options) {
  if (options.max_connections == 0) {
    return absl::InvalidArgumentError("max_connections must be at least 1");
  }
  auto pool = std::make_shared<Pool>(std::move(options));
  boost::system::error_code ec;
  pool->ssl_context.set_options(asio::ssl::context::default_workarounds |
                                asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                                asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  if (pool->options.ca_file.empty()) {
    pool->ssl_context.set_default_verify_paths(ec);
  } else {
    pool->ssl_context.load_verify_file(pool->options.ca_file, ec);
  }
  if (ec) {
    return absl::InvalidArgumentError(
        StrCat("cannot load CA file \"", pool->options.ca_file, "\": ", ec.message()));
  }
  pool->ssl_context.set_verify_mode(asio::ssl::verify_peer);
  // An idle keep-alive connection gives its TLS record buffers back (~34 KiB
  // each): with thousands of connections open that is the difference
  // between bounded and large memory; an allocation per record is cheap.
  SSL_CTX_set_mode(pool->ssl_context.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(pool)));
}

asio::awaitable<absl::Status> HttpsClient::Pool::Connect(
    Connection& c, std::chrono::steady_clock::time_point deadline) {
  boost::system::error_code ec;
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  auto results = co_await resolver.async_resolve(options.endpoint.host,
                                                 std::to_string(options.endpoint.port),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return absl::UnavailableError(StrCat("resolve: ", ec.message()));
  auto& layer = beast::get_lowest_layer(c.stream);
  layer.expires_at(deadline);
  co_await layer.async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
  if (ec == beast::error::timeout) co_return absl::DeadlineExceededError("connect timed out");
  if (ec) co_return absl::UnavailableError(StrCat("connect: ", ec.message()));
  layer.socket().set_option(tcp::no_delay(true));

  boost::system::error_code addr_ec;
  asio::ip::make_address(options.endpoint.host, addr_ec);
  if (addr_ec) {  // a host name, not an IP literal: send SNI
    SSL_set_tlsext_host_name(c.stream.native_handle(), options.endpoint.host.c_str());
  }
  c.stream.set_verify_callback(asio::ssl::host_name_verification(options.endpoint.host));
  co_await c.stream.async_handshake(asio::ssl::stream_base::client,
                                    asio::redirect_error(asio::use_awaitable, ec));
  if (ec == beast::error::timeout) co_return absl::DeadlineExceededError("TLS handshake timed out");
  if (ec) co_return absl::UnavailableError(StrCat("TLS handshake: ", ec.message()));
  co_return absl::OkStatus();
}

asio::awaitable<HttpsResult> HttpsClient::Send(http::request<http::string_body> request,
                                               std::chrono::steady_clock::time_point deadline,
                                               bool idempotent) {
  return Pool::Send(pool_, std::move(request), deadline, idempotent);
}

asio::awaitable<HttpsResult> HttpsClient::Pool::Send(std::shared_ptr<Pool> pool,
                                                     http::request<http::string_body> request,
                                                     std::chrono::steady_clock::time_point deadline,
                                                     bool idempotent) {
  request.version(11);
  request.set(http::field::host, pool->options.endpoint.host);
  request.keep_alive(true);
  request.prepare_payload();
  auto ex = co_await asio::this_coro::executor;

  // A slot first: until one is free nothing is sent, so a call that gets
  // none is a definite failure.
  Lease lease(*pool);
  if (absl::Status got = co_await pool->Acquire(lease, deadline); !got.ok()) {
    HttpsResult result;
    result.status = std::move(got);
    result.maybe_sent = false;
    co_return result;
  }

  // Once any attempt may have delivered the request, the outcome stays
  // "maybe sent" whatever later attempts do: a failed retry must never turn
  // an ambiguous call into a definite failure. A retry keeps the slot and
  // opens a fresh connection in it.
  bool maybe_sent = false;
  for (int attempt = 0;; ++attempt) {
    HttpsResult result;
    const bool reused = lease.connection != nullptr;
    if (!reused) {
      // Each connection has its own strand: Beast's stream and its timer
      // must not run handlers concurrently on the multi-threaded io_context.
      lease.connection = std::make_unique<Connection>(asio::make_strand(ex), pool->ssl_context);
      absl::Status connected = co_await pool->Connect(*lease.connection, deadline);
      if (!connected.ok()) {
        result.status = connected;
        result.maybe_sent = maybe_sent;
        co_return result;  // the lease closes the connection and frees the slot
      }
    }
    Connection& c = *lease.connection;
    boost::system::error_code ec;
    beast::get_lowest_layer(c.stream).expires_at(deadline);
    const size_t written =
        co_await http::async_write(c.stream, request, asio::redirect_error(asio::use_awaitable, ec));
    const bool time_left = std::chrono::steady_clock::now() < deadline;
    if (ec) {
      // Nothing written: the server cannot have acted on it, and a fresh
      // connection may be tried once, whatever the request. Part of it
      // written (a write cut by the deadline or the peer): bytes may have
      // reached the server, and the outcome is not known, never definite.
      if (written > 0) maybe_sent = true;
      if (written == 0 && reused && attempt == 0 && time_left && ec != beast::error::timeout) {
        lease.connection.reset();
        continue;
      }
      result.maybe_sent = maybe_sent;
      result.status = !time_left || ec == beast::error::timeout
                          ? absl::DeadlineExceededError("request not sent before the deadline")
                          : absl::UnavailableError(StrCat("connection: ", ec.message()));
      co_return result;
    }
    maybe_sent = true;  // the whole request reached the connection
    http::response_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    co_await http::async_read(c.stream, c.buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      result.response = parser.release();
      result.status = absl::OkStatus();
      if (result.response.keep_alive()) lease.Return();
      co_return result;
    }
    // A keep-alive connection the server closed as we sent fails at once
    // with EOF or a reset and no answer: try once more on a fresh connection,
    // only when a repeat cannot charge twice and time remains. The outcome
    // stays "maybe sent" whatever the retry does.
    const bool stale_connection =
        ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
        ec == asio::ssl::error::stream_truncated;
    if (reused && idempotent && attempt == 0 && !parser.got_some() && stale_connection &&
        std::chrono::steady_clock::now() < deadline) {
      lease.connection.reset();
      continue;
    }
    result.maybe_sent = true;
    const bool timed_out = ec == beast::error::timeout || ec == asio::error::operation_aborted ||
                           std::chrono::steady_clock::now() >= deadline;
    result.status = timed_out ? absl::DeadlineExceededError("no response before the deadline")
                              : absl::UnavailableError(StrCat("connection: ", ec.message()));
    co_return result;
  }
}

}  // namespace recharge
