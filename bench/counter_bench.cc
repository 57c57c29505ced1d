// counter_bench: the fraud filter's Redis round trip as a decision of the
// shipped rules makes it (configs/fraud_rules.yaml: counters of the user,
// the seller, the card, the device and the ip; the seller flag and block
// list checks; the seller links), on one redis-server and on a three-master
// Redis Cluster, both started here on loopback (the test harnesses of
// tests/integration).
//
// Two measures per backend:
//   latency     one decision at a time, every Redis command held back by
//               --delay-ms before it is sent and again before its reply is
//               taken: a stand-in for the network between a gateway and Redis
//               on other machines (loopback's own round trip is ~50 µs). A
//               decision that waits one round-trip time takes ~2 x delay;
//               one that waited for each slot in turn would take
//               ~slots x 2 x delay.
//   throughput  --concurrency decisions in flight for --seconds, no delay:
//               decisions/s and Redis commands per decision.
//
// Prints a table and one JSON line (also to --json-out).
// Run: build/bench/counter_bench --decisions 200 --delay-ms 2 --seconds 5
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

#include "fraud/counter_store.h"
#include "fraud/rule_engine.h"
#include "fraud/rules/fraud_input_context.h"
#include "fraud/rules/rule_set.h"
#include "io/asio.h"
#include "io/redis_cluster.h"
#include "io/redis_slot.h"
#include "io/strings.h"
#include "tests/integration/in_flight_commands.h"
#include "tests/integration/redis_cluster.h"
#include "tests/integration/redis_server.h"

namespace recharge {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  int decisions = 200;
  double delay_ms = 2;
  double seconds = 5;
  int concurrency = 64;
  std::string rules = "configs/fraud_rules.yaml";
  std::string json_out;
};

[[noreturn]] void Usage(const std::string& error) {
  std::cerr << "counter_bench: " << error
            << "\nusage: counter_bench [--decisions N] [--delay-ms D] [--seconds S] "
               "[--concurrency C] [--rules FILE] [--json-out FILE]\n";
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    const std::string value = argv[++i];
    try {
      if (flag == "--decisions") f.decisions = std::stoi(value);
      else if (flag == "--delay-ms") f.delay_ms = std::stod(value);
      else if (flag == "--seconds") f.seconds = std::stod(value);
      else if (flag == "--concurrency") f.concurrency = std::stoi(value);
      else if (flag == "--rules") f.rules = value;
      else if (flag == "--json-out") f.json_out = value;
      else Usage("unknown flag " + flag);
    } catch (const std::exception&) {
      Usage(flag + ": not a number: " + value);
    }
  }
  if (f.decisions < 1 || f.concurrency < 1 || f.seconds <= 0 || f.delay_ms < 0) {
    Usage("--decisions, --concurrency and --seconds must be positive, --delay-ms not negative");
  }
  return f;
}

// Holds every command back by `delay` on its way out and again on its way
// back, without a thread (a timer).
class DelayedCommands final : public testing::InFlightCommands {
 public:
  DelayedCommands(RedisCommands& inner, std::chrono::microseconds delay)
      : InFlightCommands(inner), delay_(delay) {}

 private:
  asio::awaitable<void> Before(int) override { co_await Wait(); }
  asio::awaitable<void> After(int) override { co_await Wait(); }
  asio::awaitable<void> Wait() {
    asio::steady_timer timer(co_await asio::this_coro::executor, delay_);
    co_await timer.async_wait(asio::use_awaitable);
  }

  const std::chrono::microseconds delay_;
};

// One decision's Redis work under the shipped rules, for a random buyer.
struct Decision {
  std::vector<CounterUpdate> counters;
  std::vector<std::string> checks;
  std::optional<LinkUpdate> links;
};

