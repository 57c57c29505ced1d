// RedisClusterClient against a real Redis Cluster (three masters made by
// redis-cli): key slots as the server computes them, routing, a slot
// migrated under load (ASK, then MOVED), TRYAGAIN, a stopped master, a dead
// seed, concurrency from two threads, scripts and the counter store across a
// migration, and a failover to a replica.
#include "io/redis_cluster.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdio>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "fraud/counter_store.h"
#include "io/redis_slot.h"
#include "io/strings.h"
#include "tests/integration/redis_cluster.h"
#include "tests/integration/redis_server.h"

namespace recharge {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Polls `condition` until it holds or `within` passes; returns whether it held.
template <typename Condition>
bool WaitFor(Condition condition, std::chrono::milliseconds within) {
  const auto deadline = Clock::now() + within;
  while (!condition()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);  // polling a condition
  }
  return true;
}

// A RedisClusterClient on two io threads of its own, against cluster().
class ClusterClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    client_ = MakeClient(cluster().seeds());
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    store_.reset();
    others_.clear();
    client_.reset();
  }
  virtual testing::RedisCluster& cluster() = 0;

  std::unique_ptr<RedisClusterClient> MakeClient(const std::string& seeds) {
    absl::StatusOr<std::vector<RedisClient::Options>> parsed = ParseRedisAddresses(seeds);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    RedisClusterClient::Options o;
    o.seeds = *parsed;
    return std::make_unique<RedisClusterClient>(io_.get_executor(), o);
  }

  absl::StatusOr<RedisReply> Run(RedisClusterClient& client, std::vector<std::string> args,
                                 std::chrono::milliseconds timeout = 2000ms,
                                 std::string route_key = "") {
    return asio::co_spawn(
               io_, client.Command(std::move(args), Clock::now() + timeout, std::move(route_key)),
               asio::use_future)
        .get();
  }
  absl::StatusOr<RedisReply> Run(std::vector<std::string> args,
                                 std::chrono::milliseconds timeout = 2000ms,
                                 std::string route_key = "") {
    return Run(*client_, std::move(args), timeout, std::move(route_key));
  }

  // A master other than `node`.
  int OtherMaster(int node) {
    for (int m : cluster().Masters()) {
      if (m != node) return m;
    }
    return -1;
  }

  // One key per master: "<prefix>:{<n>}" for the first n that lands there.
  std::map<int, std::string> KeyPerMaster(const std::string& prefix) {
    std::map<int, std::string> out;
    for (int n = 0; out.size() < cluster().Masters().size() && n < 1000; ++n) {
      const std::string key = StrCat(prefix, ":{", n, "}");
      out.emplace(cluster().Owner(cluster().KeySlot(key)), key);
    }
    return out;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::vector<std::thread> threads_;
  std::unique_ptr<RedisClusterClient> client_;
  std::vector<std::unique_ptr<RedisClusterClient>> others_;
  std::unique_ptr<RedisCounterStore> store_;
};

// Tests that leave every slot served share one cluster per process (ctest
// runs each test in a process of its own); each uses keys of its own.
class RedisClusterTest : public ClusterClientTest {
 protected:
  static void TearDownTestSuite() { shared_.reset(); }
  void SetUp() override {
    if (!shared_) shared_ = std::make_unique<testing::RedisCluster>();
    ClusterClientTest::SetUp();
  }
  testing::RedisCluster& cluster() override { return *shared_; }

  static std::unique_ptr<testing::RedisCluster> shared_;
};
std::unique_ptr<testing::RedisCluster> RedisClusterTest::shared_;

// A cluster of the test's own: it stops a node.
class RedisClusterStopTest : public ClusterClientTest {
 protected:
  void SetUp() override {
    own_ = std::make_unique<testing::RedisCluster>(ClusterOptions());
    ClusterClientTest::SetUp();
  }
  void TearDown() override {
    ClusterClientTest::TearDown();
    own_.reset();
  }
  testing::RedisCluster& cluster() override { return *own_; }
  virtual testing::RedisCluster::Options ClusterOptions() { return {}; }

  std::unique_ptr<testing::RedisCluster> own_;
};

