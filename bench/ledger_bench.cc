// ledger_bench: the ledger alone (SQLite, or PostgreSQL with --postgres),
// driven the way the gateway drives it.
//
// `--concurrency` coroutines on an io_context with `--threads` threads each
// loop: Begin(claim) with a fresh key, then Complete(completion) with the
// recharge, the response and the DecisionRecord the gateway stores
// (gateway/recharge_flow.cc). A recharge counts once both are committed, so
// the figure is durable recharges per second at synchronous=FULL (SQLite),
// or at the server's own settings (PostgreSQL: fsync and synchronous_commit
// on, as scripts/dev-postgres.sh leaves them).
// `--mode replay` instead repeats Begin() of one completed key (an
// idempotent retry) and counts replays per second.
//
// Prints a readable summary and one JSON line (also written to --json-out).
// Run: build/ledger/bench/ledger_bench --seconds 10 --concurrency 256
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/use_future.hpp>

#include "io/asio.h"
#include "io/strings.h"
#include "ledger/postgres/postgres_ledger_store.h"
#include "ledger/sqlite/sqlite_ledger_store.h"

namespace recharge {
namespace {

using Clock = std::chrono::steady_clock;
using Kind = BeginResult::Kind;

struct Flags {
  double seconds = 5;
  double warmup = 1;
  int concurrency = 256;
  int threads = 2;
  std::string path = "var/bench/ledger_bench.db";
  std::string mode = "commit";  // commit | replay
  std::string json_out;
  size_t group_commit_max = 512;
  int readers = 1;
  bool ordered_ids = false;  // recharge ids that start with the time (sequential index inserts)
  std::string postgres;      // a libpq DSN: the PostgreSQL ledger instead of SQLite (a fresh database!)
  std::string postgres_password_file;
};

[[noreturn]] void Usage(const std::string& error) {
  std::cerr << "ledger_bench: " << error << "\n"
            << "usage: ledger_bench [--seconds S] [--warmup S] [--concurrency N] [--threads N]\n"
            << "                    [--path FILE] [--mode commit|replay] [--json-out FILE]\n"
            << "                    [--group-commit-max N] [--readers N] [--ordered-ids 0|1]\n"
            << "                    [--postgres DSN [--postgres-password-file FILE]]\n";
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    std::string value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      Usage(name + " needs a value");
    }
    try {
      if (name == "--seconds") f.seconds = std::stod(value);
      else if (name == "--warmup") f.warmup = std::stod(value);
      else if (name == "--concurrency") f.concurrency = std::stoi(value);
      else if (name == "--threads") f.threads = std::stoi(value);
      else if (name == "--path") f.path = value;
      else if (name == "--mode") f.mode = value;
      else if (name == "--json-out") f.json_out = value;
      else if (name == "--group-commit-max") f.group_commit_max = std::stoul(value);
      else if (name == "--readers") f.readers = std::stoi(value);
      else if (name == "--ordered-ids") f.ordered_ids = value == "1" || value == "true";
      else if (name == "--postgres") f.postgres = value;
      else if (name == "--postgres-password-file") f.postgres_password_file = value;
      else Usage("unknown flag " + name);
    } catch (const std::exception&) {
      Usage("bad value for " + name + ": " + value);
    }
  }
  if (f.mode != "commit" && f.mode != "replay") Usage("--mode is commit or replay");
  if (f.seconds <= 0 || f.concurrency < 1 || f.threads < 1) Usage("bad --seconds/--concurrency/--threads");
  return f;
}

// Cheap random hex (the gateway's ids are random hex; OpenSSL's RNG is not
// what this measures).
std::string Hex(std::mt19937_64& rng, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(static_cast<size_t>(digits), '0');
  uint64_t bits = 0;
  for (int i = 0; i < digits; ++i) {
    if (i % 16 == 0) bits = rng();
    s[static_cast<size_t>(i)] = kDigits[bits & 15];
    bits >>= 4;
  }
  return s;
}

// What RechargeFlow::Record stores for a card recharge through a seller.
struct Recorded {
  KeyClaim claim;
  Completion done;
};

