#include "sandbox/server.h"

#include <openssl/ssl.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <optional>
#include <thread>
#include <unordered_set>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "io/log.h"
#include "io/strings.h"

namespace recharge::sandbox {
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kMaxBodyBytes = 64 * 1024;
constexpr uint32_t kMaxHeaderBytes = 64 * 1024;
constexpr auto kIoTimeout = std::chrono::seconds(30);
constexpr auto kDrainTimeout = std::chrono::seconds(5);
constexpr size_t kMaxLogValue = 1000;

using Stream = ssl::stream<beast::tcp_stream>;
const boost::system::error_category& kHttpErrors =
    http::make_error_code(http::error::end_of_stream).category();

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool HoldsCardNumber(std::string_view digits) {
  for (size_t start = 0; start + 12 <= digits.size(); ++start) {
    for (size_t len = 12; len <= 19 && start + len <= digits.size(); ++len) {
      if (LuhnValid(digits.substr(start, len))) return true;
    }
  }
  return false;
}

// "Tue, 15 Nov 1994 08:12:31 GMT", recomputed once a second per thread.
std::string_view HttpDate() {
  thread_local std::time_t cached_at = 0;
  thread_local char buf[64];
  std::time_t now = std::time(nullptr);
  if (now != cached_at) {
    cached_at = now;
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  }
  return buf;
}

std::string FormatMs(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f",
                std::chrono::duration<double, std::milli>(d).count());
  return buf;
}

bool Supported(std::string_view method) {
  return method == "GET" || method == "POST" || method == "PUT" || method == "DELETE" ||
         method == "PATCH";
}

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

std::string SanitizeForLog(std::string_view text, const std::vector<std::string>& redact) {
  std::string s(text);
  for (const std::string& secret : redact) {
    if (secret.empty()) continue;
    for (size_t pos = s.find(secret); pos != std::string::npos; pos = s.find(secret, pos)) {
      s.replace(pos, secret.size(), "[REDACTED]");
      pos += 10;
    }
  }
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (IsDigit(s[i])) {
      size_t j = i;
      while (j < s.size() && IsDigit(s[j])) ++j;
      // A card number is 12-19 digits passing the Luhn check: mask any run
      // of digits holding one (other long numbers, e.g. in hex ids, stay).
      if (j - i >= 12 && HoldsCardNumber(std::string_view(s).substr(i, j - i))) {
        out += "[REDACTED]";
      } else {
        out.append(s, i, j - i);
      }
      i = j;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out.push_back(c >= 0x20 && c <= 0x7e ? s[i] : '?');
    ++i;
  }
  if (out.size() > kMaxLogValue) out.resize(kMaxLogValue);
  return out;
}

// ------------------------------------------------------------------------

class Session;

// One thread's io_context and its connections. (Members are destroyed
// bottom-up: the guard before the context, the context -- and any coroutine
// frame it still holds -- before the session set.)
struct Worker {
  std::unordered_set<Session*> sessions;  // touched on this worker's thread only
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
};

struct Server::Impl {
  Impl(const ServerOptions& o, const Router& r, Stats& s)
      : options(o), router(r), stats(s), ssl_ctx(ssl::context::tls_server) {}

  asio::awaitable<void> Accept();
  asio::awaitable<void> Serve(Worker& worker, tcp::socket socket);
  asio::awaitable<void> StopOnSignal();
  asio::awaitable<void> Drain();
  void LogRequest(std::string_view client, const Request& req, int status, const Response* resp,
                  Clock::time_point started) const;

  const ServerOptions& options;
  const Router& router;
  Stats& stats;
  ssl::context ssl_ctx;
  std::vector<std::unique_ptr<Worker>> workers;
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::signal_set> signals;
  std::atomic<int> live_sessions{0};
  std::atomic<bool> stopping{false};  // no new requests; close idle connections
  std::atomic<bool> aborting{false};  // abandon requests still sleeping
};

// One connection: its TLS stream and what shutdown needs to reach it.
class Session final : public RequestContext {
 public:
  enum class State { kReading, kBusy };

  Session(Server::Impl& server, Worker& worker, tcp::socket socket)
      : server_(server),
        worker_(worker),
        stream_(beast::tcp_stream(std::move(socket)), server.ssl_ctx),
        sleep_timer_(worker.ioc) {
    worker_.sessions.insert(this);
  }
  ~Session() override { worker_.sessions.erase(this); }

