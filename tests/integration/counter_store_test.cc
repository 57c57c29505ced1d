// RedisCounterStore against a real redis-server and against a real 3-master
// Redis Cluster (the same tests on both): window arithmetic, atomicity under
// concurrency, one round-trip time per request, NOSCRIPT recovery, flags and
// block lists; on the cluster also gates across hash slots, a slot migrated
// mid-run (ASK, then MOVED) and a failover.
#include "fraud/counter_store.h"

#include <random>

#include "fraud/backtest.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "io/redis_cluster.h"
#include "io/redis_slot.h"
#include "io/strings.h"
#include "tests/integration/in_flight_commands.h"
#include "tests/integration/redis_cluster.h"
#include "tests/integration/redis_server.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;
using Kind = CounterUpdate::Kind;

// Where the counters live: one redis-server, or a Redis Cluster of three
// masters (one per test binary, shared by the tests; each uses its own keys).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::unique_ptr<RedisCommands> Client(asio::any_io_executor executor) = 0;
  // Runs a command on the server that holds `key` (every master when `key`
  // is empty) and returns the reply as text (an integer as its digits).
  virtual std::string Run(const std::vector<std::string>& args, const std::string& key) = 0;
  // The calls of one command so far (INFO commandstats) on the server that
  // holds `key` (on every master, summed, when `key` is empty).
  virtual int64_t CommandCalls(const std::string& command, const std::string& key) = 0;
};

int64_t CallsIn(const std::string& info, const std::string& command) {
  const std::string tag = "cmdstat_" + command + ":calls=";
  const size_t at = info.find(tag);
  return at == std::string::npos ? 0 : std::stoll(info.substr(at + tag.size()));
}

std::string ReplyText(const RedisReply& r) {
  return r.type == RedisReply::Type::kInteger ? std::to_string(r.integer) : r.str;
}

class SingleServer final : public Backend {
 public:
  std::unique_ptr<RedisCommands> Client(asio::any_io_executor executor) override {
    return std::make_unique<RedisClient>(executor, RedisClient::Options{"127.0.0.1", redis_.port(), 2});
  }
  std::string Run(const std::vector<std::string>& args, const std::string&) override {
    std::string command;
    for (const std::string& a : args) command += (command.empty() ? "" : " ") + a;
    return redis_.Run(command);
  }
  int64_t CommandCalls(const std::string& command, const std::string&) override {
    return CallsIn(redis_.Run("INFO commandstats"), command);
  }
  void Stop() { redis_.Stop(); }

 private:
  testing::RedisServer redis_;
};

class Cluster final : public Backend {
 public:
  static testing::RedisCluster& Shared() {
    static testing::RedisCluster* cluster = new testing::RedisCluster();  // stopped at exit
    static const bool registered = [] {
      std::atexit([] { delete cluster; });
      return true;
    }();
    (void)registered;
    return *cluster;
  }
  std::unique_ptr<RedisCommands> Client(asio::any_io_executor executor) override {
    RedisClusterClient::Options o;
    o.seeds = *ParseRedisAddresses(Shared().seeds());
    return std::make_unique<RedisClusterClient>(executor, o);
  }
  std::string Run(const std::vector<std::string>& args, const std::string& key) override {
    if (!key.empty()) return ReplyText(Shared().Run(Shared().Owner(Shared().KeySlot(key)), args));
    std::string last;
    for (int m : Shared().Masters()) last = ReplyText(Shared().Run(m, args));
    return last;
  }
  int64_t CommandCalls(const std::string& command, const std::string& key) override {
    if (!key.empty()) return CallsIn(Run({"INFO", "commandstats"}, key), command);
    int64_t calls = 0;
    for (int m : Shared().Masters()) calls += CallsIn(ReplyText(Shared().Run(m, {"INFO", "commandstats"})), command);
    return calls;
  }
};

// Lets every reply through only once `expected` commands are in flight at
// the same time (or `limit` passes): a store that waited for one reply before
// sending the next command would never get there.
class InFlightBarrier final : public testing::InFlightCommands {
 public:
  InFlightBarrier(RedisCommands& inner, int expected, std::chrono::milliseconds limit)
      : InFlightCommands(inner), expected_(expected), limit_(limit) {}