Decision MakeDecision(const rules::RuleSet& rs, RedisCounterStore& store, std::mt19937_64& rng) {
  auto pick = [&](const char* prefix, int n) {
    return StrCat(prefix, std::uniform_int_distribution<int>(1, n)(rng));
  };
  FraudInput in;
  in.user_id = pick("user", 5000);
  in.seller_id = pick("seller", 200);
  in.ip = StrCat("10.0.", std::uniform_int_distribution<int>(0, 255)(rng), ".",
                 std::uniform_int_distribution<int>(1, 254)(rng));
  in.device_id = pick("device", 4000);
  in.card_fingerprint = pick("card", 4000);
  in.instrument_fingerprint = in.card_fingerprint;
  in.payment_method = "card";
  in.region = "US";
  in.currency = "USD";
  in.package_id = "coins_65";
  in.coins = 65;
  in.amount_usd_cents = 99;
  Decision d;
  std::vector<int> index;
  d.counters = BuildCounterUpdates(
      rs, in, rules::CounterEvent::kRequest,
      [&](const std::string& field, const std::string& value, const std::string& name) {
        return store.CounterKey(field, value, name);
      },
      &index);
  d.checks = {store.SellerFlagKey(in.seller_id), store.CardBlockKey(in.card_fingerprint),
              store.DeviceBlockKey(in.device_id)};
  rules::EvalContext ctx;
  rules::FillEvalContext(in, &ctx);
  d.links = BuildLinkUpdate(rs, in, ctx);
  return d;
}

struct Result {
  std::string backend;
  int slots = 0;               // hash slots (script calls) of the last decision
  double latency_p50_ms = 0;   // with the delay
  double latency_p99_ms = 0;
  int most_in_flight = 0;      // commands in flight at once in one decision
  double decisions_per_s = 0;  // without the delay
  double commands_per_decision = 0;
  int64_t failures = 0;
};