Recorded MakeRecharge(std::mt19937_64& rng, bool ordered_ids) {
  Recorded out;
  const std::string key = StrCat("idem-", Hex(rng, 32));
  const std::string user = StrCat("user-", rng() % 20'000);
  const std::string seller = rng() % 3 == 0 ? StrCat("seller-", rng() % 200) : std::string();
  const std::string card_fp = Hex(rng, 64);

  KeyClaim& claim = out.claim;
  claim.idempotency_key = key;
  claim.fingerprint = Hex(rng, 64);
  Recharge& draft = claim.draft;
  if (ordered_ids) {
    char time_hex[17];
    std::snprintf(time_hex, sizeof time_hex, "%016llx",
                  static_cast<unsigned long long>(
                      std::chrono::system_clock::now().time_since_epoch().count()));
    draft.set_recharge_id(StrCat("rch_", std::string_view(time_hex + 4, 12), Hex(rng, 12)));
  } else {
    draft.set_recharge_id(StrCat("rch_", Hex(rng, 24)));
  }
  draft.set_idempotency_key(key);
  draft.set_user_id(user);
  draft.set_package_id("coins_650");
  draft.set_coins(650);
  draft.mutable_amount()->set_currency("USD");
  draft.mutable_amount()->set_minor_units(999);
  draft.set_region("US");
  draft.set_payment_method("card");
  draft.set_card_masked("424242******4242");
  draft.set_seller_id(seller);
  const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  draft.mutable_created_at()->set_seconds(now_us / 1'000'000);
  draft.mutable_created_at()->set_nanos(static_cast<int32_t>(now_us % 1'000'000) * 1000);

  FraudAssessment assessment;
  assessment.set_decision(recharge::v1::FRAUD_ACTION_ALLOW);
  assessment.set_rules_version("2026-11-25.1");
  recharge::v1::RuleHit* hit = assessment.add_hits();
  hit->set_rule_id("daily-budget");
  hit->set_action(recharge::v1::FRAUD_ACTION_REVIEW);
  hit->set_reason("user spent over $500 in 24h");
  hit->set_shadow(true);

  Completion& done = out.done;
  done.idempotency_key = key;
  done.recharge = draft;
  done.recharge.set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
  *done.recharge.mutable_fraud() = assessment;
  recharge::v1::PaymentResult* payment = done.recharge.mutable_payment();
  payment->set_adapter("card-primary");
  payment->set_provider_reference(StrCat("ch_", Hex(rng, 24)));
  done.response.set_recharge_id(draft.recharge_id());
  done.response.set_status(recharge::v1::RECHARGE_STATUS_APPROVED);
  done.response.set_coins_credited(650);
  *done.response.mutable_fraud() = assessment;
  *done.response.mutable_payment() = *payment;
  // FraudInput::ToJson() of such a request.
  std::string inputs = StrCat(
      R"({"amount_usd":9.99,"card_fingerprint":")", card_fp, R"(","coins":650,"currency":"USD",)",
      R"("device_id":"device-)", Hex(rng, 10), R"(","instrument_fingerprint":")", card_fp,
      R"(","ip":"203.0.113.)", rng() % 256, R"(","package_id":"coins_650","payment_method":"card",)",
      R"("region":"US","seller_id":")", seller, R"(","user_id":")", user,
      R"(","wallet_provider":""})");
  done.decision = DecisionRecord{draft.recharge_id(), std::move(inputs), assessment};
  return out;
}

struct Run {
  LedgerStore* store = nullptr;
  std::string mode;
  bool ordered_ids = false;
  std::atomic<bool> stop{false};
  std::atomic<bool> measuring{false};
  std::atomic<uint64_t> done{0};      // recharges (or replays) finished while measuring
  std::atomic<uint64_t> errors{0};
  std::atomic<int> running{0};
  const Recorded* replayed = nullptr;  // replay mode: the completed key
  std::vector<std::vector<float>> latency_ms;  // per worker, while measuring
};

