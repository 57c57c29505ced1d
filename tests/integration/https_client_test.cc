// HttpsClient against a real local TLS server: the connection pool's bound
// (never more than max_connections open, calls past it wait their turn),
// a wait that outlasts its deadline (a definite failure, nothing sent),
// connection reuse, slots freed by closed or failed connections, and a
// client destroyed while calls wait.
#include "io/https_client.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "tests/integration/redis_server.h"
#include "tests/integration/tls_server.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using recharge::testing::TlsServer;

HttpsClient::Options PoolOptions(uint16_t port, const std::string& ca_file, size_t max_connections) {
  HttpsClient::Options options;
  options.endpoint = {"127.0.0.1", port};
  options.ca_file = ca_file;
  options.max_connections = max_connections;
  return options;
}

class HttpsClientPoolTest : public ::testing::Test {
 protected:
  // Two threads run the client's io_context, so waiters and the calls that
  // free their connections run on different threads.
  void SetUp() override {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  void TearDown() override {
    work_.reset();
    for (auto& t : threads_) t.join();  // every call has finished
  }

  std::unique_ptr<HttpsClient> Client(TlsServer& server, size_t max_connections) {
    absl::StatusOr<std::unique_ptr<HttpsClient>> client =
        HttpsClient::Create(PoolOptions(server.port(), server.ca_file(), max_connections));
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  // Starts a GET of `target` on a strand of its own (its own executor).
  std::future<HttpsResult> Start(HttpsClient& client, const std::string& target,
                                 std::chrono::steady_clock::duration timeout = 10s) {
    http::request<http::string_body> request(http::verb::get, target, 11);
    return asio::co_spawn(asio::make_strand(io_),
                          client.Send(std::move(request), std::chrono::steady_clock::now() + timeout,
                                      /*idempotent=*/true),
                          asio::use_future);
  }

  asio::io_context io_{2};
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
};

TEST_F(HttpsClientPoolTest, CallsPastMaxConnectionsWaitAndAllSucceed) {
  TlsServer server(50ms);
  auto client = Client(server, 2);
  std::vector<std::future<HttpsResult>> calls;
  for (int i = 0; i < 10; ++i) calls.push_back(Start(*client, "/call" + std::to_string(i)));
  for (int i = 0; i < 10; ++i) {
    HttpsResult r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.response.body(), "/call" + std::to_string(i));
  }
  const TlsServer::Stats stats = server.stats();
  EXPECT_EQ(stats.targets.size(), 10u);
  EXPECT_LE(stats.max_open, 2);
  EXPECT_LE(stats.accepted, 2);
}

TEST_F(HttpsClientPoolTest, WaiterPastItsDeadlineFailsWithNothingSent) {
  TlsServer server;
  auto client = Client(server, 1);
  std::future<HttpsResult> holder = Start(*client, "/hold");
  ASSERT_TRUE(server.WaitFor([](const auto& s) { return s.targets.size() == 1; }));

  HttpsResult waited = Start(*client, "/waiter", 200ms).get();
  EXPECT_EQ(waited.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(waited.status.message()),
              HasSubstr("no provider connection free within the deadline (max 1)"));
  EXPECT_FALSE(waited.maybe_sent);

  server.ReleaseHeld();
  EXPECT_TRUE(holder.get().status.ok());
  // The slot is free again, and the connection the waiter never got carries
  // the next call: the server saw no request from the waiter.
  HttpsResult next = Start(*client, "/next").get();
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(server.stats().targets, (std::vector<std::string>{"/hold", "/next"}));
  EXPECT_EQ(server.stats().accepted, 1);
}

TEST_F(HttpsClientPoolTest, SequentialCallsReuseConnections) {
  TlsServer server;
  auto client = Client(server, 3);
  for (int i = 0; i < 30; ++i) {
    HttpsResult r = Start(*client, "/seq").get();
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  EXPECT_EQ(server.stats().targets.size(), 30u);
  EXPECT_EQ(server.stats().accepted, 1);
}

TEST_F(HttpsClientPoolTest, BurstsReuseAtMostMaxConnections) {
  TlsServer server(5ms);
  auto client = Client(server, 3);
  for (int round = 0; round < 5; ++round) {
    std::vector<std::future<HttpsResult>> calls;
    for (int i = 0; i < 8; ++i) calls.push_back(Start(*client, "/burst"));
    for (auto& call : calls) ASSERT_TRUE(call.get().status.ok());
  }
  EXPECT_EQ(server.stats().targets.size(), 40u);
  EXPECT_LE(server.stats().accepted, 3);
  EXPECT_LE(server.stats().max_open, 3);
}

TEST_F(HttpsClientPoolTest, ConnectionClosedByServerFreesItsSlot) {
  TlsServer server;
  auto client = Client(server, 1);
  ASSERT_TRUE(Start(*client, "/close").get().status.ok());
  HttpsResult r = Start(*client, "/after", 2s).get();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(server.stats().accepted, 2);
}

TEST_F(HttpsClientPoolTest, FailedConnectFreesItsSlot) {
  auto made = HttpsClient::Create(PoolOptions(recharge::testing::FreePort(), "", 1));
  ASSERT_TRUE(made.ok());
  for (int i = 0; i < 3; ++i) {
    HttpsResult r = Start(**made, "/refused", 2s).get();
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
    EXPECT_THAT(std::string(r.status.message()), HasSubstr("connect"));
    EXPECT_FALSE(r.maybe_sent);
  }
}

TEST_F(HttpsClientPoolTest, DestroyingTheClientFailsWaitersAndLetsCallsInFlightFinish) {
  TlsServer server;
  auto client = Client(server, 1);
  std::future<HttpsResult> holder = Start(*client, "/hold");
  ASSERT_TRUE(server.WaitFor([](const auto& s) { return s.targets.size() == 1; }));
  // A waiter on a strand: once a handler posted after it has run, it waits.
  auto strand = asio::make_strand(io_);
  http::request<http::string_body> request(http::verb::get, "/waiter", 11);
  std::future<HttpsResult> waiter =
      asio::co_spawn(strand, client->Send(request, std::chrono::steady_clock::now() + 30s, true),
                     asio::use_future);
  asio::post(strand, asio::use_future).get();

  client.reset();
  HttpsResult failed = waiter.get();
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(failed.status.message()), HasSubstr("shut down"));
  EXPECT_FALSE(failed.maybe_sent);
  server.ReleaseHeld();
  EXPECT_TRUE(holder.get().status.ok());
  EXPECT_EQ(server.stats().targets, std::vector<std::string>{"/hold"});
}

TEST(HttpsClient, RefusesZeroMaxConnections) {
  auto made = HttpsClient::Create(PoolOptions(1, "", 0));
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(HttpsClientPoolTest, AWriteCutPartWayIsMaybeSent) {
  // A request far larger than the socket buffers: the server reads part of
  // it (its body limit is 1 MiB), then closes, and the write fails after
  // bytes went out. Those bytes may have reached the provider, so the call's
  // outcome is unknown, never a definite failure (a real charge was once
  // recorded as FAILED this way when the deadline cut a write).
  TlsServer server;
  auto client = Client(server, 1);
  http::request<http::string_body> request(http::verb::post, "/big", 11);
  request.body() = std::string(64 << 20, 'x');
  HttpsResult r = asio::co_spawn(asio::make_strand(io_),
                                 client->Send(std::move(request), std::chrono::steady_clock::now() + 10s,
                                              /*idempotent=*/false),
                                 asio::use_future)
                      .get();
  ASSERT_FALSE(r.status.ok());
  EXPECT_TRUE(r.maybe_sent) << r.status;
}

}  // namespace
}  // namespace recharge
