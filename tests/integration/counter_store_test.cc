// RedisCounterStore against a real redis-server: window arithmetic, atomicity
// under concurrency, one round trip per request, NOSCRIPT recovery, flags and
// block lists.
#include "fraud/counter_store.h"

#include <random>

#include "fraud/backtest.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "tests/integration/redis_server.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;
using Kind = CounterUpdate::Kind;

// The calls of one Redis command so far, from INFO commandstats.
int64_t CommandCalls(testing::RedisServer& redis, const std::string& command) {
  const std::string info = redis.Run("INFO commandstats");
  const std::string tag = "cmdstat_" + command + ":calls=";
  const size_t at = info.find(tag);
  if (at == std::string::npos) return 0;
  return std::stoll(info.substr(at + tag.size()));
}

class CounterStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    client_ = std::make_unique<RedisClient>(io_.get_executor(),
                                            RedisClient::Options{"127.0.0.1", redis_.port(), 2});
    store_ = std::make_unique<RedisCounterStore>(*client_, "t", 2000ms);
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    store_.reset();
    client_.reset();
  }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return asio::co_spawn(io_, std::move(a), asio::use_future).get();
  }
  CounterUpdate Counter(Kind kind, const std::string& name, std::chrono::milliseconds window,
                        int buckets, std::string value = "") {
    CounterUpdate c;
    c.kind = kind;
    c.key = store_->CounterKey("seller_id", "s1", name);
    c.window = window;
    c.buckets = buckets;
    c.value = std::move(value);
    return c;
  }

  testing::RedisServer redis_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
  std::unique_ptr<RedisClient> client_;
  std::unique_ptr<RedisCounterStore> store_;
};

TEST_F(CounterStoreTest, CountSumAndDistinctIncludeTheCurrentRequest) {
  const auto now = std::chrono::system_clock::time_point(std::chrono::hours(500000));
  std::vector<CounterUpdate> counters = {
      Counter(Kind::kCount, "n", 1h, 12), Counter(Kind::kSum, "usd", 1h, 12, "0.99"),
      Counter(Kind::kDistinct, "users", 1h, 12, "u1")};
  auto first = Run(store_->UpdateAndRead(counters, {}, now));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->values, (std::vector<double>{1, 0.99, 1}));
  counters[2].value = "u2";
  auto second = Run(store_->UpdateAndRead(counters, {}, now + 1min));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->values[0], 2);
  EXPECT_DOUBLE_EQ(second->values[1], 1.98);
  EXPECT_EQ(second->values[2], 2);
  counters[2].value = "u1";  // seen already: distinct stays 2
  EXPECT_EQ(Run(store_->UpdateAndRead(counters, {}, now + 2min))->values[2], 2);
}

TEST_F(CounterStoreTest, AGatedCounterIsUpdatedOnlyWhenTheEarlierCounterCompares) {
  // gate "1 > 1": update `shared` only once `users` (counter 1 of the call,
  // this request included) is above 1, in the same round trip.
  const auto now = std::chrono::system_clock::time_point(std::chrono::hours(450000));
  CounterUpdate users = Counter(Kind::kDistinct, "card_users", 1h, 12, "u1");
  CounterUpdate shared = Counter(Kind::kCount, "shared", 1h, 12, "1");
  shared.gate = "1 > 1.000000";
  CounterUpdate first = Counter(Kind::kCount, "first", 1h, 12, "1");
  first.gate = "1 <= 1.000000";
  const int64_t evals_before = CommandCalls(redis_, "evalsha");
  auto a = Run(store_->UpdateAndRead({users, shared, first}, {}, now));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->values, (std::vector<double>{1, 0, 1}));  // one account: not shared, first
  users.value = "u1";
  auto b = Run(store_->UpdateAndRead({users, shared, first}, {}, now + 1s));
  EXPECT_EQ(b->values, (std::vector<double>{1, 0, 2}));
  users.value = "u2";  // a second account on the card: the gate opens
  auto c = Run(store_->UpdateAndRead({users, shared, first}, {}, now + 2s));
  EXPECT_EQ(c->values, (std::vector<double>{2, 1, 2}));
  users.value = "u3";
  auto d = Run(store_->UpdateAndRead({users, shared, first}, {}, now + 3s));
  EXPECT_EQ(d->values, (std::vector<double>{3, 2, 2}));
  // Still one round trip per request.
  EXPECT_EQ(CommandCalls(redis_, "evalsha") - evals_before, 4 + (evals_before == 0 ? 1 : 0));
  // Every comparison the script knows.
  for (const auto& [gate, open] : std::vector<std::pair<std::string, bool>>{
           {"1 >= 3", true}, {"1 < 3", false}, {"1 == 3", true}, {"1 != 3", false}, {"1 > 2.5", true}}) {
    CounterUpdate g = Counter(Kind::kCount, "g" + std::to_string(open) + gate.substr(2, 2), 1h, 12, "1");
    g.gate = gate;
    users.value = "u3";
    auto r = Run(store_->UpdateAndRead({users, g}, {}, now + 4s));
    ASSERT_TRUE(r.ok()) << gate << ": " << r.status();
    EXPECT_EQ(r->values[1], open ? 1 : 0) << gate;
  }
}