TEST_F(RedisClusterTest, KeySlotsMatchTheServersForRandomKeys) {
  std::mt19937 random(20261125);
  const std::string alphabet = std::string("abcxyz019:{}{}") + std::string("\0\xff", 2);
  std::uniform_int_distribution<size_t> length(0, 24);
  std::uniform_int_distribution<size_t> letter(0, alphabet.size() - 1);
  int tagged = 0;
  for (int i = 0; i < 400; ++i) {
    std::string key;
    const size_t n = length(random);
    for (size_t j = 0; j < n; ++j) key.push_back(alphabet[letter(random)]);
    if (i % 2 == 0) key = StrCat("rc:{u:", i, "}:", key);  // the counter store's shape
    if (key.find('{') != std::string::npos && key.find('}', key.find('{')) != std::string::npos)
      ++tagged;
    ASSERT_EQ(RedisKeySlot(key), cluster().KeySlot(key)) << "key #" << i;
  }
  EXPECT_GT(tagged, 200);
  // The specification's examples, as the server sees them.
  for (const char* key : {"123456789", "{user1000}.following", "{user1000}.followers", "foo{}{bar}",
                          "foo{{bar}}zap", "foo{bar}{zap}", "{bar", "bar", "", "{}"}) {
    EXPECT_EQ(RedisKeySlot(key), cluster().KeySlot(key)) << key;
  }
}

TEST_F(RedisClusterTest, CommandsGoToTheMasterServingTheirSlot) {
  std::map<int, int> per_master;
  constexpr int kKeys = 300;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = i % 3 == 0 ? StrCat("plain-", i) : StrCat("rc:{s:", i, "}:n");
    auto set = Run({"SET", key, StrCat("v", i)});
    ASSERT_TRUE(set.ok()) << set.status();
    ASSERT_EQ(set->str, "OK") << key;
  }
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = i % 3 == 0 ? StrCat("plain-", i) : StrCat("rc:{s:", i, "}:n");
    const uint16_t slot = cluster().KeySlot(key);
    const int owner = cluster().Owner(slot);
    ++per_master[owner];
    // Found on its owner, which the client's map names too; every other
    // master redirects.
    EXPECT_EQ(cluster().Run(owner, {"GET", key}).str, StrCat("v", i)) << key;
    EXPECT_EQ(client_->NodeForSlot(slot), cluster().address(owner));
    const int other = OtherMaster(owner);
    EXPECT_EQ(cluster().Run(other, {"GET", key}).str.rfind("MOVED", 0), 0u);
    auto get = Run({"GET", key});
    ASSERT_TRUE(get.ok()) << get.status();
    EXPECT_EQ(get->str, StrCat("v", i));
  }
  EXPECT_EQ(per_master.size(), 3u);  // spread over every master
  EXPECT_EQ(client_->moved_redirects(), 0u);
  EXPECT_EQ(client_->ask_redirects(), 0u);
  EXPECT_EQ(client_->map_refreshes(), 1u);
  EXPECT_EQ(client_->commands_sent(), 2u * kKeys);
}

TEST_F(RedisClusterTest, KeylessCommandsGoToAnyMasterAndRouteKeyPicksTheNode) {
  auto ping = Run({"PING"});
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->str, "PONG");
  const std::string script = "return redis.call('INCR', KEYS[1]) + redis.call('INCR', KEYS[2])";
  const std::string key = "rc:{s:route}:a";
  auto sha = Run({"SCRIPT", "LOAD", script}, 2000ms, key);
  ASSERT_TRUE(sha.ok()) << sha.status();
  ASSERT_EQ(sha->type, RedisReply::Type::kString);
  const int owner = cluster().Owner(cluster().KeySlot(key));
  for (int m : cluster().Masters()) {
    const RedisReply exists = cluster().Run(m, {"SCRIPT", "EXISTS", sha->str});
    ASSERT_EQ(exists.elements.size(), 1u);
    EXPECT_EQ(exists.elements[0].integer, m == owner ? 1 : 0) << cluster().address(m);
  }
  auto eval = Run({"EVALSHA", sha->str, "2", key, "rc:{s:route}:b"});
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->integer, 2);
}

// The writer of the migration test: sets a new key of the slot each turn,
// reads it back, and reads an older one (maybe migrated meanwhile).
struct WriterReport {
  int writes = 0;
  std::vector<std::string> failures;
};

