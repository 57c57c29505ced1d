// HttpsListener over real TLS, with the dev certificate (made by
// scripts/make-dev-certs.sh, as the e2e stack does) and the project's own
// HttpsClient as the client: what reaches the handler, the listener's own
// answers (413, 429, 400, 500), the connection bound, Stop() (requests in
// progress finish, idle connections close, new ones are refused), start-up
// errors, and an io_context stopped with a request in flight (for ASan).
#include "io/https_listener.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "io/https_client.h"
#include "io/strings.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

// Holds the handlers that Pass() it until Open(), without blocking a thread,
// and counts the arrivals so that a test can wait for them.
class Gate {
 public:
  asio::awaitable<void> Pass() {
    asio::any_io_executor executor = co_await asio::this_coro::executor;
    auto timer = std::make_shared<asio::steady_timer>(executor, Clock::time_point::max());
    bool wait = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wait = !open_;
      if (wait) timers_.push_back(timer);
      ++arrived_;
    }
    changed_.notify_all();
    // Open() cancels through the timer's executor (this coroutine's strand),
    // so the cancel cannot run before the wait has begun.
    boost::system::error_code ec;
    if (wait) co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  void Open() {
    std::vector<std::weak_ptr<asio::steady_timer>> timers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
      timers.swap(timers_);
    }
    for (auto& weak : timers) {
      if (auto timer = weak.lock()) asio::post(timer->get_executor(), [timer] { timer->cancel(); });
    }
  }

  // True once `n` handlers have arrived; false if not within 10 s.
  bool WaitArrived(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, 10s, [&] { return arrived_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool open_ = false;
  int arrived_ = 0;
  std::vector<std::weak_ptr<asio::steady_timer>> timers_;  // owned by the waiting frames
};

// What the handler saw of the last request.
struct Seen {
  std::atomic<int> calls{0};
  std::mutex mu;
  std::string method, target, path, query, body, client;
  std::optional<std::string> signature, missing;
};

class HttpsListenerTest : public ::testing::Test {
 protected:
  // One set of dev certificates for the suite, in a directory of its own.
  static void SetUpTestSuite() {
    char dir[] = "/tmp/https_listener_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    certs_ = dir;
    const std::string command =
        StrCat("'", RECHARGE_SOURCE_DIR, "/scripts/make-dev-certs.sh' ", certs_, " >/dev/null");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(certs_); }

  // Two threads run the listener's and the clients' io_context, so
  // connections run on different threads.
  void SetUp() override {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  void TearDown() override {
    listener_.reset();
    work_.reset();
    for (auto& t : threads_) t.join();
  }

  static HttpsListener::Options Options() {
    HttpsListener::Options options;
    options.cert_file = certs_ + "/server.pem";
    options.key_file = certs_ + "/server.key";
    return options;
  }

  // A handler that records what it saw in seen_, passes gate_ when the path
  // is "/held", throws on "/throw", and answers 202 {"ok":true}.
  HttpsListener::Handler Recorder() {
    return [this](const HttpRequestView& r) -> asio::awaitable<HttpAnswer> {
      ++seen_.calls;
      {
        std::lock_guard<std::mutex> lock(seen_.mu);
        seen_.method = r.method;
        seen_.target = r.target;
        seen_.path = r.path;
        seen_.query = r.query;
        seen_.body = r.body;
        seen_.client = r.client;
        seen_.signature = r.header("sandbox-signature");
        seen_.missing = r.header("X-Missing");
      }
      if (r.path == "/held") co_await gate_.Pass();
      if (r.path == "/throw") throw std::runtime_error("boom BODYSECRET");
      co_return HttpAnswer{.status = 202, .body = R"({"ok":true})"};
    };
  }

  void Listen(HttpsListener::Options options) {
    auto started = HttpsListener::Start(io_, std::move(options), Recorder());
    ASSERT_TRUE(started.ok()) << started.status();
    listener_ = *std::move(started);
  }

  std::unique_ptr<HttpsClient> Client(size_t max_connections = 1) {
    HttpsClient::Options options;
    options.endpoint = {"127.0.0.1", listener_->port()};
    options.ca_file = certs_ + "/ca.pem";
    options.max_connections = max_connections;
    auto client = HttpsClient::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  static http::request<http::string_body> Post(std::string target, std::string body) {
    http::request<http::string_body> request(http::verb::post, target, 11);
    request.set(http::field::content_type, "application/json");
    request.body() = std::move(body);
    return request;
  }

  std::future<HttpsResult> Start(HttpsClient& client, http::request<http::string_body> request) {
    return asio::co_spawn(asio::make_strand(io_),
                          client.Send(std::move(request), Clock::now() + 10s, /*idempotent=*/false),
                          asio::use_future);
  }
  HttpsResult Call(HttpsClient& client, http::request<http::string_body> request) {
    return Start(client, std::move(request)).get();
  }

  static inline std::string certs_;  // the dev certificates' directory
  asio::io_context io_{2};
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
  Seen seen_;
  Gate gate_;
  std::unique_ptr<HttpsListener> listener_;
};

TEST_F(HttpsListenerTest, PostReachesTheHandlerWithPathQueryBodyAndHeaders) {
  Listen(Options());
  auto client = Client();
  http::request<http::string_body> request =
      Post("/webhooks/card?attempt=2&x=y", R"({"id":"evt_1"})");
  request.set("Sandbox-Signature", "t=1,v1=abc");
  HttpsResult r = Call(*client, std::move(request));
  ASSERT_TRUE(r.status.ok()) << r.status;

  EXPECT_EQ(r.response.result_int(), 202u);
  EXPECT_EQ(r.response.body(), R"({"ok":true})");
  EXPECT_EQ(r.response[http::field::content_type], "application/json");
  EXPECT_EQ(r.response[http::field::content_length], "11");
  EXPECT_EQ(r.response[http::field::cache_control], "no-store");
  EXPECT_TRUE(r.response.keep_alive());
  ASSERT_EQ(seen_.calls, 1);
  std::lock_guard<std::mutex> lock(seen_.mu);
  EXPECT_EQ(seen_.method, "POST");
  EXPECT_EQ(seen_.target, "/webhooks/card?attempt=2&x=y");
  EXPECT_EQ(seen_.path, "/webhooks/card");
  EXPECT_EQ(seen_.query, "attempt=2&x=y");
  EXPECT_EQ(seen_.body, R"({"id":"evt_1"})");
  EXPECT_EQ(seen_.client, "127.0.0.1");
  EXPECT_EQ(seen_.signature, "t=1,v1=abc");  // looked up in lower case
  EXPECT_EQ(seen_.missing, std::nullopt);
}

TEST_F(HttpsListenerTest, KeepAliveConnectionCarriesSeveralRequests) {
  Listen(Options());
  auto client = Client();
  for (int i = 0; i < 3; ++i) {
    HttpsResult r = Call(*client, Post("/n", std::to_string(i)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.response.result_int(), 202u);
  }
  EXPECT_EQ(seen_.calls, 3);
  std::lock_guard<std::mutex> lock(seen_.mu);
  EXPECT_EQ(seen_.body, "2");
  EXPECT_EQ(seen_.query, "");
}

TEST_F(HttpsListenerTest, BodyOverTheLimitIs413AndNeverReachesTheHandler) {
  HttpsListener::Options options = Options();
  options.max_body_bytes = 1024;
  Listen(options);
  auto client = Client();
  HttpsResult at_limit = Call(*client, Post("/at-limit", std::string(1024, 'a')));
  ASSERT_TRUE(at_limit.status.ok()) << at_limit.status;
  EXPECT_EQ(at_limit.response.result_int(), 202u);

  HttpsResult over = Call(*client, Post("/over", std::string(1025, 'a')));
  ASSERT_TRUE(over.status.ok()) << over.status;
  EXPECT_EQ(over.response.result_int(), 413u);
  EXPECT_EQ(over.response.body(), R"({"error":"body_too_large"})");
  EXPECT_FALSE(over.response.keep_alive());

  // Far over: the answer still arrives although the client is still
  // sending when the listener answers and closes.
  HttpsResult far_over = Call(*client, Post("/far-over", std::string(4 << 20, 'a')));
  ASSERT_TRUE(far_over.status.ok()) << far_over.status;
  EXPECT_EQ(far_over.response.result_int(), 413u);
  EXPECT_EQ(seen_.calls, 1);
}

TEST_F(HttpsListenerTest, RequestsPastTheBurstAre429WithRetryAfter) {
  HttpsListener::Options options = Options();
  options.rate_per_second = 0.001;  // no refill within the test
  options.rate_burst = 2;
  Listen(options);
  auto client = Client();
  std::vector<unsigned> statuses;
  HttpsResult last;
  for (int i = 0; i < 3; ++i) {
    last = Call(*client, Post("/rated", "{}"));
    ASSERT_TRUE(last.status.ok()) << last.status;
    statuses.push_back(last.response.result_int());
  }
  EXPECT_EQ(statuses, (std::vector<unsigned>{202, 202, 429}));
  EXPECT_EQ(last.response[http::field::retry_after], "1");
  EXPECT_EQ(last.response.body(), R"({"error":"rate_limited"})");
  EXPECT_EQ(last.response[http::field::cache_control], "no-store");
  EXPECT_EQ(seen_.calls, 2);
}

TEST_F(HttpsListenerTest, HandlerThatThrowsIs500AndTheLogHoldsNoBodyQueryOrHeader) {
  Listen(Options());
  auto client = Client();  // one connection: the second request follows the first
  ::testing::internal::CaptureStderr();
  http::request<http::string_body> request = Post("/throw?token=QUERYSECRET", "BODYSECRET");
  request.set("Sandbox-Signature", "SIGSECRET");
  HttpsResult thrown = Call(*client, std::move(request));
  // The connection serves its requests in turn: once this one is answered,
  // the first one's log line is written.
  HttpsResult next = Call(*client, Post("/next", "{}"));
  const std::string log = ::testing::internal::GetCapturedStderr();

  ASSERT_TRUE(thrown.status.ok()) << thrown.status;
  EXPECT_EQ(thrown.response.result_int(), 500u);
  EXPECT_EQ(thrown.response.body(), R"({"error":"internal"})");
  EXPECT_EQ(thrown.response[http::field::content_type], "application/json");
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(next.response.result_int(), 202u);
  EXPECT_THAT(log, HasSubstr(R"("event":"http_handler_failed")"));
  EXPECT_THAT(log, HasSubstr(R"("error":"threw std::runtime_error")"));
  EXPECT_THAT(log, HasSubstr(
                       R"("method":"POST","path":"/throw","status":"500","client":"127.0.0.1")"));
  EXPECT_THAT(log, HasSubstr(R"("listener":"webhooks")"));
  EXPECT_THAT(log, Not(HasSubstr("SECRET")));
}

TEST_F(HttpsListenerTest, MalformedRequestIs400AndNeverReachesTheHandler) {
  Listen(Options());
  auto client = Client();
  HttpsResult r = Call(*client, Post("/a target with spaces", "{}"));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.response.result_int(), 400u);
  EXPECT_EQ(r.response.body(), R"({"error":"bad_request"})");
  EXPECT_FALSE(r.response.keep_alive());
  EXPECT_EQ(seen_.calls, 0);
}

TEST_F(HttpsListenerTest, ConnectionPastMaxConnectionsIsClosedUnserved) {
  HttpsListener::Options options = Options();
  options.max_connections = 1;
  Listen(options);
  auto holder = Client();
  std::future<HttpsResult> held = Start(*holder, Post("/held", "{}"));
  ASSERT_TRUE(gate_.WaitArrived(1));

  auto other = Client();
  HttpsResult refused = Call(*other, Post("/other", "{}"));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kUnavailable) << refused.status;
  EXPECT_EQ(seen_.calls, 1);

  gate_.Open();
  HttpsResult r = held.get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.response.result_int(), 202u);
}

TEST_F(HttpsListenerTest, StopFinishesRequestsInProgressClosesIdleConnectionsAndRefusesNewOnes) {
  HttpsListener::Options options = Options();
  options.io_timeout = 60s;  // longer than the waits below: idle connections close by Stop()
  Listen(options);
  auto idle = Client();
  ASSERT_TRUE(Call(*idle, Post("/idle", "{}")).status.ok());  // its connection stays open
  auto busy = Client();
  std::future<HttpsResult> held = Start(*busy, Post("/held", "{}"));
  ASSERT_TRUE(gate_.WaitArrived(1));

  listener_->Stop();
  listener_->Stop();  // idempotent
  // The held request cannot finish before the gate opens.
  EXPECT_FALSE(listener_->WaitDrained(Clock::now() + 100ms));
  gate_.Open();
  HttpsResult r = held.get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.response.result_int(), 202u);
  EXPECT_FALSE(r.response.keep_alive());
  ASSERT_TRUE(listener_->WaitDrained(Clock::now() + 10s));

  auto late = Client();
  HttpsResult refused = Call(*late, Post("/late", "{}"));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kUnavailable) << refused.status;
  EXPECT_THAT(std::string(refused.status.message()), HasSubstr("connect"));
  EXPECT_FALSE(refused.maybe_sent);
  EXPECT_EQ(seen_.calls, 2);
}