 private:
  asio::awaitable<void> Before(int in_flight) override {
    if (in_flight >= expected_) reached_ = true;
    co_return;
  }
  asio::awaitable<void> After(int) override {
    const auto give_up = std::chrono::steady_clock::now() + limit_;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!reached_ && std::chrono::steady_clock::now() < give_up) {
      timer.expires_after(1ms);  // polling a condition, without a thread
      co_await timer.async_wait(asio::use_awaitable);
    }
  }

  const int expected_;
  const std::chrono::milliseconds limit_;
  std::atomic<bool> reached_{false};
};

class CounterStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cluster") {
      backend_ = std::make_unique<Cluster>();
    } else {
      backend_ = std::make_unique<SingleServer>();
    }
    // Keys of this test only (the cluster is shared by the binary's tests,
    // and --gtest_repeat runs a test again on it).
    static int runs = 0;
    prefix_ = StrCat("t", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-", ++runs);
    for (char& c : prefix_) {
      if (c == '/') c = '_';
    }
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    client_ = backend_->Client(io_.get_executor());
    store_ = std::make_unique<RedisCounterStore>(*client_, prefix_, 2000ms);
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    store_.reset();
    client_.reset();
    backend_.reset();
  }
  bool cluster() const { return GetParam() == "cluster"; }
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return asio::co_spawn(io_, std::move(a), asio::use_future).get();
  }
  // Waits (bounded) until the store's deferred updates are all answered.
  void Settle() {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (store_->deferred_in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);  // polling a condition
    }
    ASSERT_EQ(store_->deferred_in_flight(), 0);
  }
  // `steps` requests, each made by `make(rng)` at a time moved on by 0 to
  // 240 s (from `start`), sent to the store and to the backtest's
  // MemoryCounters (one process, exact): the same values, request by request.
  void ExpectSameAsMemoryCounters(
      int steps, std::chrono::hours start,
      const std::function<std::vector<CounterUpdate>(std::mt19937&)>& make) {
    MemoryCounters memory;
    std::mt19937 rng(20261203);
    auto now = std::chrono::system_clock::time_point(start);
    const std::vector<std::string> checks;
    for (int step = 0; step < steps; ++step) {
      now += std::chrono::seconds(std::uniform_int_distribution<int>(0, 240)(rng));
      const std::vector<CounterUpdate> counters = make(rng);
      auto redis = Run(store_->UpdateAndRead(counters, checks, now));
      ASSERT_TRUE(redis.ok()) << redis.status();
      Settle();
      const int64_t now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
      CounterReadout mem = memory.UpdateAndRead(counters, checks, now_ms);
      ASSERT_EQ(mem.values.size(), redis->values.size());
      for (size_t i = 0; i < mem.values.size(); ++i) {
        EXPECT_NEAR(mem.values[i], redis->values[i], 1e-6) << "step " << step << " counter " << i;
      }
    }
  }
  std::string Redis(const std::vector<std::string>& args, const std::string& key) {
    return backend_->Run(args, key);
  }
  // "PTTL key", "HLEN key"...: on the server that holds the key.
  std::string KeyCommand(const std::string& command, const std::string& key) {
    return backend_->Run({command, key}, key);
  }
  CounterUpdate Counter(Kind kind, const std::string& name, std::chrono::milliseconds window,
                        int buckets, std::string value = "", const std::string& per = "seller_id",
                        const std::string& who = "s1") {
    CounterUpdate c;
    c.kind = kind;
    c.key = store_->CounterKey(per, who, name);
    c.window = window;
    c.buckets = buckets;
    c.value = std::move(value);
    return c;
  }

  std::unique_ptr<Backend> backend_;
  std::string prefix_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
  std::unique_ptr<RedisCommands> client_;
  std::unique_ptr<RedisCounterStore> store_;
};