asio::awaitable<WriterReport> KeepWriting(RedisClusterClient* client, std::string tag,
                                          std::atomic<bool>* stop, std::atomic<int>* written) {
  WriterReport report;
  for (int i = 0; !stop->load(); ++i) {
    const std::string key = StrCat(tag, ":", i);
    std::vector<std::string> set_args = {"SET", key, StrCat("v", i)};
    absl::StatusOr<RedisReply> set =
        co_await client->Command(std::move(set_args), Clock::now() + 2s);
    if (!set.ok() || set->str != "OK") {
      report.failures.push_back(
          StrCat("SET ", key, ": ", set.ok() ? set->str : set.status().ToString()));
      continue;
    }
    for (int j : {i, i / 2}) {
      std::vector<std::string> get_args = {"GET", StrCat(tag, ":", j)};
      absl::StatusOr<RedisReply> get =
          co_await client->Command(std::move(get_args), Clock::now() + 2s);
      if (!get.ok() || get->str != StrCat("v", j)) {
        report.failures.push_back(
            StrCat("GET ", tag, ":", j, ": ", get.ok() ? get->str : get.status().ToString()));
      }
    }
    ++report.writes;
    written->store(i + 1);
  }
  co_return report;
}

TEST_F(RedisClusterTest, SlotMigratedWhileWritingIsFollowedThroughAskThenMoved) {
  const std::string tag = "{migrating}";
  const uint16_t slot = cluster().KeySlot(tag);
  const int from = cluster().Owner(slot);
  const int to = OtherMaster(from);
  const std::vector<std::string> count = {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)};
  const int64_t others = cluster().Run(from, count).integer;  // other tests' keys in the slot
  const auto start = Clock::now();
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  auto writer =
      asio::co_spawn(io_, KeepWriting(client_.get(), tag, &stop, &written), asio::use_future);
  ASSERT_TRUE(WaitFor([&] { return written.load() >= 60; }, 5s));

  // Half way: MIGRATING with some keys moved. New keys and moved keys are
  // answered -ASK by the source.
  cluster().BeginMigration(slot, from, to);
  EXPECT_GT(cluster().MoveKeys(slot, from, to, 20), 0);
  const int at_begin = written.load();
  ASSERT_TRUE(WaitFor(
      [&] { return client_->ask_redirects() >= 20 && written.load() >= at_begin + 20; }, 5s))
      << client_->ask_redirects() << " ASK";
  EXPECT_GT(cluster().MoveKeys(slot, from, to, 20), 0);
  const uint64_t asks_half_way = client_->ask_redirects();
  EXPECT_EQ(client_->moved_redirects(), 0u);

  // Done: the target owns the slot everywhere; the source answers -MOVED.
  cluster().FinishMigration(slot, from, to);
  const int at_finish = written.load();
  ASSERT_TRUE(WaitFor(
      [&] { return client_->moved_redirects() >= 1 && written.load() >= at_finish + 50; }, 5s))
      << client_->moved_redirects() << " MOVED";
  const uint64_t asks_after = client_->ask_redirects();
  const int at_moved = written.load();
  ASSERT_TRUE(WaitFor([&] { return written.load() >= at_moved + 50; }, 5s));
  EXPECT_EQ(client_->ask_redirects(), asks_after);  // the map knows: no redirect any more
  stop = true;
  WriterReport report = writer.get();

  EXPECT_TRUE(report.failures.empty())
      << report.failures.size()
      << " failures, first: " << (report.failures.empty() ? "" : report.failures[0]);
  EXPECT_EQ(cluster().Owner(slot), to);
  EXPECT_EQ(client_->NodeForSlot(slot), cluster().address(to));
  EXPECT_EQ(cluster().Run(from, count).integer, 0);
  EXPECT_EQ(cluster().Run(to, count).integer, others + report.writes);
  for (int i = 0; i < report.writes; ++i) {  // every write is where it belongs
    ASSERT_EQ(cluster().Run(to, {"GET", StrCat(tag, ":", i)}).str, StrCat("v", i)) << i;
  }
  EXPECT_GE(asks_half_way, 20u);
  EXPECT_GE(client_->moved_redirects(), 1u);
  // The first load, then one in the background after MOVED (and no more:
  // ASK never touches the map).
  ASSERT_TRUE(WaitFor([&] { return client_->map_refreshes() >= 2; }, 2s));
  EXPECT_LE(client_->map_refreshes(), 3u);
  std::printf(
      "[ figures  ] migration under load: %d writes (each read back, plus an older key) in %lld "
      "ms, "
      "%llu ASK, %llu MOVED, %llu slot maps loaded\n",
      report.writes,
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()),
      static_cast<unsigned long long>(client_->ask_redirects()),
      static_cast<unsigned long long>(client_->moved_redirects()),
      static_cast<unsigned long long>(client_->map_refreshes()));
}