TEST_F(HttpsListenerTest, StartErrorsNameTheFileOrTheAddress) {
  HttpsListener::Options no_cert = Options();
  no_cert.cert_file = certs_ + "/missing.pem";
  auto failed = HttpsListener::Start(io_, no_cert, Recorder());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr(no_cert.cert_file));

  HttpsListener::Options wrong_key = Options();
  wrong_key.key_file = certs_ + "/ca.key";
  failed = HttpsListener::Start(io_, wrong_key, Recorder());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr(wrong_key.key_file));

  Listen(Options());
  HttpsListener::Options taken = Options();
  taken.port = listener_->port();
  failed = HttpsListener::Start(io_, taken, Recorder());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(failed.status().message()),
              HasSubstr(StrCat("127.0.0.1:", listener_->port())));
}

// The gateway's shutdown may stop the io_context while a handler still runs:
// destroying the listener, then the io_context, must free everything once
// (ASan, LeakSanitizer) and close the client's connection.
TEST_F(HttpsListenerTest, IoContextStoppedWithARequestInFlightLeavesNothingBehind) {
  std::future<HttpsResult> held;
  {
    asio::io_context server_io{1};
    auto guard = asio::make_work_guard(server_io);
    std::thread server_thread([&] { server_io.run(); });
    auto started = HttpsListener::Start(server_io, Options(), Recorder());
    ASSERT_TRUE(started.ok()) << started.status();
    std::unique_ptr<HttpsListener> listener = *std::move(started);
    HttpsClient::Options client_options;
    client_options.endpoint = {"127.0.0.1", listener->port()};
    client_options.ca_file = certs_ + "/ca.pem";
    auto client = HttpsClient::Create(client_options);
    ASSERT_TRUE(client.ok());
    held = Start(**client, Post("/held", "{}"));
    ASSERT_TRUE(gate_.WaitArrived(1));

    server_io.stop();
    server_thread.join();
    listener.reset();  // Stop() posts to an io_context that will never run it
  }  // the io_context goes, and with it the connection's coroutine and socket
  HttpsResult r = held.get();
  EXPECT_FALSE(r.status.ok());
  EXPECT_TRUE(r.maybe_sent);
}

}  // namespace
}  // namespace recharge