TEST_F(CounterStoreTest, InstrumentsLinkTheSellersThatShareThemWithinTheWindow) {
  const auto t0 = std::chrono::system_clock::time_point(std::chrono::hours(460000));
  auto use = [&](const std::string& seller, std::vector<LinkUpdate::Instrument> instruments,
                 std::chrono::system_clock::time_point at) {
    LinkUpdate links{seller, std::move(instruments), 1h};
    auto r = Run(store_->UpdateAndRead({}, {}, at, links));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->linked : std::vector<std::vector<std::string>>{};
  };
  // s1 uses card c1 and device d1: nobody else yet.
  EXPECT_EQ(use("s1", {{"card_fingerprint", "c1"}, {"device_id", "d1"}}, t0),
            (std::vector<std::vector<std::string>>{{}, {}}));
  // s2 uses c1 (shared with s1) and its own device.
  EXPECT_EQ(use("s2", {{"card_fingerprint", "c1"}, {"device_id", "d2"}}, t0 + 1s),
            (std::vector<std::vector<std::string>>{{"s1"}, {}}));
  // s3 uses d1 and d2: linked to s1 by one device and to s2 by the other.
  EXPECT_EQ(use("s3", {{"device_id", "d1"}, {"device_id", "d2"}}, t0 + 2s),
            (std::vector<std::vector<std::string>>{{"s1"}, {"s2"}}));
  // GetSellerRisk's view, both ways: s1 is linked to s2 (card) and s3 (device).
  auto linked = Run(store_->LinkedSellers("s1", 1h, t0 + 3s));
  ASSERT_TRUE(linked.ok()) << linked.status();
  std::map<std::string, LinkedSeller> by_id;
  for (const LinkedSeller& l : *linked) by_id[l.seller_id] = l;
  ASSERT_EQ(by_id.size(), 2u);
  EXPECT_EQ(by_id["s2"].by, std::vector<std::string>{"card_fingerprint"});
  EXPECT_EQ(by_id["s3"].by, std::vector<std::string>{"device_id"});
  EXPECT_EQ(by_id["s3"].shared, 1);
  auto s3 = Run(store_->LinkedSellers("s3", 1h, t0 + 3s));
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ(s3->size(), 2u);
  // Past the window the links are gone, and every key has a TTL.
  EXPECT_TRUE(Run(store_->LinkedSellers("s1", 1h, t0 + 2h))->empty());
  EXPECT_EQ(use("s4", {{"card_fingerprint", "c1"}}, t0 + 2h),
            (std::vector<std::vector<std::string>>{{}}));
  const std::string ttl = redis_.Run("PTTL " + store_->InstrumentSellersKey("card_fingerprint", "c1"));
  EXPECT_GT(std::stoll(ttl), 0);
  EXPECT_LE(std::stoll(ttl), 3'600'000);
}

TEST_F(CounterStoreTest, ACounterDropsOutAfterItsWindow) {
  // A fixed clock, moved by hand: window 60 s in 6 buckets of 10 s.
  const auto t0 = std::chrono::system_clock::time_point(std::chrono::hours(400000));
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "w", 60s, 6)};
  ASSERT_EQ(Run(store_->UpdateAndRead(c, {}, t0))->values[0], 1);
  ASSERT_EQ(Run(store_->UpdateAndRead(c, {}, t0 + 30s))->values[0], 2);
  auto read = [&](auto t) { return (*Run(store_->Read(c, t)))[0]; };
  EXPECT_EQ(read(t0 + 59s), 2);   // both inside the window
  EXPECT_EQ(read(t0 + 61s), 1);   // the first bucket left it
  EXPECT_EQ(read(t0 + 95s), 0);   // both gone
  // One key per counter, with a TTL of at most the window plus a bucket.
  const std::string ttl = redis_.Run("PTTL " + c[0].key);
  ASSERT_FALSE(ttl.empty());
  EXPECT_GT(std::stoll(ttl), 0);
  EXPECT_LE(std::stoll(ttl), 70000);
  // An update forgets the buckets that left the window.
  EXPECT_EQ(redis_.Run("HLEN " + c[0].key), "2");
  ASSERT_EQ(Run(store_->UpdateAndRead(c, {}, t0 + 95s))->values[0], 1);
  EXPECT_EQ(redis_.Run("HLEN " + c[0].key), "1");
}

