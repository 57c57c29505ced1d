// RedisClient against a real redis-server: replies, pipelining under
// concurrency, deadlines with a paused server, a stopped server, reconnects.
#include "io/redis_client.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "tests/integration/redis_server.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    client_ = std::make_unique<RedisClient>(io_.get_executor(),
                                            RedisClient::Options{"127.0.0.1", redis_.port(), 3});
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    client_.reset();
  }
  absl::StatusOr<RedisReply> Run(std::vector<std::string> args,
                                 std::chrono::milliseconds timeout = 2000ms) {
    return asio::co_spawn(io_, client_->Command(std::move(args), std::chrono::steady_clock::now() + timeout),
                          asio::use_future)
        .get();
  }

  testing::RedisServer redis_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
  std::unique_ptr<RedisClient> client_;
};

TEST_F(RedisClientTest, RepliesOfEveryType) {
  auto set = Run({"SET", "k", "v"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, RedisReply::Type::kStatus);
  EXPECT_EQ(set->str, "OK");
  auto get = Run({"GET", "k"});
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->type, RedisReply::Type::kString);
  EXPECT_EQ(get->str, "v");
  EXPECT_EQ(Run({"GET", "missing"})->type, RedisReply::Type::kNil);
  EXPECT_EQ(Run({"INCRBY", "n", "5"})->integer, 5);
  auto arr = Run({"MGET", "k", "missing"});
  ASSERT_EQ(arr->type, RedisReply::Type::kArray);
  ASSERT_EQ(arr->elements.size(), 2u);
  EXPECT_EQ(arr->elements[0].str, "v");
  auto err = Run({"EVALSHA", "0000000000000000000000000000000000000000", "0"});
  ASSERT_TRUE(err.ok());
  EXPECT_EQ(err->type, RedisReply::Type::kError);
  EXPECT_EQ(err->str.rfind("NOSCRIPT", 0), 0u);
  // Binary-safe arguments.
  ASSERT_TRUE(Run({"SET", "bin", std::string("a\0b", 3)}).ok());
  EXPECT_EQ(Run({"GET", "bin"})->str, std::string("a\0b", 3));
}

TEST_F(RedisClientTest, ConcurrentCommandsAreAllAnswered) {
  constexpr int kCalls = 2000;
  std::vector<std::future<absl::StatusOr<RedisReply>>> futures;
  for (int i = 0; i < kCalls; ++i) {
    futures.push_back(asio::co_spawn(
        io_, client_->Command({"INCR", "counter"}, std::chrono::steady_clock::now() + 5s),
        asio::use_future));
  }
  std::set<int64_t> seen;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    seen.insert(r->integer);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kCalls));  // every INCR saw a distinct value
  EXPECT_EQ(redis_.Run("GET counter"), std::to_string(kCalls));
  EXPECT_GE(client_->commands_sent(), static_cast<uint64_t>(kCalls));
}

TEST_F(RedisClientTest, PausedServerCostsNoMoreThanTheDeadline) {
  ASSERT_TRUE(Run({"PING"}).ok());
  redis_.Run("CLIENT PAUSE 1500 ALL");
  const auto start = std::chrono::steady_clock::now();
  auto r = Run({"GET", "k"}, 200ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  // Well under the pause: the caller was released at its deadline.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1400ms);
}

TEST_F(RedisClientTest, StoppedServerIsUnavailableAndRestartReconnects) {
  ASSERT_TRUE(Run({"SET", "a", "1"}).ok());
  const uint16_t port = redis_.port();
  redis_.Stop();
  for (int i = 0; i < 3; ++i) {  // each connection notices
    auto r = Run({"GET", "a"}, 500ms);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().code() == absl::StatusCode::kUnavailable ||
                r.status().code() == absl::StatusCode::kDeadlineExceeded)
        << r.status();
  }
  testing::RedisServer again(port);
  bool ok = false;
  for (int i = 0; i < 6 && !ok; ++i) ok = Run({"PING"}, 500ms).ok();
  EXPECT_TRUE(ok);
}

TEST(RedisAddress, ParsesHostAndPort) {
  auto o = ParseRedisAddress("127.0.0.1:6390");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->host, "127.0.0.1");
  EXPECT_EQ(o->port, 6390);
  EXPECT_FALSE(ParseRedisAddress("localhost").ok());
  EXPECT_FALSE(ParseRedisAddress("h:0").ok());
  EXPECT_FALSE(ParseRedisAddress("h:x").ok());
}

}  // namespace
}  // namespace recharge