namespace recharge {
namespace {

// Plain HTTP (the loopback metrics port): no certificate needed, requests
// answered like over TLS, and a TLS client gets nothing.
TEST_F(HttpsListenerTest, PlaintextListenerServesPlainHttp) {
  using tcp = asio::ip::tcp;
  HttpsListener::Options options;
  options.plaintext = true;  // no cert_file / key_file
  Listen(std::move(options));
  asio::io_context client_io;
  tcp::socket socket(client_io);
  socket.connect({asio::ip::make_address("127.0.0.1"), listener_->port()});
  const std::string request =
      "GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  asio::write(socket, asio::buffer(request));
  std::string response;
  boost::system::error_code ec;
  std::array<char, 1024> chunk;
  for (;;) {
    const size_t n = socket.read_some(asio::buffer(chunk), ec);
    response.append(chunk.data(), n);
    if (ec) break;
  }
  EXPECT_TRUE(response.starts_with("HTTP/1.1 202")) << response;
  EXPECT_NE(response.find(R"({"ok":true})"), std::string::npos) << response;
  EXPECT_EQ(seen_.calls.load(), 1);
  std::lock_guard<std::mutex> lock(seen_.mu);
  EXPECT_EQ(seen_.path, "/metrics");
  EXPECT_EQ(seen_.query, "x=1");
  EXPECT_EQ(seen_.method, "GET");
}

}  // namespace
}  // namespace recharge