TEST_F(RedisClusterTest, TryAgainIsRetriedWithinTheDeadline) {
  ASSERT_TRUE(Run({"SET", "{busy}:a", "1"}).ok());
  ASSERT_TRUE(Run({"SET", "{busy}:b", "2"}).ok());
  const uint16_t slot = cluster().KeySlot("{busy}");
  const int from = cluster().Owner(slot);
  const int to = OtherMaster(from);
  cluster().BeginMigration(slot, from, to);
  ASSERT_EQ(cluster().MoveKeys(slot, from, to, 1), 1);  // one key on each side: TRYAGAIN

  // A short deadline: retried, then given up in time, naming the node.
  const auto start = Clock::now();
  auto stuck = Run({"MGET", "{busy}:a", "{busy}:b"}, 300ms);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(stuck.ok());
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kUnavailable) << stuck.status();
  EXPECT_NE(stuck.status().message().find("TRYAGAIN"), std::string::npos) << stuck.status();
  EXPECT_NE(stuck.status().message().find(cluster().address(from)), std::string::npos)
      << stuck.status();
  EXPECT_LE(took, 300ms);
  const uint64_t retries = client_->tryagain_retries();
  EXPECT_GE(retries, 3u);

  // A long one: still retrying when the migration ends, then answered.
  auto mget =
      asio::co_spawn(io_, client_->Command({"MGET", "{busy}:a", "{busy}:b"}, Clock::now() + 10s),
                     asio::use_future);
  ASSERT_TRUE(WaitFor([&] { return client_->tryagain_retries() >= retries + 2; }, 5s));
  cluster().FinishMigration(slot, from, to);
  auto r = mget.get();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->elements.size(), 2u);
  EXPECT_EQ(r->elements[0].str, "1");
  EXPECT_EQ(r->elements[1].str, "2");
  EXPECT_GE(client_->moved_redirects(), 1u);
}

TEST_F(RedisClusterStopTest, StoppedMasterFailsWithinTheDeadlineAndTheOthersServe) {
  std::map<int, std::string> keys = KeyPerMaster("stop");
  ASSERT_EQ(keys.size(), 3u);
  for (const auto& [node, key] : keys) ASSERT_TRUE(Run({"SET", key, "v"}).ok());
  const int victim = keys.begin()->first;
  cluster().Stop(victim);
  for (std::chrono::milliseconds timeout : {300ms, 1000ms}) {
    const auto start = Clock::now();
    auto r = Run({"GET", keys[victim]}, timeout);
    const auto took = Clock::now() - start;
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().code() == absl::StatusCode::kUnavailable ||
                r.status().code() == absl::StatusCode::kDeadlineExceeded)
        << r.status();
    EXPECT_NE(r.status().message().find(cluster().address(victim)), std::string::npos)
        << r.status();
    EXPECT_LE(took, timeout + 50ms);
  }
  EXPECT_GE(client_->connection_retries(), 1u);
  for (const auto& [node, key] : keys) {
    if (node == victim) continue;
    auto r = Run({"GET", key}, 1000ms);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->str, "v");
  }
}

TEST_F(RedisClusterTest, SeedListWithADeadAddressStillWorks) {
  const uint16_t dead = testing::FreePort();
  others_.push_back(MakeClient(StrCat("127.0.0.1:", dead, ", ", cluster().address(1))));
  RedisClusterClient& client = *others_.back();
  auto set = Run(client, {"SET", "seeded", "1"});
  ASSERT_TRUE(set.ok()) << set.status();
  auto get = Run(client, {"GET", "seeded"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, "1");
  EXPECT_EQ(client.map_refreshes(), 1u);

  others_.push_back(MakeClient(StrCat("127.0.0.1:", dead)));
  const auto start = Clock::now();
  auto none = Run(*others_.back(), {"GET", "seeded"}, 1000ms);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable) << none.status();
  EXPECT_NE(none.status().message().find(StrCat("127.0.0.1:", dead)), std::string::npos)
      << none.status();
  EXPECT_LT(Clock::now() - start, 1000ms);
}