Result Measure(const std::string& backend, RedisCommands& redis, asio::io_context& io,
               const rules::RuleSet& rs, const Flags& flags) {
  Result out;
  out.backend = backend;
  std::mt19937_64 rng(20261203);
  const auto delay = std::chrono::microseconds(static_cast<int64_t>(flags.delay_ms * 1000));
  DelayedCommands delayed(redis, delay);
  RedisCounterStore slow(delayed, "bench", std::chrono::seconds(5));
  RedisCounterStore fast(redis, "bench", std::chrono::seconds(5));
  auto run = [&](RedisCounterStore& store, Decision d) {
    return asio::co_spawn(
               io, store.UpdateAndRead(std::move(d.counters), std::move(d.checks),
                                       std::chrono::system_clock::now(), std::move(d.links)),
               asio::use_future)
        .get();
  };
  // Warm-up: scripts cached on every node, connections open.
  for (int i = 0; i < 50; ++i) {
    if (!run(fast, MakeDecision(rs, fast, rng)).ok()) ++out.failures;
  }
  std::vector<double> latencies;
  for (int i = 0; i < flags.decisions; ++i) {
    Decision d = MakeDecision(rs, slow, rng);
    std::set<uint16_t> slots;
    for (const CounterUpdate& c : d.counters) slots.insert(redis.sharded() ? RedisKeySlot(c.key) : 0);
    for (const std::string& k : d.checks) slots.insert(redis.sharded() ? RedisKeySlot(k) : 0);
    out.slots = static_cast<int>(slots.size());
    const auto start = Clock::now();
    if (!run(slow, std::move(d)).ok()) ++out.failures;
    latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(latencies.begin(), latencies.end());
  out.latency_p50_ms = latencies[latencies.size() / 2];
  out.latency_p99_ms = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
  out.most_in_flight = delayed.most_in_flight();

  // Throughput: `concurrency` coroutines looping until the time is up.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0}, failed{0};
  const uint64_t sent_before = redis.commands_sent();
  auto loop = [&](uint64_t seed) -> asio::awaitable<void> {
    std::mt19937_64 local(seed);
    while (!stop) {
      Decision d = MakeDecision(rs, fast, local);
      absl::StatusOr<CounterReadout> r =
          co_await fast.UpdateAndRead(std::move(d.counters), std::move(d.checks),
                                      std::chrono::system_clock::now(), std::move(d.links));
      if (r.ok()) ++done; else ++failed;
    }
  };
  std::vector<std::future<void>> loops;
  const auto start = Clock::now();
  for (int i = 0; i < flags.concurrency; ++i) {
    loops.push_back(asio::co_spawn(io, loop(1000 + i), asio::use_future));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.seconds));  // the measured period
  stop = true;
  for (auto& f : loops) f.get();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  // Deferred updates still on their way are not waited for: they are not
  // part of any decision's time.
  out.decisions_per_s = static_cast<double>(done.load()) / elapsed;
  out.commands_per_decision =
      done.load() > 0 ? static_cast<double>(redis.commands_sent() - sent_before) / static_cast<double>(done.load()) : 0;
  out.failures += failed.load();
  return out;
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  absl::StatusOr<std::shared_ptr<const rules::RuleSet>> rs = rules::RuleSet::LoadFile(flags.rules);
  if (!rs.ok()) {
    std::cerr << "counter_bench: " << rs.status().message() << "\n";
    return 2;
  }
  std::vector<Result> results;
  {
    testing::RedisServer server;
    asio::io_context io;
    auto work = asio::make_work_guard(io);
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) threads.emplace_back([&] { io.run(); });
    {
      RedisClient client(io.get_executor(), RedisClient::Options{"127.0.0.1", server.port(), 4});
      results.push_back(Measure("one server", client, io, **rs, flags));
      work.reset();
      io.stop();
      for (auto& t : threads) t.join();
    }
  }
  {
    testing::RedisCluster cluster;
    asio::io_context io;
    auto work = asio::make_work_guard(io);
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) threads.emplace_back([&] { io.run(); });
    {
      RedisClusterClient::Options o;
      o.seeds = *ParseRedisAddresses(cluster.seeds());
      o.connections_per_node = 2;
      RedisClusterClient client(io.get_executor(), o);
      results.push_back(Measure("3-master cluster", client, io, **rs, flags));
      work.reset();
      io.stop();
      for (auto& t : threads) t.join();
    }
  }
  std::printf("counter_bench: %d decisions of %s one at a time, each Redis command delayed %.1f ms "
              "each way; then %d in flight for %.0f s, no delay\n",
              flags.decisions, flags.rules.c_str(), flags.delay_ms, flags.concurrency, flags.seconds);
  std::printf("%-18s %6s %12s %12s %14s %14s %12s %9s\n", "backend", "slots", "p50 ms", "p99 ms",
              "most in flight", "decisions/s", "cmds/decision", "failures");
  std::string json = "{\"bench\":\"counter_bench\",\"delay_ms\":" + std::to_string(flags.delay_ms) +
                     ",\"concurrency\":" + std::to_string(flags.concurrency) + ",\"results\":[";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    std::printf("%-18s %6d %12.2f %12.2f %14d %14.0f %12.2f %9lld\n", r.backend.c_str(), r.slots,
                r.latency_p50_ms, r.latency_p99_ms, r.most_in_flight, r.decisions_per_s,
                r.commands_per_decision, static_cast<long long>(r.failures));
    json += StrCat(i ? "," : "", "{\"backend\":\"", r.backend, "\",\"slots\":", r.slots,
                   ",\"latency_p50_ms\":", r.latency_p50_ms, ",\"latency_p99_ms\":", r.latency_p99_ms,
                   ",\"most_in_flight\":", r.most_in_flight, ",\"decisions_per_s\":", r.decisions_per_s,
                   ",\"commands_per_decision\":", r.commands_per_decision, ",\"failures\":", r.failures, "}");
  }
  json += "]}";
  std::printf("%s\n", json.c_str());
  if (!flags.json_out.empty()) std::ofstream(flags.json_out) << json << "\n";
  int64_t failures = 0;
  for (const Result& r : results) failures += r.failures;
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace recharge

int main(int argc, char** argv) { return recharge::Main(argc, argv); }