asio::awaitable<void> Worker(Run& run, int id) {
  std::mt19937_64 rng(0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(id + 1) ^
                      static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
  std::vector<float>& lat = run.latency_ms[static_cast<size_t>(id)];
  while (!run.stop.load(std::memory_order_relaxed)) {
    const Clock::time_point start = Clock::now();
    bool ok = false;
    if (run.replayed) {
      absl::StatusOr<BeginResult> b = co_await run.store->Begin(run.replayed->claim);
      ok = b.ok() && b->kind == Kind::kReplay;
    } else {
      Recorded r = MakeRecharge(rng, run.ordered_ids);
      absl::StatusOr<BeginResult> b = co_await run.store->Begin(std::move(r.claim));
      if (b.ok() && b->kind == Kind::kClaimed) {
        absl::StatusOr<RecordRechargeResponse> c = co_await run.store->Complete(std::move(r.done));
        ok = c.ok();
      }
    }
    if (!ok) {
      run.errors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (run.measuring.load(std::memory_order_relaxed)) {
      run.done.fetch_add(1, std::memory_order_relaxed);
      lat.push_back(std::chrono::duration<float, std::milli>(Clock::now() - start).count());
    }
  }
  run.running.fetch_sub(1);
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  asio::io_context io(flags.threads);
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < flags.threads; ++i) threads.emplace_back([&io] { io.run(); });
  auto stop_threads = [&] {
    work.reset();
    io.stop();
    for (std::thread& t : threads) t.join();
  };

  std::unique_ptr<LedgerStore> store;
  std::function<uint64_t()> commits_of;
  if (flags.postgres.empty()) {
    std::filesystem::path path(flags.path);
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(flags.path + suffix);
    absl::StatusOr<std::unique_ptr<SqliteLedgerStore>> opened =
        SqliteLedgerStore::Open({.path = flags.path,
                                 .group_commit_max = flags.group_commit_max,
                                 .reader_threads = flags.readers});
    if (!opened.ok()) {
      std::cerr << "ledger_bench: " << opened.status() << "\n";
      stop_threads();
      return 1;
    }
    SqliteLedgerStore* sqlite = opened->get();
    commits_of = [sqlite] { return sqlite->commits(); };
    store = *std::move(opened);
  } else {
    std::string password;
    if (!flags.postgres_password_file.empty()) {
      std::ifstream in(flags.postgres_password_file);
      std::getline(in, password);
    }
    absl::StatusOr<std::unique_ptr<PostgresLedgerStore>> opened =
        asio::co_spawn(io,
                       PostgresLedgerStore::Open(io.get_executor(),
                                                 {.conninfo = flags.postgres,
                                                  .password = password,
                                                  .read_connections = std::max(1, flags.readers),
                                                  .group_commit_max = flags.group_commit_max}),
                       asio::use_future)
            .get();
    if (!opened.ok()) {
      std::cerr << "ledger_bench: " << opened.status() << "\n";
      stop_threads();
      return 1;
    }
    PostgresLedgerStore* pg = opened->get();
    commits_of = [pg] { return pg->commits(); };
    store = *std::move(opened);
  }

  Run run;
  run.store = store.get();
  run.mode = flags.mode;
  run.ordered_ids = flags.ordered_ids;
  run.latency_ms.resize(static_cast<size_t>(flags.concurrency));
  for (auto& v : run.latency_ms) v.reserve(1 << 16);
  Recorded replayed;
  if (flags.mode == "replay") {
    std::mt19937_64 rng(42);
    replayed = MakeRecharge(rng, false);
    auto setup = [&]() -> asio::awaitable<bool> {
      absl::StatusOr<BeginResult> b = co_await store->Begin(replayed.claim);
      if (!b.ok() || b->kind != Kind::kClaimed) co_return false;
      absl::StatusOr<RecordRechargeResponse> c = co_await store->Complete(replayed.done);
      co_return c.ok();
    };
    if (!asio::co_spawn(io, setup(), asio::use_future).get()) {
      std::cerr << "ledger_bench: could not store the replayed key\n";
      return 1;
    }
    run.replayed = &replayed;
  }

  run.running = flags.concurrency;
  for (int i = 0; i < flags.concurrency; ++i) asio::co_spawn(io, Worker(run, i), asio::detached);

  std::this_thread::sleep_for(std::chrono::duration<double>(flags.warmup));
  const uint64_t commits0 = commits_of();
  const double cpu0 = CpuSeconds();
  const Clock::time_point t0 = Clock::now();
  run.measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.seconds));
  run.measuring = false;
  const Clock::time_point t1 = Clock::now();
  const double cpu1 = CpuSeconds();
  const uint64_t commits1 = commits_of();
  run.stop = true;
  while (run.running.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop_threads();  // (the PostgreSQL writer waits on the io_context for work: stopped, not drained)
  store.reset();

  const double wall = std::chrono::duration<double>(t1 - t0).count();
  const uint64_t n = run.done.load();
  const uint64_t commits = commits1 - commits0;
  const uint64_t ops = flags.mode == "replay" ? n : 2 * n;  // Begin + Complete per recharge
  std::vector<float> all;
  for (auto& v : run.latency_ms) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) -> double {
    if (all.empty()) return 0;
    return all[std::min(all.size() - 1, static_cast<size_t>(p * static_cast<double>(all.size())))];
  };
  const double rate = static_cast<double>(n) / wall;
  const double commit_rate = static_cast<double>(commits) / wall;
  const double per_commit = commits ? static_cast<double>(ops) / static_cast<double>(commits) : 0;
  const double cpu_us = n ? (cpu1 - cpu0) * 1e6 / static_cast<double>(n) : 0;
  const char* unit = flags.mode == "replay" ? "replays" : "recharges";
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 0) load[0] = -1;

  std::printf("ledger_bench mode=%s concurrency=%d threads=%d readers=%d seconds=%.1f ledger=%s\n",
              flags.mode.c_str(), flags.concurrency, flags.threads, flags.readers, wall,
              flags.postgres.empty() ? flags.path.c_str() : "postgres");
  std::printf("  %-22s %.0f /s (%llu in %.2f s, %llu errors)\n", unit, rate,
              static_cast<unsigned long long>(n), wall,
              static_cast<unsigned long long>(run.errors.load()));
  std::printf("  %-22s %.0f /s (one WAL flush each)\n", "commits", commit_rate);
  std::printf("  %-22s %.1f ledger ops per commit\n", "mean batch", per_commit);
  std::printf("  %-22s %.1f us per %s (process, all threads; %.2f cores busy)\n", "cpu",
              cpu_us, flags.mode == "replay" ? "replay" : "recharge", (cpu1 - cpu0) / wall);
  std::printf("  %-22s p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", "latency", pct(0.5), pct(0.99),
              all.empty() ? 0.0 : static_cast<double>(all.back()));
  std::printf("  %-22s %.2f\n", "load average (1 min)", load[0]);

  std::string json = StrCat(
      R"({"bench":"ledger","backend":")", flags.postgres.empty() ? "sqlite" : "postgres",
      R"(","mode":")", flags.mode, R"(","concurrency":)", flags.concurrency,
      R"(,"threads":)", flags.threads, R"(,"readers":)", flags.readers,
      R"(,"group_commit_max":)", flags.group_commit_max, R"(,"ordered_ids":)", flags.ordered_ids,
      R"(,"seconds":)", wall, R"(,")", unit, R"(_per_s":)", rate,
      R"(,"commits_per_s":)", commit_rate, R"(,"ops_per_commit":)", per_commit,
      R"(,"cpu_us_per_op":)", cpu_us, R"(,"cores_busy":)", (cpu1 - cpu0) / wall,
      R"(,"p50_ms":)", pct(0.5), R"(,"p99_ms":)", pct(0.99), R"(,"errors":)", run.errors.load(),
      R"(,"loadavg_1m":)", load[0], "}");
  std::printf("%s\n", json.c_str());
  if (!flags.json_out.empty()) {
    std::ofstream out(flags.json_out, std::ios::app);
    out << json << "\n";
    if (!out) {
      std::cerr << "ledger_bench: cannot write " << flags.json_out << "\n";
      return 1;
    }
  }
  return run.errors.load() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace recharge

int main(int argc, char** argv) { return recharge::Main(argc, argv); }