INSTANTIATE_TEST_SUITE_P(Redis, CounterStoreTest, ::testing::Values("single", "cluster"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST_P(CounterStoreTest, CountSumAndDistinctIncludeTheCurrentRequest) {
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

TEST_P(CounterStoreTest, AGatedCounterIsUpdatedOnlyWhenTheEarlierCounterCompares) {
  // gate "1 > 1": update `shared` only once `users` (counter 1 of the call,
  // this request included) is above 1, in the same round trip.
  const auto now = std::chrono::system_clock::time_point(std::chrono::hours(450000));
  CounterUpdate users = Counter(Kind::kDistinct, "card_users", 1h, 12, "u1");
  CounterUpdate shared = Counter(Kind::kCount, "shared", 1h, 12, "1");
  shared.gate = "1 > 1.000000";
  CounterUpdate first = Counter(Kind::kCount, "first", 1h, 12, "1");
  first.gate = "1 <= 1.000000";
  const int64_t evals_before = backend_->CommandCalls("evalsha", users.key);
  const int64_t whole_before = backend_->CommandCalls("eval", users.key);
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
  // (The first call on a server that never ran the script: NOSCRIPT, then
  // EVAL of the whole script.)
  const int64_t whole = backend_->CommandCalls("eval", users.key) - whole_before;
  EXPECT_EQ(backend_->CommandCalls("evalsha", users.key) - evals_before, 4);
  EXPECT_LE(whole, 1);
  if (evals_before == 0) {
    EXPECT_EQ(whole, 1);
  }
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

TEST_P(CounterStoreTest, InstrumentsLinkTheSellersThatShareThemWithinTheWindow) {
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
  const std::string ttl = KeyCommand("PTTL", store_->InstrumentSellersKey("card_fingerprint", "c1"));
  EXPECT_GT(std::stoll(ttl), 0);
  EXPECT_LE(std::stoll(ttl), 3'600'000);
}

TEST_P(CounterStoreTest, ACounterDropsOutAfterItsWindow) {
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
  const std::string ttl = KeyCommand("PTTL", c[0].key);
  ASSERT_FALSE(ttl.empty());
  EXPECT_GT(std::stoll(ttl), 0);
  EXPECT_LE(std::stoll(ttl), 70000);
  // An update forgets the buckets that left the window.
  EXPECT_EQ(KeyCommand("HLEN", c[0].key), "2");
  ASSERT_EQ(Run(store_->UpdateAndRead(c, {}, t0 + 95s))->values[0], 1);
  EXPECT_EQ(KeyCommand("HLEN", c[0].key), "1");
}

TEST_P(CounterStoreTest, ADistinctValueCountsFromTheLastTimeItWasSeen) {
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
  EXPECT_EQ(KeyCommand("ZCARD", d.key), "1");  // the update removed the others
  const std::string ttl = KeyCommand("PTTL", d.key);
  EXPECT_GT(std::stoll(ttl), 0);
  EXPECT_LE(std::stoll(ttl), 70000);
}

TEST_P(CounterStoreTest, ParallelRequestsEachSeeADistinctCount) {
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

TEST_P(CounterStoreTest, OneRoundTripForAllCountersAndChecks) {
  const auto now = std::chrono::system_clock::now();
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "a", 1h, 12), Counter(Kind::kSum, "b", 24h, 24, "4.99"),
                                  Counter(Kind::kDistinct, "c", 1h, 12, "x"), Counter(Kind::kCount, "d", 24h, 24)};
  const std::vector<std::string> checks = {store_->CardBlockKey("fp"), store_->SellerFlagKey("s1")};
  ASSERT_TRUE(Run(store_->UpdateAndRead(c, checks, now)).ok());  // loads the script
  // One script per hash slot: one on a single server; on the cluster one for
  // the seller's keys ({s:s1}) and one for the card's ({c:fp}).
  const uint64_t scripts =
      cluster() && RedisKeySlot(checks[0]) != RedisKeySlot(checks[1]) ? 2 : 1;
  const int64_t evalsha = backend_->CommandCalls("evalsha", "");
  const uint64_t sent = client_->commands_sent();
  for (int i = 0; i < 10; ++i) {
    auto r = Run(store_->UpdateAndRead(c, checks, now));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->values[0], i + 2);
  }
  EXPECT_EQ(backend_->CommandCalls("evalsha", ""), evalsha + static_cast<int64_t>(10 * scripts));
  EXPECT_EQ(client_->commands_sent() - sent, 10 * scripts);  // nothing else went to Redis
}

// A decision's counters, checks and links across entities (user, seller,
// card, device, ip): one script per hash slot, every one of them sent before
// any reply is awaited — one round-trip time, however many slots.
TEST_P(CounterStoreTest, ADecisionAcrossEntitiesSendsOneScriptPerSlotAllAtOnce) {
  const auto now = std::chrono::system_clock::now();
  std::vector<CounterUpdate> c = {
      Counter(Kind::kCount, "user_n", 1h, 12, "1", "user_id", "u1"),
      Counter(Kind::kDistinct, "seller_users", 1h, 12, "u1", "seller_id", "s1"),
      Counter(Kind::kDistinct, "card_users", 24h, 24, "u1", "card_fingerprint", "c1"),
      Counter(Kind::kDistinct, "device_users", 24h, 24, "u1", "device_id", "d1"),
      Counter(Kind::kDistinct, "ip_users", 1h, 12, "u1", "ip", "10.0.0.1")};
  const std::vector<std::string> checks = {store_->SellerFlagKey("s1"), store_->CardBlockKey("c1"),
                                           store_->DeviceBlockKey("d1")};
  const LinkUpdate links{"s1", {{"card_fingerprint", "c1"}, {"device_id", "d1"}}, 24h};
  std::set<uint16_t> slots;
  for (const CounterUpdate& u : c) slots.insert(RedisKeySlot(u.key));
  const size_t scripts = cluster() ? slots.size() : 1;
  if (cluster()) {
    ASSERT_GE(scripts, 4u);  // five entities, five hash tags
  }
  ASSERT_TRUE(Run(store_->UpdateAndRead(c, checks, now, links)).ok());  // scripts cached everywhere

  InFlightBarrier barrier(*client_, static_cast<int>(scripts), 5s);
  RedisCounterStore store(barrier, prefix_, 10s);
  const uint64_t sent = client_->commands_sent();
  c[0].value = "1";
  for (size_t i = 1; i < c.size(); ++i) c[i].value = "u2";
  auto r = Run(store.UpdateAndRead(c, checks, now, links));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->values, (std::vector<double>{2, 2, 2, 2, 2}));
  EXPECT_EQ(r->exists, (std::vector<bool>{false, false, false}));
  EXPECT_EQ(r->linked, (std::vector<std::vector<std::string>>{{}, {}}));
  EXPECT_EQ(client_->commands_sent() - sent, scripts);
  EXPECT_EQ(barrier.most_in_flight(), static_cast<int>(scripts));
}

// The shipped rules gate seller counters on card and user counters
// (seller_shared_card_recharges_1h only_if card_users_24h > 1). Across hash
// slots the gate is decided after the read and the update deferred; what the
// request sees, and what is stored, is what one script on one server gives.
TEST_P(CounterStoreTest, AGateOnAnotherEntitysCounterGivesWhatOneScriptGives) {
  const auto now = std::chrono::system_clock::time_point(std::chrono::hours(450100));
  CounterUpdate users = Counter(Kind::kDistinct, "card_users", 24h, 24, "u1", "card_fingerprint", "c1");
  CounterUpdate first = Counter(Kind::kCount, "user_n", 24h, 24, "1", "user_id", "u1");
  CounterUpdate shared = Counter(Kind::kCount, "shared", 1h, 12, "1");  // seller s1
  shared.gate = "1 > 1";
  CounterUpdate newcomer = Counter(Kind::kCount, "newcomer", 1h, 12, "1");  // seller s1
  newcomer.gate = "2 <= 1";
  // Gated on a gated counter of another slot: deferred too.
  CounterUpdate chained = Counter(Kind::kSum, "chained_usd", 1h, 12, "4.99", "card_fingerprint", "c1");
  chained.gate = "3 >= 2";
  auto request = [&](const std::string& user, std::chrono::seconds at) {
    users.value = user;
    first.key = store_->CounterKey("user_id", user, "user_n");
    auto r = Run(store_->UpdateAndRead({users, first, shared, newcomer, chained}, {}, now + at));
    EXPECT_TRUE(r.ok()) << r.status();
    Settle();
    return r.ok() ? r->values : std::vector<double>{};
  };
  EXPECT_EQ(request("u1", 0s), (std::vector<double>{1, 1, 0, 1, 0}));
  EXPECT_EQ(request("u1", 1s), (std::vector<double>{1, 2, 0, 1, 0}));
  EXPECT_EQ(request("u2", 2s), (std::vector<double>{2, 1, 1, 2, 0}));
  auto d = request("u3", 3s);
  ASSERT_EQ(d.size(), 5u);
  EXPECT_EQ((std::vector<double>{d[0], d[1], d[2], d[3]}), (std::vector<double>{3, 1, 2, 3}));
  EXPECT_DOUBLE_EQ(d[4], 4.99);
  // Stored: read back without updating.
  auto stored = Run(store_->Read({users, shared, newcomer, chained}, now + 4s));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((std::vector<double>{(*stored)[0], (*stored)[1], (*stored)[2]}), (std::vector<double>{3, 2, 3}));
  EXPECT_DOUBLE_EQ((*stored)[3], 4.99);
}

// The backtest's MemoryCounters (one process, exact) against the store on
// counters of several entities, with gates across them: the same values.
TEST_P(CounterStoreTest, GatesAcrossEntitiesAgreeWithMemoryCountersOnARandomSequence) {
  ExpectSameAsMemoryCounters(300, std::chrono::hours(510000), [this](std::mt19937& rng) {
    auto pick = [&](const char* p, int n) {
      return p + std::to_string(std::uniform_int_distribution<int>(1, n)(rng));
    };
    const std::string seller = pick("s", 3), user = pick("u", 12), card = pick("c", 5);
    std::vector<CounterUpdate> counters = {
        Counter(Kind::kDistinct, "card_users", 30min, 6, user, "card_fingerprint", card),
        Counter(Kind::kCount, "user_n", 1h, 12, "1", "user_id", user),
        Counter(Kind::kCount, "seller_shared", 30min, 6, "1", "seller_id", seller),
        Counter(Kind::kSum, "seller_new_usd", 1h, 12, "0.99", "seller_id", seller),
        Counter(Kind::kDistinct, "seller_cards", 10min, 5, card, "seller_id", seller),
        Counter(Kind::kCount, "card_n", 10min, 10, "1", "card_fingerprint", card),
    };
    counters[2].gate = "1 > 1";   // seller on the card's count
    counters[3].gate = "2 <= 2";  // seller on the user's count
    counters[4].gate = "3 >= 2";  // seller on a (deferred) seller counter
    counters[5].gate = "5 < 3";   // card on a (deferred) seller counter
    for (CounterUpdate& c : counters) c.update = std::uniform_int_distribution<int>(0, 5)(rng) != 0;
    return counters;
  });
}

// Cluster only: the seller's hash slot migrated to another master while
// decisions run. A decision's script touches keys that do not exist (the
// seller's flag), so while the slot is half-moved Redis answers TRYAGAIN
// (some keys here, some there) or, once every key is on the new owner, ASK
// from the old one (then TRYAGAIN from the new: a multi-key script with a
// missing key); the client retries within the deadline until the slot is
// handed over, then follows MOVED. Every decision is answered and counted
// exactly once.
class CounterStoreClusterTest : public CounterStoreTest {};
INSTANTIATE_TEST_SUITE_P(Redis, CounterStoreClusterTest, ::testing::Values("cluster"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST_P(CounterStoreClusterTest, ASlotMigratedMidRunIsFollowedAndEveryDecisionCountsOnce) {
  testing::RedisCluster& redis = Cluster::Shared();
  auto& cluster_client = static_cast<RedisClusterClient&>(*client_);
  const std::string seller = "migrating-seller";
  const uint16_t slot = RedisKeySlot(store_->CounterKey("seller_id", seller, "n"));
  const int from = redis.Owner(slot);
  int to = -1;
  for (int m : redis.Masters()) {
    if (m != from) to = m;
  }
  ASSERT_GE(to, 0);

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failed{0};
  std::mutex mu;
  std::string first_error;
  auto worker = [&](int w) -> asio::awaitable<void> {
    for (int i = 0; !stop; ++i) {
      const std::string user = StrCat("u", w, "-", i % 7);
      std::vector<CounterUpdate> c = {
          Counter(Kind::kCount, "n", 1h, 12, "1", "seller_id", seller),
          Counter(Kind::kDistinct, "users", 1h, 12, user, "seller_id", seller),
          Counter(Kind::kCount, "user_n", 1h, 12, "1", "user_id", user)};
      std::vector<std::string> checks = {store_->SellerFlagKey(seller)};
      absl::StatusOr<CounterReadout> r =
          co_await store_->UpdateAndRead(std::move(c), std::move(checks), std::chrono::system_clock::now());
      if (r.ok()) {
        ++answered;
      } else {
        ++failed;
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.empty()) first_error = std::string(r.status().message());
      }
    }
  };
  std::vector<std::future<void>> workers;
  for (int w = 0; w < 4; ++w) workers.push_back(asio::co_spawn(io_, worker(w), asio::use_future));
  auto after_more = [&](int more) {
    const int target = answered + more;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (answered < target && failed == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);  // polling a condition
    }
    return answered >= target;
  };
  const uint64_t asks = cluster_client.ask_redirects();
  const uint64_t moved = cluster_client.moved_redirects();
  const uint64_t tryagains = cluster_client.tryagain_retries();
  // Runs the migration steps; false at the first that does not come true.
  auto migrate = [&]() -> bool {
    if (!after_more(100)) return false;
    redis.BeginMigration(slot, from, to);
    while (redis.MoveKeys(slot, from, to, 100) > 0) {
    }
    // Every key on `to`, the slot still `from`'s: decisions are sent ASK.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (cluster_client.ask_redirects() == asks && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);  // polling a condition
    }
    if (cluster_client.ask_redirects() == asks) return false;
    redis.FinishMigration(slot, from, to);  // `to` owns it: MOVED
    return after_more(100);
  };
  const bool migrated = migrate();
  stop = true;
  for (auto& f : workers) f.get();
  ASSERT_TRUE(migrated) << "answered " << answered << ", failed " << failed << ": " << first_error;

  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_GT(cluster_client.ask_redirects(), asks);
  EXPECT_GT(cluster_client.moved_redirects(), moved);
  EXPECT_GT(cluster_client.tryagain_retries(), tryagains);
  EXPECT_EQ(redis.Owner(slot), to);
  auto total = Run(store_->Read({Counter(Kind::kCount, "n", 1h, 12, "1", "seller_id", seller),
                                 Counter(Kind::kDistinct, "users", 1h, 12, "x", "seller_id", seller)},
                                std::chrono::system_clock::now()));
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ((*total)[0], answered.load());  // every decision counted once
  EXPECT_EQ((*total)[1], 4 * 7);            // 4 workers x 7 users each
}