TEST_F(RedisClusterTest, ConcurrentCommandsFromTwoThreadsAllLandAfterOneMapLoad) {
  constexpr int kPerThread = 1000;
  constexpr int kKeys = 40;
  auto fire = [this] {
    std::vector<std::future<absl::StatusOr<RedisReply>>> futures;
    for (int i = 0; i < kPerThread; ++i) {
      futures.push_back(asio::co_spawn(
          io_, client_->Command({"INCR", StrCat("hits:{", i % kKeys, "}")}, Clock::now() + 5s),
          asio::use_future));
    }
    int ok = 0;
    for (auto& f : futures) ok += f.get().ok() ? 1 : 0;
    return ok;
  };
  auto a = std::async(std::launch::async, fire);
  auto b = std::async(std::launch::async, fire);
  EXPECT_EQ(a.get() + b.get(), 2 * kPerThread);
  int64_t total = 0;
  for (int k = 0; k < kKeys; ++k) {
    const std::string key = StrCat("hits:{", k, "}");
    total += std::stoll(cluster().Run(cluster().Owner(cluster().KeySlot(key)), {"GET", key}).str);
  }
  EXPECT_EQ(total, 2 * kPerThread);
  EXPECT_EQ(client_->map_refreshes(), 1u);  // 2000 callers waited for one CLUSTER SLOTS
}

TEST_F(RedisClusterTest, ConcurrentCommandsThatSeeMovedShareOneRefresh) {
  const std::string tag = "{moved}";
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Run({"SET", StrCat(tag, i), StrCat("v", i)}).ok());
  const uint16_t slot = cluster().KeySlot(tag);
  const int from = cluster().Owner(slot);
  const int to = OtherMaster(from);
  cluster().MigrateSlot(slot, from, to);  // the client's map does not know yet
  const uint64_t before = client_->map_refreshes();
  std::vector<std::future<absl::StatusOr<RedisReply>>> futures;
  for (int i = 0; i < 200; ++i) {
    futures.push_back(asio::co_spawn(
        io_, client_->Command({"GET", StrCat(tag, i % 50)}, Clock::now() + 3s), asio::use_future));
  }
  for (int i = 0; i < 200; ++i) {
    auto r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->str, StrCat("v", i % 50));
  }
  EXPECT_GE(client_->moved_redirects(), 1u);
  ASSERT_TRUE(WaitFor([&] { return client_->map_refreshes() > before; }, 2s));
  EXPECT_LE(client_->map_refreshes(), before + 2) << client_->moved_redirects() << " MOVED";
  EXPECT_EQ(client_->NodeForSlot(slot), cluster().address(to));
  std::printf(
      "[ figures  ] 200 concurrent GETs after a migration: %llu MOVED, %llu slot map(s) loaded\n",
      static_cast<unsigned long long>(client_->moved_redirects()),
      static_cast<unsigned long long>(client_->map_refreshes() - before));
}