  asio::awaitable<bool> Sleep(double seconds) override {
    if (server_.aborting.load()) co_return false;
    sleep_timer_.expires_after(std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(seconds)));
    boost::system::error_code ec;
    co_await sleep_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_return !server_.aborting.load();
  }

  // Shutdown, on the worker's thread: close if waiting for a request.
  void OnStopping() {
    if (state_ == State::kReading) beast::get_lowest_layer(stream_).cancel();
  }
  // After the drain timeout: abandon whatever the connection is doing.
  void Abort() {
    sleep_timer_.cancel();
    beast::get_lowest_layer(stream_).cancel();
  }

  void Close() {
    boost::system::error_code ec;
    tcp::socket& s = beast::get_lowest_layer(stream_).socket();
    s.shutdown(tcp::socket::shutdown_both, ec);
    s.close(ec);
  }

  Stream& stream() { return stream_; }
  void set_state(State s) { state_ = s; }

 private:
  Server::Impl& server_;
  Worker& worker_;
  Stream stream_;
  asio::steady_timer sleep_timer_;
  State state_ = State::kReading;
};

void Server::Impl::LogRequest(std::string_view client, const Request& req, int status,
                              const Response* resp, Clock::time_point started) const {
  std::string key;
  if (resp != nullptr && resp->log_key) {
    key = *resp->log_key;
  } else {
    for (std::string_view h : {"Idempotency-Key", "PayPal-Request-Id", "X-Idempotency-Key"}) {
      std::optional<std::string_view> v = req.header(h);
      if (v && !v->empty()) {
        key = std::string(*v);
        break;
      }
    }
    for (std::string_view name : {"idempotency_key", "paypal_request_id"}) {
      if (!key.empty()) break;
      std::vector<std::string> values = QueryValues(req.query, name);
      if (!values.empty() && !values[0].empty()) key = values[0];
    }
    if (key.empty()) key = "-";
  }
  std::string msg;
  if (resp != nullptr && resp->drop) {
    msg = StrCat(client, " ", req.method, " ", req.path, " dropped (", resp->drop_reason,
                 ") idempotency_key=", key);
  } else {
    msg = StrCat(client, " ", req.method, " ", req.path, " ", status, " idempotency_key=", key,
                 resp != nullptr && resp->replayed ? " replayed" : "");
  }
  LogInfo("request", {{"msg", SanitizeForLog(msg, options.redact)},
                      {"ms", FormatMs(Clock::now() - started)}});
}