TEST_P(CounterStoreTest, ScriptIsReloadedAfterAFlush) {
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "flush", 1h, 12)};
  ASSERT_TRUE(Run(store_->UpdateAndRead(c, {}, std::chrono::system_clock::now())).ok());
  Redis({"SCRIPT", "FLUSH"}, "");  // every master
  auto r = Run(store_->UpdateAndRead(c, {}, std::chrono::system_clock::now()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->values[0], 2);
}

TEST_P(CounterStoreTest, FlagsAndBlockListsExpire) {
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
  EXPECT_GT(std::stoll(KeyCommand("PTTL", store_->SellerFlagKey("s9"))), 0);

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

TEST_P(CounterStoreTest, UnreachableRedisIsAnErrorWithinTheTimeout) {
  std::unique_ptr<RedisCommands> dead;
  if (cluster()) {
    // A cluster none of whose seeds answers.
    RedisClusterClient::Options o;
    o.seeds = {RedisClient::Options{"127.0.0.1", testing::FreePort(), 1}};
    dead = std::make_unique<RedisClusterClient>(io_.get_executor(), o);
  } else {
    static_cast<SingleServer&>(*backend_).Stop();
  }
  RedisCounterStore store(dead ? *dead : *client_, prefix_, 500ms);
  std::vector<CounterUpdate> c = {Counter(Kind::kCount, "down", 1h, 12)};
  auto r = Run(store.UpdateAndRead(c, {}, std::chrono::system_clock::now()));
  EXPECT_FALSE(r.ok());
  // Stop the io threads before the clients go (RedisClient's requirement).
  work_.reset();
  io_.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

}  // namespace
}  // namespace recharge

namespace recharge {
namespace {

// The backtest's MemoryCounters must say what the Redis script says: the
// same random sequence of updates and reads (every kind, gates, read-only
// counters, time crossing bucket and window edges) against both.
TEST_P(CounterStoreTest, MemoryCountersAgreeWithRedisOnARandomSequence) {
  ExpectSameAsMemoryCounters(400, std::chrono::hours(500000), [this](std::mt19937& rng) {
    const std::string who = "s" + std::to_string(std::uniform_int_distribution<int>(1, 3)(rng));
    auto counter = [&](Kind kind, const std::string& name, std::chrono::milliseconds window,
                       int buckets, std::string value) {
      CounterUpdate c = Counter(kind, name, window, buckets, std::move(value), "seller_id", who);
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
    return counters;
  });
}

}  // namespace
}  // namespace recharge
