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

#include "io/strings.h"

namespace recharge {
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

struct HttpsClient::Connection {
  Connection(asio::any_io_executor ex, asio::ssl::context& ctx) : stream(ex, ctx) {}
  beast::ssl_stream<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
};

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

HttpsClient::HttpsClient(Options options)
    : options_(std::move(options)), ssl_context_(asio::ssl::context::tls_client) {}

HttpsClient::~HttpsClient() = default;

absl::StatusOr<std::unique_ptr<HttpsClient>> HttpsClient::Create(Options options) {
  std::unique_ptr<HttpsClient> client(new HttpsClient(std::move(options)));
  boost::system::error_code ec;
  client->ssl_context_.set_options(asio::ssl::context::default_workarounds |
                                   asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                                   asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  if (client->options_.ca_file.empty()) {
    client->ssl_context_.set_default_verify_paths(ec);
  } else {
    client->ssl_context_.load_verify_file(client->options_.ca_file, ec);
  }
  if (ec) {
    return absl::InvalidArgumentError(
        StrCat("cannot load CA file \"", client->options_.ca_file, "\": ", ec.message()));
  }
  client->ssl_context_.set_verify_mode(asio::ssl::verify_peer);
  return client;
}

namespace {

// An idle keep-alive connection the server has closed (or sent anything on,
// such as a TLS close_notify) must not carry a request: a failure on it would
// look ambiguous although nothing could have been processed.
bool StillOpen(int fd) {
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

std::unique_ptr<HttpsClient::Connection> HttpsClient::TakeIdle() {
  std::lock_guard<std::mutex> lock(mu_);
  while (!idle_.empty()) {
    std::unique_ptr<Connection> c = std::move(idle_.back());
    idle_.pop_back();
    if (StillOpen(beast::get_lowest_layer(c->stream).socket().native_handle())) return c;
  }
  return nullptr;
}

void HttpsClient::ReturnIdle(std::unique_ptr<Connection> connection) {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(connection));
}

asio::awaitable<absl::Status> HttpsClient::Connect(Connection& c,
                                                   std::chrono::steady_clock::time_point deadline) {
  boost::system::error_code ec;
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  auto results = co_await resolver.async_resolve(options_.endpoint.host,
                                                 std::to_string(options_.endpoint.port),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return absl::UnavailableError(StrCat("resolve: ", ec.message()));
  auto& layer = beast::get_lowest_layer(c.stream);
  layer.expires_at(deadline);
  co_await layer.async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
  if (ec == beast::error::timeout) co_return absl::DeadlineExceededError("connect timed out");
  if (ec) co_return absl::UnavailableError(StrCat("connect: ", ec.message()));
  layer.socket().set_option(tcp::no_delay(true));

  boost::system::error_code addr_ec;
  asio::ip::make_address(options_.endpoint.host, addr_ec);
  if (addr_ec) {  // a host name, not an IP literal: send SNI
    SSL_set_tlsext_host_name(c.stream.native_handle(), options_.endpoint.host.c_str());
  }
  c.stream.set_verify_callback(asio::ssl::host_name_verification(options_.endpoint.host));
  co_await c.stream.async_handshake(asio::ssl::stream_base::client,
                                    asio::redirect_error(asio::use_awaitable, ec));
  if (ec == beast::error::timeout) co_return absl::DeadlineExceededError("TLS handshake timed out");
  if (ec) co_return absl::UnavailableError(StrCat("TLS handshake: ", ec.message()));
  co_return absl::OkStatus();
}

asio::awaitable<HttpsResult> HttpsClient::Send(http::request<http::string_body> request,
                                               std::chrono::steady_clock::time_point deadline,
                                               bool idempotent) {
  request.version(11);
  request.set(http::field::host, options_.endpoint.host);
  request.keep_alive(true);
  request.prepare_payload();
  auto ex = co_await asio::this_coro::executor;

  // Once any attempt may have delivered the request, the outcome stays
  // "maybe sent" whatever later attempts do: a failed retry must never turn
  // an ambiguous call into a definite failure.
  bool maybe_sent = false;
  for (int attempt = 0;; ++attempt) {
    HttpsResult result;
    std::unique_ptr<Connection> c = TakeIdle();
    const bool reused = c != nullptr;
    if (!c) {
      // Each connection has its own strand: Beast's stream and its timer
      // must not run handlers concurrently on the multi-threaded io_context.
      c = std::make_unique<Connection>(asio::make_strand(ex), ssl_context_);
      absl::Status connected = co_await Connect(*c, deadline);
      if (!connected.ok()) {
        result.status = connected;
        result.maybe_sent = maybe_sent;
        co_return result;
      }
    }
    boost::system::error_code ec;
    beast::get_lowest_layer(c->stream).expires_at(deadline);
    co_await http::async_write(c->stream, request, asio::redirect_error(asio::use_awaitable, ec));
    const bool time_left = std::chrono::steady_clock::now() < deadline;
    if (ec) {
      // The request was not written whole, so the server cannot have acted
      // on it: a fresh connection may be tried once, whatever the request.
      if (reused && attempt == 0 && time_left && ec != beast::error::timeout) continue;
      result.maybe_sent = maybe_sent;
      result.status = !time_left || ec == beast::error::timeout
                          ? absl::DeadlineExceededError("request not sent before the deadline")
                          : absl::UnavailableError(StrCat("connection: ", ec.message()));
      co_return result;
    }
    maybe_sent = true;  // the whole request reached the connection
    http::response_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    co_await http::async_read(c->stream, c->buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      result.response = parser.release();
      const bool keep = result.response.keep_alive();
      result.status = absl::OkStatus();
      if (keep) ReturnIdle(std::move(c));
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