asio::awaitable<void> Server::Impl::Serve(Worker& worker, tcp::socket socket) {
  boost::system::error_code ec;
  tcp::endpoint peer = socket.remote_endpoint(ec);
  std::string client = ec ? std::string("-") : peer.address().to_string();
  {
    Session session(*this, worker, std::move(socket));
    Stream& stream = session.stream();
    beast::tcp_stream& tcp_layer = beast::get_lowest_layer(stream);
    auto dropped = [&client](std::string_view what, const boost::system::error_code& e) {
      LogInfo("connection_dropped",
              {{"client", client}, {"stage", std::string(what)}, {"error", e.message()}});
    };

    tcp_layer.expires_after(kIoTimeout);
    co_await stream.async_handshake(ssl::stream_base::server,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!stopping.load()) dropped("handshake", ec);
    } else {
      beast::flat_buffer buffer;
      std::string out;
      while (!stopping.load()) {
        // 1. The request head.
        session.set_state(Session::State::kReading);
        http::request_parser<http::string_body> parser;
        parser.header_limit(kMaxHeaderBytes);
        parser.body_limit(kMaxBodyBytes);  // a larger Content-Length fails the head: 413
        tcp_layer.expires_after(kIoTimeout);
        co_await http::async_read_header(stream, buffer, parser,
                                         asio::redirect_error(asio::use_awaitable, ec));
        session.set_state(Session::State::kBusy);
        const Clock::time_point started = Clock::now();
        std::optional<Response> early;  // answered before the body is read, then closed
        if (ec) {
          const bool parse_error = ec.category() == kHttpErrors;
          if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted) break;
          if (!parse_error) {
            const bool idle_close = buffer.size() == 0 && (ec == ssl::error::stream_truncated ||
                                                           ec == asio::error::eof ||
                                                           ec == asio::error::connection_reset);
            if (!idle_close) dropped("read", ec);
            break;
          }
          if (ec == http::error::header_limit) {
            early = ErrorResponse(431, "invalid_request_error", "request_header_fields_too_large",
                                  "Request header fields too large.");
          } else if (ec == http::error::body_limit) {
            early = ErrorResponse(413, "invalid_request_error", "request_too_large",
                                  "Request body too large.");
          } else if (ec == http::error::bad_transfer_encoding) {
            early = ErrorResponse(501, "invalid_request_error", "not_implemented",
                                  "Transfer-Encoding is not supported; send Content-Length.");
          } else if (ec == http::error::bad_content_length) {
            early = ErrorResponse(400, "invalid_request_error", "parameter_invalid",
                                  "Invalid Content-Length.");
          } else {
            early = ErrorResponse(400, "invalid_request_error", "bad_request",
                                  StrCat("Malformed HTTP request: ", ec.message(), "."));
          }
        }
        http::request<http::string_body>& msg = parser.get();
        Request req;
        req.method = "-";
        req.path = "-";
        req.client = client;
        req.context = &session;
        req.header = [&msg](std::string_view name) -> std::optional<std::string_view> {
          auto it = msg.find(name);
          if (it == msg.end()) return std::nullopt;
          return it->value();
        };
        if (!ec) {
          req.method = msg.method_string();
          req.target = msg.target();
          std::string_view path = req.target;
          path = path.substr(0, path.find('#'));
          size_t q = path.find('?');
          if (q != std::string_view::npos) {
            req.query = path.substr(q + 1);
            path = path.substr(0, q);
          }
          req.path = path.empty() ? std::string_view("/") : path;
        }

        // 2. Body framing rules (answered, then the connection closes).
        if (!early) {
          if (!Supported(req.method)) {
            early = ErrorResponse(501, "invalid_request_error", "not_implemented",
                                  StrCat("Unsupported method (", req.method, ")."));
          } else if (msg.find(http::field::transfer_encoding) != msg.end()) {
            early = ErrorResponse(501, "invalid_request_error", "not_implemented",
                                  "Transfer-Encoding is not supported; send Content-Length.");
          } else if (!parser.content_length()) {
            if (req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
              early = ErrorResponse(411, "invalid_request_error", "length_required",
                                    "Content-Length is required.");
            }
          } else if (*parser.content_length() > kMaxBodyBytes) {
            early = ErrorResponse(413, "invalid_request_error", "request_too_large",
                                  "Request body too large.");
          }
        }

        // 3. The body.
        if (!early && !parser.is_done()) {
          auto expect = msg.find(http::field::expect);
          if (expect != msg.end() && EqualsIgnoreCase(expect->value(), "100-continue") &&
              msg.version() >= 11) {
            static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
            co_await asio::async_write(stream, asio::buffer(kContinue.data(), kContinue.size()),
                                       asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
              dropped("write", ec);
              break;
            }
          }
          co_await http::async_read(stream, buffer, parser,
                                    asio::redirect_error(asio::use_awaitable, ec));
          if (ec) {
            dropped("read body", ec);
            break;
          }
        }
        tcp_layer.expires_never();
        req.body = msg.body();

        // 4. The answer.
        Response resp;
        if (early) {
          resp = *std::move(early);
        } else {
          Router::Match match = router.Find(req);
          if (match.handler == nullptr) {
            resp = std::move(match.error);
          } else {
            if (match.api_index >= 0) stats.CountRequest(match.api_index);
            try {
              resp = co_await (*match.handler)(req);
            } catch (const std::exception& e) {
              LogError("handler_error",
                       {{"request", SanitizeForLog(StrCat(req.method, " ", req.path), options.redact)},
                        {"error", SanitizeForLog(e.what(), options.redact)}});
              resp = InternalError();
            }
          }
        }
        if (resp.drop) {
          // The request is "lost": no response at all.
          session.Close();
          LogRequest(client, req, 0, &resp, started);
          break;
        }
        const bool close = early.has_value() || !msg.keep_alive() || stopping.load();
        out.clear();
        StrAppend(&out, "HTTP/1.1 ", resp.status, " ", http::obsolete_reason(http::int_to_status(static_cast<unsigned>(resp.status))),
                  "\r\nServer: psp-sandbox/1.0\r\nDate: ", HttpDate(),
                  "\r\nContent-Type: ", resp.content_type,
                  "\r\nContent-Length: ", resp.body.size(),
                  "\r\nCache-Control: no-store\r\n");
        for (const auto& [name, value] : resp.headers) StrAppend(&out, name, ": ", value, "\r\n");
        if (close) out += "Connection: close\r\n";
        out += "\r\n";
        out += resp.body;
        tcp_layer.expires_after(kIoTimeout);
        co_await asio::async_write(stream, asio::buffer(out),
                                   asio::redirect_error(asio::use_awaitable, ec));
        LogRequest(client, req, resp.status, early ? nullptr : &resp, started);
        if (ec) {
          dropped("write", ec);
          break;
        }
        if (close) break;
      }
    }
    session.Close();
  }
  live_sessions.fetch_sub(1);
}