TEST_F(CounterStoreTest, ADistinctValueCountsFromTheLastTimeItWasSeen) {
  // Window 60 s in 6 buckets: u1 at 0 s and again at 50 s, u2 at 10 s.
  const auto t0 = std::chrono::system_clock::time_point(std::chrono::hours(410000));
  CounterUpdate d = Counter(Kind::kDistinct, "users", 60s, 6, "u1");
  ASSERT_EQ(Run(store_->UpdateAndRead({d}, {}, t0))->values[0], 1);
  d.value = "u2";
  ASSERT_EQ(Run(store_->UpdateAndRead({d}, {}, t0 + 10s))->values[0], 2);
  d.value = "u1";
  ASSERT_EQ(Run(store_->UpdateAndRead({d}, {}, t0 + 50s))->values[0], 2);
  auto read = [&](auto t) { return (*Run(store_->Read({d}, t)))[0]; };
  EXPECT_EQ(read(t0 + 65s), 2);    // u2 (bucket 1) is still inside
  EXPECT_EQ(read(t0 + 75s), 1);    // u2 left; u1 was seen again at 50 s
  EXPECT_EQ(read(t0 + 115s), 0);   // u1 left too
  d.value = "u3";
  ASSERT_EQ(Run(store_->UpdateAndRead({d}, {}, t0 + 115s))->values[0], 1);
  EXPECT_EQ(redis_.Run("ZCARD " + d.key), "1");  // the update removed the others
  const std::string ttl = redis_.Run("PTTL " + d.key);
  EXPECT_GT(std::stoll(ttl), 0);
  EXPECT_LE(std::stoll(ttl), 70000);
}

TEST_F(CounterStoreTest, ParallelRequestsEachSeeADistinctCount) {
  constexpr int kRequests = 300;
  const auto now = std::chrono::system_clock::now();
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "race", 1h, 12)};
  std::vector<std::future<absl::StatusOr<CounterReadout>>> futures;
  for (int i = 0; i < kRequests; ++i) {
    futures.push_back(asio::co_spawn(io_, store_->UpdateAndRead(c, {}, now), asio::use_future));
  }
  std::set<double> seen;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    seen.insert(r->values[0]);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(*seen.rbegin(), kRequests);
}

TEST_F(CounterStoreTest, OneRoundTripForAllCountersAndChecks) {
  const auto now = std::chrono::system_clock::now();
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "a", 1h, 12), Counter(Kind::kSum, "b", 24h, 24, "4.99"),
                                  Counter(Kind::kDistinct, "c", 1h, 12, "x"), Counter(Kind::kCount, "d", 24h, 24)};
  ASSERT_TRUE(Run(store_->UpdateAndRead(c, {store_->CardBlockKey("fp")}, now)).ok());  // loads the script
  const int64_t evalsha = CommandCalls(redis_, "evalsha");
  const uint64_t sent = client_->commands_sent();
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(Run(store_->UpdateAndRead(c, {store_->CardBlockKey("fp"), store_->SellerFlagKey("s1")}, now)).ok());
  }
  EXPECT_EQ(CommandCalls(redis_, "evalsha") - evalsha, 10);
  EXPECT_EQ(client_->commands_sent() - sent, 10u);  // nothing else went to Redis
}

TEST_F(CounterStoreTest, ScriptIsReloadedAfterAFlush) {
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "flush", 1h, 12)};
  ASSERT_TRUE(Run(store_->UpdateAndRead(c, {}, std::chrono::system_clock::now())).ok());
  redis_.Run("SCRIPT FLUSH");
  auto r = Run(store_->UpdateAndRead(c, {}, std::chrono::system_clock::now()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->values[0], 2);
}