TEST_F(RedisClusterTest, ScriptsKeepWorkingAcrossAMigrationOnceReloaded) {
  const std::string script = "return redis.call('INCR', KEYS[1]) + redis.call('INCR', KEYS[2])";
  const std::string a = "rc:{s:script}:a";
  const std::string b = "rc:{s:script}:b";
  auto sha = Run({"SCRIPT", "LOAD", script}, 2000ms, a);
  ASSERT_TRUE(sha.ok()) << sha.status();
  auto first = Run({"EVALSHA", sha->str, "2", a, b});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->integer, 2);

  const uint16_t slot = cluster().KeySlot(a);
  const int from = cluster().Owner(slot);
  const int to = OtherMaster(from);
  cluster().MigrateSlot(slot, from, to);
  // Followed to the new owner, which never saw the script.
  auto missing = Run({"EVALSHA", sha->str, "2", a, b});
  ASSERT_TRUE(missing.ok()) << missing.status();
  ASSERT_EQ(missing->type, RedisReply::Type::kError);
  EXPECT_EQ(missing->str.rfind("NOSCRIPT", 0), 0u) << missing->str;
  EXPECT_GE(client_->moved_redirects(), 1u);
  // The caller's reload, routed by the script's key, reaches the new owner.
  auto reloaded = Run({"SCRIPT", "LOAD", script}, 2000ms, a);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(cluster().Run(to, {"SCRIPT", "EXISTS", sha->str}).elements.at(0).integer, 1);
  auto again = Run({"EVALSHA", sha->str, "2", a, b});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->integer, 4);  // the migrated values, incremented

  // The counter store does the same by itself (NOSCRIPT: SCRIPT LOAD routed
  // by the script's first key, then EVALSHA again).
  store_ = std::make_unique<RedisCounterStore>(*client_, "t", 2000ms);
  auto counter = [this](CounterUpdate::Kind kind, const std::string& name, std::string value) {
    CounterUpdate c;
    c.kind = kind;
    c.key = store_->CounterKey("seller_id", "s1", name);
    c.window = 1h;
    c.buckets = 12;
    c.value = std::move(value);
    return c;
  };
  // Every key of one call in one slot: the seller's.
  std::vector<CounterUpdate> counters = {counter(CounterUpdate::Kind::kCount, "n", ""),
                                         counter(CounterUpdate::Kind::kSum, "usd", "0.99"),
                                         counter(CounterUpdate::Kind::kDistinct, "users", "u1")};
  const std::vector<std::string> checks = {store_->SellerFlagKey("s1")};
  const auto now = std::chrono::system_clock::now();
  auto counted =
      asio::co_spawn(io_, store_->UpdateAndRead(counters, checks, now), asio::use_future).get();
  ASSERT_TRUE(counted.ok()) << counted.status();
  EXPECT_EQ(counted->values, (std::vector<double>{1, 0.99, 1}));

  const uint16_t store_slot = cluster().KeySlot(counters[0].key);
  const int store_from = cluster().Owner(store_slot);
  const uint64_t moved = client_->moved_redirects();
  cluster().MigrateSlot(store_slot, store_from, OtherMaster(store_from));
  counters[2].value = "u2";
  auto moved_on =
      asio::co_spawn(io_, store_->UpdateAndRead(counters, checks, now), asio::use_future).get();
  ASSERT_TRUE(moved_on.ok()) << moved_on.status();  // MOVED, NOSCRIPT, reload on the new owner
  EXPECT_EQ(moved_on->values, (std::vector<double>{2, 1.98, 2}));
  EXPECT_EQ(moved_on->exists, (std::vector<bool>{false}));
  EXPECT_GT(client_->moved_redirects(), moved);
}

TEST(RedisAddresses, ParsesACommaSeparatedList) {
  auto list = ParseRedisAddresses("127.0.0.1:7000, 10.0.0.2:7001 ,h:1");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].host, "127.0.0.1");
  EXPECT_EQ((*list)[0].port, 7000);
  EXPECT_EQ((*list)[1].host, "10.0.0.2");
  EXPECT_EQ((*list)[2].port, 1);
  EXPECT_FALSE(ParseRedisAddresses("").ok());
  EXPECT_FALSE(ParseRedisAddresses("a:1,").ok());
  auto bad = ParseRedisAddresses("a:1,b:x");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("b:x"), std::string::npos);
}

// With a replica per master and a short node timeout: a stopped master's
// slots come back on its promoted replica, and the client follows.
class RedisClusterFailoverTest : public RedisClusterStopTest {
 protected:
  testing::RedisCluster::Options ClusterOptions() override {
    return {.replicas = true, .node_timeout_ms = 1000};
  }
};

TEST_F(RedisClusterFailoverTest, ClientFollowsAFailoverToTheReplica) {
  const std::string key = "{failover}:k";
  ASSERT_TRUE(Run({"SET", key, "before"}).ok());
  const uint16_t slot = cluster().KeySlot(key);
  const int master = cluster().Owner(slot);
  cluster().Stop(master);
  int promoted = master;
  ASSERT_TRUE(WaitFor(
      [&] {
        try {
          promoted = cluster().Owner(slot);
        } catch (const std::exception&) {
        }
        return promoted != master;
      },
      15s));
  cluster().WaitUntilOk(10s);
  auto set = Run({"SET", key, "after"}, 3000ms);
  ASSERT_TRUE(set.ok()) << set.status();
  auto get = Run({"GET", key});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, "after");
  EXPECT_EQ(cluster().Run(promoted, {"GET", key}).str, "after");
  EXPECT_EQ(client_->NodeForSlot(slot), cluster().address(promoted));
  EXPECT_GE(client_->map_refreshes(), 2u);
}

}  // namespace
}  // namespace recharge