asio::awaitable<void> Server::Impl::Accept() {
  size_t next = 0;
  while (true) {
    Worker& worker = *workers[next];
    next = (next + 1) % workers.size();
    tcp::socket socket(worker.ioc);
    boost::system::error_code ec;
    co_await acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (stopping.load()) break;
    if (ec) {
      LogWarn("accept_failed", {{"error", ec.message()}});
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::use_awaitable);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    live_sessions.fetch_add(1);
    asio::co_spawn(worker.ioc, Serve(worker, std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> Server::Impl::StopOnSignal() {
  boost::system::error_code ec;
  co_await signals->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_await Drain();
}

asio::awaitable<void> Server::Impl::Drain() {
  stopping.store(true);
  boost::system::error_code ec;
  acceptor->close(ec);
  for (auto& w : workers) {
    asio::post(w->ioc, [w = w.get()] {
      for (Session* s : w->sessions) s->OnStopping();
    });
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const Clock::time_point deadline = Clock::now() + kDrainTimeout;
  while (live_sessions.load() > 0 && Clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(10));
    co_await timer.async_wait(asio::use_awaitable);
  }
  if (live_sessions.load() > 0) {
    LogWarn("stop_abandoning_requests", {{"connections", std::to_string(live_sessions.load())}});
    aborting.store(true);
    for (auto& w : workers) {
      asio::post(w->ioc, [w = w.get()] {
        for (Session* s : w->sessions) s->Abort();
      });
    }
    const Clock::time_point hard = Clock::now() + kDrainTimeout;
    while (live_sessions.load() > 0 && Clock::now() < hard) {
      timer.expires_after(std::chrono::milliseconds(10));
      co_await timer.async_wait(asio::use_awaitable);
    }
  }
  for (auto& w : workers) {
    if (live_sessions.load() > 0) w->ioc.stop();  // last resort: a connection hangs
    w->guard.reset();
  }
}

// ------------------------------------------------------------------------

Server::Server(ServerOptions options, const Router& router, Stats& stats)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_, router, stats)) {
  const int n = options_.threads < 1 ? 1 : options_.threads;
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    w->guard.emplace(w->ioc.get_executor());
    impl_->workers.push_back(std::move(w));
  }
}

Server::~Server() = default;

absl::Status Server::LoadCertificates() {
  ssl::context& ctx = impl_->ssl_ctx;
  boost::system::error_code ec;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                  ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.use_certificate_chain_file(options_.cert_file, ec);
  if (ec) return absl::InvalidArgumentError(StrCat(options_.cert_file, ": ", ec.message()));
  ctx.use_private_key_file(options_.key_file, ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError(StrCat(options_.key_file, ": ", ec.message()));
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    return absl::InvalidArgumentError("the private key does not match the certificate");
  }
  SSL_CTX_set_alpn_select_cb(ctx.native_handle(), SelectAlpn, nullptr);
  return absl::OkStatus();
}

absl::Status Server::Listen() {
  asio::io_context& ioc = impl_->workers[0]->ioc;
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  asio::ip::address address = asio::ip::make_address(options_.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, options_.port);
  } else {
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(StrCat("cannot resolve ", options_.host, ": ", ec.message()));
    }
    endpoint = results.begin()->endpoint();
  }
  tcp::acceptor& acc = impl_->acceptor.emplace(ioc);
  if (acc.open(endpoint.protocol(), ec); ec) return absl::UnavailableError(ec.message());
  acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (acc.bind(endpoint, ec); ec) return absl::UnavailableError(ec.message());
  if (acc.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return absl::UnavailableError(ec.message());
  }
  port_ = acc.local_endpoint(ec).port();
  // From here on SIGTERM/SIGINT stop the server cleanly (once Run runs).
  impl_->signals.emplace(ioc, SIGTERM, SIGINT);
  return absl::OkStatus();
}

void Server::Run() {
  Worker& first = *impl_->workers[0];
  asio::co_spawn(first.ioc, impl_->Accept(), asio::detached);
  asio::co_spawn(first.ioc, impl_->StopOnSignal(), asio::detached);
  std::vector<std::thread> threads;
  for (size_t i = 1; i < impl_->workers.size(); ++i) {
    threads.emplace_back([w = impl_->workers[i].get()] { w->ioc.run(); });
  }
  first.ioc.run();
  for (std::thread& t : threads) t.join();
}

}  // namespace recharge::sandbox