TEST_F(CounterStoreTest, FlagsAndBlockListsExpire) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
  SellerFlag flag{"s9", "seller-many-accounts", "many accounts", now_ms, now_ms + 60'000};
  ASSERT_TRUE(Run(store_->FlagSeller(flag)).ok());
  auto got = Run(store_->GetFlag("s9"));
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->rule_id, "seller-many-accounts");
  EXPECT_EQ((*got)->expires_at_ms, now_ms + 60'000);
  auto list = Run(store_->ListFlags(now_ms));
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].seller_id, "s9");
  EXPECT_GT(std::stoll(redis_.Run("PTTL " + store_->SellerFlagKey("s9"))), 0);

  auto check = Run(store_->UpdateAndRead({}, {store_->SellerFlagKey("s9"), store_->CardBlockKey("fp1")},
                                         std::chrono::system_clock::now()));
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(check->exists, (std::vector<bool>{true, false}));

  ASSERT_TRUE(Run(store_->Block(store_->CardBlockKey("fp1"), 60s)).ok());
  EXPECT_TRUE(Run(store_->UpdateAndRead({}, {store_->CardBlockKey("fp1")}, std::chrono::system_clock::now()))
                  ->exists[0]);

  EXPECT_TRUE(*Run(store_->ClearFlag("s9")));
  EXPECT_FALSE(*Run(store_->ClearFlag("s9")));
  EXPECT_FALSE(Run(store_->GetFlag("s9"))->has_value());
  // An expired flag is not listed.
  SellerFlag old{"s8", "r", "x", now_ms - 10'000, now_ms - 1};
  ASSERT_TRUE(Run(store_->FlagSeller(old)).ok());
  EXPECT_TRUE(Run(store_->ListFlags(now_ms))->empty());
}

TEST_F(CounterStoreTest, UnreachableRedisIsAnErrorWithinTheTimeout) {
  redis_.Stop();
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "down", 1h, 12)};
  auto r = Run(store_->UpdateAndRead(c, {}, std::chrono::system_clock::now()));
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace recharge

namespace recharge {
namespace {

// The backtest's MemoryCounters must say what the Redis script says: the
// same random sequence of updates and reads (every kind, gates, read-only
// counters, time crossing bucket and window edges) against both.
TEST_F(CounterStoreTest, MemoryCountersAgreeWithRedisOnARandomSequence) {
  MemoryCounters memory;
  std::mt19937 rng(20261203);
  auto now = std::chrono::system_clock::time_point(std::chrono::hours(500000));
  for (int step = 0; step < 400; ++step) {
    now += std::chrono::seconds(std::uniform_int_distribution<int>(0, 240)(rng));
    const std::string who = "s" + std::to_string(std::uniform_int_distribution<int>(1, 3)(rng));
    auto counter = [&](Kind kind, const std::string& name, std::chrono::milliseconds window,
                       int buckets, std::string value) {
      CounterUpdate c;
      c.kind = kind;
      c.key = store_->CounterKey("seller_id", who, name);
      c.window = window;
      c.buckets = buckets;
      c.value = std::move(value);
      c.update = std::uniform_int_distribution<int>(0, 4)(rng) != 0;  // some read only
      return c;
    };
    const std::string user = "u" + std::to_string(std::uniform_int_distribution<int>(1, 12)(rng));
    std::vector<CounterUpdate> counters = {
        counter(Kind::kCount, "n10m", 10min, 10, "1"),
        counter(Kind::kSum, "usd1h", 1h, 12,
                std::to_string(std::uniform_int_distribution<int>(1, 9999)(rng) / 100.0)),
        counter(Kind::kDistinct, "users10m", 10min, 5, user),
        counter(Kind::kCount, "gated", 30min, 6, "1"),
    };
    counters[3].gate = "3 >= 3.000000";  // only once the request's seller saw 3 users
    const std::vector<std::string> checks;
    auto redis = Run(store_->UpdateAndRead(counters, checks, now));
    ASSERT_TRUE(redis.ok()) << redis.status();
    const int64_t now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    CounterReadout mem = memory.UpdateAndRead(counters, checks, now_ms);
    ASSERT_EQ(mem.values.size(), redis->values.size());
    for (size_t i = 0; i < mem.values.size(); ++i) {
      EXPECT_NEAR(mem.values[i], redis->values[i], 1e-6) << "step " << step << " counter " << i;
    }
  }
}

}  // namespace
}  // namespace recharge
