// loadgen: a closed-loop gRPC load generator for the gateway's RecordRecharge
// and for the bench echo server (bench/README.md).
//
// `--concurrency` calls are kept outstanding at all times, spread over
// `--channels` channels (one HTTP/2 connection each): every completion issues
// the next call from the same slot, through the gRPC callback client API.
// After `--warmup` seconds, calls that complete in the next `--duration`
// seconds are measured: throughput, latency percentiles (exact, from every
// sample), and counts per gRPC status code and per RechargeStatus. A call
// counts as good only if it is OK (and, for RecordRecharge, APPROVED and not
// a replay): unlike h2load, which counts any HTTP 200 as a success even when
// the gRPC status in the trailers is an error.
//
// Every RecordRecharge carries a fresh idempotency key, `<prefix>-<n>`, with a
// prefix unique to the run (time, pid, random), so a rerun never replays
// stored results, and by default a buyer of its own (user, card, device and
// IP address derived from n), so that no fraud rule sees one buyer doing
// thousands of recharges. The payment method follows `--mix` (default: all
// cards): a card payment in US/USD (a Luhn-valid 4242... number the sandbox
// approves), a PayPal capture in US/USD, or a GCash payment in PH/PHP; always
// coins_65. An answer is verified: APPROVED, not replayed, a recharge id, 65
// coins credited, and a fraud decision taken on the counters (not degraded). `--mode replay` sends one request with one key over and
// over: the first call records it, every later one must be its replay.
//
// Output: a human-readable report, then one line of JSON (the last line of
// stdout; also written to --json-out if given).
//
// Thread-safety: a slot is touched by one call at a time (the completion of
// call k happens before call k+1 is issued), so its tally needs no lock; the
// main thread reads the tallies only after every slot has stopped.
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "echo.grpc.pb.h"
#include "io/grpc_code_name.h"
#include "recharge/v1/recharge.grpc.pb.h"

namespace loadgen {
namespace {

using Clock = std::chrono::steady_clock;

enum class Mode { kRecharge, kReplay, kEcho };

// Payment methods of --mix, in the order of their share buckets.
enum class Method { kCard, kPaypal, kGcash };

struct Options {
  Mode mode = Mode::kRecharge;
  std::string target = "127.0.0.1:50051";
  int concurrency = 64;
  int channels = 4;
  double duration_s = 10;
  double warmup_s = 2;
  double timeout_s = 10;          // per-call deadline
  std::string key_prefix;         // default: lg-<time>-<pid>-<random>
  std::string user_id;            // empty: a user of its own per call
  uint64_t buyer_base = 0;        // random per run: buyers (cards, IPs) differ between runs
  // Shares (out of their sum) of card, PayPal and GCash payments.
  std::array<int, 3> mix = {100, 0, 0};
  int payload_bytes = -1;         // echo: -1 = the size of a RecordRechargeRequest
  std::string token;              // bearer token, sent as `authorization`
  std::string ca_file;            // TLS to the target if set
  std::string json_out;
  std::string answers_out;        // one JSON line per call, if set
  double error_pause_ms = 0;      // a slot waits this long after a failed call
  std::vector<std::string> targets;  // --target split at commas
};

constexpr const char* kUsage = R"(usage: loadgen [options]
  --mode recharge|replay|echo
                           RecordRecharge with fresh keys, RecordRecharge with one
                           key repeated (its replays), or Echo (default recharge)
  --target HOST:PORT[,HOST:PORT...]
                           server address(es) (default 127.0.0.1:50051); with
                           several, channel i goes to target i modulo their number
  --concurrency N          calls kept outstanding (default 64)
  --channels N             gRPC channels, one connection each (default 4)
  --duration S             measured seconds (default 10)
  --warmup S               seconds run before measuring (default 2)
  --timeout S              per-call deadline in seconds (default 10)
  --key-prefix P           idempotency key prefix (default lg-<time>-<pid>-<random>)
  --user-id ID             user_id of every recharge (default: one per call)
  --mix card=N,paypal=N,gcash=N
                           shares of the payment methods (default card=100)
  --payload-bytes N        echo payload size (default: the size of a recharge request)
  --token T                send "authorization: Bearer T"
  --ca-file PEM            use TLS, trusting this CA (default: plaintext)
  --json-out FILE          also write the JSON summary to FILE
  --answers-out FILE       write every call's answer, one JSON line each: key,
                           target, code (gRPC), status, recharge_id, replayed, ms,
                           sent_at_ms (when it was sent, Unix milliseconds)
  --error-pause-ms N       after a failed call, a slot waits N ms before the next
                           (default 0; keeps a closed loop from spinning on a dead
                           target)
SIGINT or SIGTERM ends the run early; the summary and answers are still written.
)";

bool ParseDouble(const std::string& s, double* out) {
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return !s.empty() && *end == '\0' && std::isfinite(*out);
}

bool ParseInt(const std::string& s, int* out) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  *out = static_cast<int>(v);
  return !s.empty() && *end == '\0' && v >= 0 && v <= 1'000'000;
}

// "card=85,paypal=8,gcash=7": every method named at most once, shares >= 0,
// at least one positive.
bool ParseMix(const std::string& s, std::array<int, 3>* mix) {
  std::array<int, 3> out = {0, 0, 0};
  std::array<bool, 3> seen = {false, false, false};
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return false;
    const std::string name = item.substr(0, eq);
    const int m = name == "card" ? 0 : name == "paypal" ? 1 : name == "gcash" ? 2 : -1;
    if (m < 0 || seen[m] || !ParseInt(item.substr(eq + 1), &out[m])) return false;
    seen[m] = true;
  }
  if (out[0] + out[1] + out[2] <= 0) return false;
  *mix = out;
  return true;
}

// Returns an error message, or "" when the options are usable.
std::string ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (arg != "--help" && arg != "-h") {
      if (i + 1 >= argc) return "missing value for " + arg;
      value = argv[++i];
    }
    bool ok = true;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--mode") {
      if (value == "recharge") o->mode = Mode::kRecharge;
      else if (value == "replay") o->mode = Mode::kReplay;
      else if (value == "echo") o->mode = Mode::kEcho;
      else ok = false;
    } else if (arg == "--target") {
      o->target = value;
    } else if (arg == "--concurrency") {
      ok = ParseInt(value, &o->concurrency) && o->concurrency > 0;
    } else if (arg == "--channels") {
      ok = ParseInt(value, &o->channels) && o->channels > 0;
    } else if (arg == "--duration") {
      ok = ParseDouble(value, &o->duration_s) && o->duration_s > 0;
    } else if (arg == "--warmup") {
      ok = ParseDouble(value, &o->warmup_s) && o->warmup_s >= 0;
    } else if (arg == "--timeout") {
      ok = ParseDouble(value, &o->timeout_s) && o->timeout_s > 0;
    } else if (arg == "--key-prefix") {
      o->key_prefix = value;
    } else if (arg == "--user-id") {
      o->user_id = value;
    } else if (arg == "--mix") {
      ok = ParseMix(value, &o->mix);
    } else if (arg == "--payload-bytes") {
      ok = ParseInt(value, &o->payload_bytes);
    } else if (arg == "--token") {
      o->token = value;
    } else if (arg == "--ca-file") {
      o->ca_file = value;
    } else if (arg == "--json-out") {
      o->json_out = value;
    } else if (arg == "--answers-out") {
      o->answers_out = value;
    } else if (arg == "--error-pause-ms") {
      ok = ParseDouble(value, &o->error_pause_ms) && o->error_pause_ms >= 0;
    } else {
      return "unknown argument \"" + arg + "\" (see --help)";
    }
    if (!ok) return "bad value \"" + value + "\" for " + arg;
  }
  {
    std::stringstream in(o->target);
    std::string t;
    while (std::getline(in, t, ',')) {
      if (t.empty()) return "empty address in --target \"" + o->target + "\"";
      o->targets.push_back(t);
    }
    if (o->targets.empty()) return "--target needs an address";
  }
  if (o->key_prefix.empty()) {
    std::random_device rd;
    char buf[64];
    std::snprintf(buf, sizeof buf, "lg-%llx-%x-%04x",
                  static_cast<unsigned long long>(std::time(nullptr)),
                  static_cast<unsigned>(getpid()), static_cast<unsigned>(rd() & 0xffff));
    o->key_prefix = buf;
  }
  std::random_device rd;
  o->buyer_base = (static_cast<uint64_t>(rd()) << 20) ^ rd();
  return "";
}

constexpr int kRechargeStatuses = 8;  // 0..6 from the proto, 7 = a value this build does not know

// Counts for one phase (measured window, or the whole run).
struct Counts {
  uint64_t calls = 0;
  uint64_t good = 0;
  uint64_t replayed = 0;
  uint64_t unverified = 0;  // OK and APPROVED, but the answer was not what was asked
  uint64_t degraded = 0;    // decided without the fraud counters (Redis too slow or down)
  std::array<uint64_t, 3> approved_by_method{};  // card, paypal, gcash
  std::array<uint64_t, recharge::kGrpcCodeCount> grpc{};
  std::array<uint64_t, kRechargeStatuses> recharge{};

  void Add(const Counts& o) {
    calls += o.calls;
    good += o.good;
    replayed += o.replayed;
    unverified += o.unverified;
    degraded += o.degraded;
    for (size_t i = 0; i < approved_by_method.size(); ++i) approved_by_method[i] += o.approved_by_method[i];
    for (size_t i = 0; i < grpc.size(); ++i) grpc[i] += o.grpc[i];
    for (size_t i = 0; i < recharge.size(); ++i) recharge[i] += o.recharge[i];
  }
};

// What every slot shares: the clock marks, the key counter, the stop latch.
class Run {
 public:
  Run(const Options& options, Clock::time_point start)
      : options_(options),
        measure_start_(start + ToDuration(options.warmup_s)),
        measure_end_((measure_start_ + ToDuration(options.duration_s)).time_since_epoch().count()) {}

  const Options& options() const { return options_; }
  Clock::time_point measure_start() const { return measure_start_; }
  Clock::time_point measure_end() const {
    return Clock::time_point(Clock::duration(measure_end_.load(std::memory_order_relaxed)));
  }
  // Ends the run now (SIGINT, SIGTERM): slots stop after their call in flight.
  void EndNow() {
    const Clock::rep now = Clock::now().time_since_epoch().count();
    Clock::rep end = measure_end_.load();
    while (now < end && !measure_end_.compare_exchange_weak(end, now)) {
    }
  }

  uint64_t NextCall() { return next_key_.fetch_add(1, std::memory_order_relaxed); }

  void SlotStopped() {
    std::lock_guard lock(mu_);
    ++stopped_;
    cv_.notify_all();
  }
  // Returns false if the slots did not all stop by `deadline`.
  bool WaitAllStopped(int slots, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return stopped_ == slots; });
  }

  static Clock::duration ToDuration(double seconds) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }

 private:
  const Options& options_;
  const Clock::time_point measure_start_;
  std::atomic<Clock::rep> measure_end_;  // a time_point's count; EndNow() moves it earlier
  std::atomic<uint64_t> next_key_{1};
  std::mutex mu_;
  std::condition_variable cv_;
  int stopped_ = 0;
};

bool IsRechargeMode(Mode m) { return m == Mode::kRecharge || m == Mode::kReplay; }

// `digits` plus the digit that makes the number pass the Luhn check.
std::string LuhnComplete(const std::string& digits) {
  int sum = 0;
  // The check digit will be at position 0 from the right, so the last digit
  // of `digits` is at position 1 and is doubled.
  for (size_t i = 0; i < digits.size(); ++i) {
    int d = digits[digits.size() - 1 - i] - '0';
    if (i % 2 == 0) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return digits + static_cast<char>('0' + (10 - sum % 10) % 10);
}

// The method of call n: the buckets of --mix, interleaved (n modulo the sum).
Method MethodOf(const Options& o, uint64_t n) {
  const int total = o.mix[0] + o.mix[1] + o.mix[2];
  // Spread each method's share over the cycle rather than in one run.
  const uint64_t r = (n * 37) % static_cast<uint64_t>(total);
  if (r < static_cast<uint64_t>(o.mix[0])) return Method::kCard;
  if (r < static_cast<uint64_t>(o.mix[0] + o.mix[1])) return Method::kPaypal;
  return Method::kGcash;
}

// Fills `r` as call n's request: its key, buyer and payment method.
void MakeRechargeRequest(const Options& o, uint64_t n, int exp_year,
                         recharge::v1::RecordRechargeRequest* r) {
  const std::string id = std::to_string(n);
  r->Clear();
  r->set_idempotency_key(o.mode == Mode::kReplay ? o.key_prefix + "-replay" : o.key_prefix + "-" + id);
  const uint64_t buyer = o.buyer_base + (o.mode == Mode::kReplay ? 0 : n);
  r->set_user_id(o.user_id.empty() ? o.key_prefix + "-u" + std::to_string(buyer) : o.user_id);
  r->set_package_id("coins_65");
  r->mutable_client()->set_ip("10." + std::to_string((buyer >> 16) & 255) + "." +
                              std::to_string((buyer >> 8) & 255) + "." + std::to_string(buyer & 255));
  r->mutable_client()->set_device_id(o.key_prefix + "-d" + std::to_string(buyer));
  switch (MethodOf(o, o.mode == Mode::kReplay ? 0 : n)) {
    case Method::kCard: {
      r->mutable_amount()->set_currency("USD");
      r->mutable_amount()->set_minor_units(99);
      r->set_region("US");
      recharge::v1::Card* card = r->mutable_card();
      char digits[16];
      std::snprintf(digits, sizeof digits, "424242%09llu",
                    static_cast<unsigned long long>(buyer % 1'000'000'000ULL));
      card->set_number(LuhnComplete(digits));
      card->set_exp_month(12);
      card->set_exp_year(exp_year);
      card->set_cvc("123");
      card->set_holder_name("Load Gen");
      break;
    }
    case Method::kPaypal:
      r->mutable_amount()->set_currency("USD");
      r->mutable_amount()->set_minor_units(99);
      r->set_region("US");
      r->mutable_paypal()->set_order_id("ORD-" + o.key_prefix + "-" + id);
      r->mutable_paypal()->set_payer_id("PAYERLOADGEN");
      break;
    case Method::kGcash:
      r->mutable_amount()->set_currency("PHP");
      r->mutable_amount()->set_minor_units(5500);
      r->set_region("PH");
      r->mutable_ewallet()->set_provider("gcash");
      r->mutable_ewallet()->set_account_id("lg" + id + "-0001");  // ...0001: the sandbox approves
      break;
  }
}

int ExpiryYear() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm.tm_year + 1900 + 3;
}

// One closed-loop caller: issues a call, records its outcome, issues the next.
class Slot {
 public:
  // One call's answer (--answers-out).
  struct Answer {
    std::string key;
    int code = 0;
    int status = -1;
    std::string recharge_id;
    bool replayed = false;
    uint32_t us = 0;
    int64_t sent_at_ms = 0;  // when it was sent, Unix milliseconds
  };

  Slot(Run& run, std::shared_ptr<grpc::Channel> channel, int target,
       const bench::v1::EchoRequest& echo_request)
      : run_(run), echo_request_(echo_request), exp_year_(ExpiryYear()), target_(target) {
    if (IsRechargeMode(run.options().mode)) {
      recharge_stub_ = recharge::v1::RechargeGateway::NewStub(channel);
    } else {
      echo_stub_ = bench::v1::Echo::NewStub(channel);
    }
  }

  void Issue() {
    const Options& o = run_.options();
    context_ = std::make_unique<grpc::ClientContext>();
    context_->set_deadline(std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(
                               std::chrono::duration<double>(o.timeout_s)));
    if (!o.token.empty()) context_->AddMetadata("authorization", "Bearer " + o.token);
    sent_ = Clock::now();
    sent_at_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    if (IsRechargeMode(o.mode)) {
      const uint64_t n = run_.NextCall();
      method_ = MethodOf(o, o.mode == Mode::kReplay ? 0 : n);
      MakeRechargeRequest(o, n, exp_year_, &recharge_request_);
      recharge_response_.Clear();
      recharge_stub_->async()->RecordRecharge(context_.get(), &recharge_request_,
                                              &recharge_response_,
                                              [this](grpc::Status s) { OnDone(s); });
    } else {
      echo_response_.Clear();
      echo_stub_->async()->Echo(context_.get(), &echo_request_, &echo_response_,
                                [this](grpc::Status s) { OnDone(s); });
    }
  }

  const Counts& measured() const { return measured_; }
  const Counts& total() const { return total_; }
  const std::vector<Answer>& answers() const { return answers_; }
  int target() const { return target_; }
  const std::vector<uint32_t>& latencies_us() const { return latencies_us_; }

 private:
  void OnDone(const grpc::Status& status) {
    const Clock::time_point now = Clock::now();
    const bool measured = now >= run_.measure_start() && now < run_.measure_end();
    const int code = static_cast<int>(status.error_code());
    bool good = status.ok();
    int recharge_status = -1;
    bool replayed = false;
    bool unverified = false;
    bool degraded = false;
    const bool replay_mode = run_.options().mode == Mode::kReplay;
    if (status.ok() && IsRechargeMode(run_.options().mode)) {
      recharge_status = recharge_response_.status();
      if (recharge_status < 0 || recharge_status >= kRechargeStatuses) recharge_status = kRechargeStatuses - 1;
      replayed = recharge_response_.replayed();
      const bool approved = recharge_status == recharge::v1::RECHARGE_STATUS_APPROVED;
      unverified = approved && (recharge_response_.coins_credited() != 65 ||
                                recharge_response_.recharge_id().rfind("rch_", 0) != 0);
      // A decision taken by the fail mode skipped the fraud rules: not good.
      degraded = recharge_response_.fraud().degraded();
      good = approved && !unverified && !degraded && replayed == replay_mode;
    }
    for (Counts* c : {&total_, measured ? &measured_ : nullptr}) {
      if (c == nullptr) continue;
      ++c->calls;
      if (good) ++c->good;
      if (replayed) ++c->replayed;
      if (unverified) ++c->unverified;
      if (degraded) ++c->degraded;
      if (recharge_status == recharge::v1::RECHARGE_STATUS_APPROVED && !replayed) {
        ++c->approved_by_method[static_cast<size_t>(method_)];
      }
      if (code >= 0 && code < static_cast<int>(c->grpc.size())) ++c->grpc[code];
      else ++c->grpc[2];  // UNKNOWN
      if (recharge_status >= 0) ++c->recharge[recharge_status];
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - sent_).count();
    const auto us32 = static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX));
    if (measured) latencies_us_.push_back(us32);
    if (!run_.options().answers_out.empty() && IsRechargeMode(run_.options().mode)) {
      answers_.push_back({recharge_request_.idempotency_key(), code,
                          status.ok() ? static_cast<int>(recharge_response_.status()) : -1,
                          status.ok() ? recharge_response_.recharge_id() : "", replayed, us32,
                          sent_at_ms_});
    }
    if (now >= run_.measure_end()) {
      run_.SlotStopped();  // `this` is not touched after this line
      return;
    }
    if (!status.ok() && run_.options().error_pause_ms > 0) {
      // The next call after a pause, on gRPC's timer (no thread sleeps).
      pause_.Set(std::chrono::system_clock::now() +
                     std::chrono::duration_cast<std::chrono::system_clock::duration>(
                         std::chrono::duration<double, std::milli>(run_.options().error_pause_ms)),
                 [this](bool) { Issue(); });
      return;
    }
    Issue();
  }

  Run& run_;
  std::unique_ptr<recharge::v1::RechargeGateway::Stub> recharge_stub_;
  std::unique_ptr<bench::v1::Echo::Stub> echo_stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  recharge::v1::RecordRechargeRequest recharge_request_;
  recharge::v1::RecordRechargeResponse recharge_response_;
  bench::v1::EchoRequest echo_request_;
  bench::v1::EchoResponse echo_response_;
  const int exp_year_;
  const int target_;
  grpc::Alarm pause_;
  std::vector<Answer> answers_;
  Method method_ = Method::kCard;
  Clock::time_point sent_;
  int64_t sent_at_ms_ = 0;
  Counts measured_;
  Counts total_;
  std::vector<uint32_t> latencies_us_;
};

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// The q-quantile (0 < q <= 1) of sorted samples, in ms; 0 if there are none.
double QuantileMs(const std::vector<uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1] / 1000.0;
}

double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

nlohmann::json CountsJson(const Counts& c, Mode mode) {
  nlohmann::json grpc = nlohmann::json::object();
  for (size_t i = 0; i < c.grpc.size(); ++i) {
    if (c.grpc[i] > 0) grpc[std::string(recharge::GrpcCodeName(static_cast<grpc::StatusCode>(i)))] = c.grpc[i];
  }
  nlohmann::json j = {{"calls", c.calls},
                      {"good", c.good},
                      {"errors", c.calls - c.grpc[0]},
                      {"grpc_status", grpc}};
  if (IsRechargeMode(mode)) {
    nlohmann::json rs = nlohmann::json::object();
    for (int i = 0; i < kRechargeStatuses; ++i) {
      if (c.recharge[i] == 0) continue;
      const std::string name = i < kRechargeStatuses - 1
                                   ? recharge::v1::RechargeStatus_Name(i)
                                   : std::string("UNKNOWN_VALUE");
      rs[name.rfind("RECHARGE_STATUS_", 0) == 0 ? name.substr(16) : name] = c.recharge[i];
    }
    j["recharge_status"] = rs;
    j["replayed"] = c.replayed;
    j["unverified"] = c.unverified;
    j["degraded"] = c.degraded;
    j["approved_new"] = {{"card", c.approved_by_method[0]},
                         {"paypal", c.approved_by_method[1]},
                         {"gcash", c.approved_by_method[2]}};
  }
  return j;
}

std::string CountsLine(const nlohmann::json& counts) {
  std::string out;
  for (const auto& [name, n] : counts.items()) {
    if (!out.empty()) out += ", ";
    out += name + " " + n.dump();
  }
  return out.empty() ? "-" : out;
}

int Main(int argc, char** argv) {
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex (gRPC's
  // locks) runs deadlock detection, a graph update per lock: ~3% of the
  // gateway's CPU in bench/README.md's profile. Off, as in release builds.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // SIGINT and SIGTERM end the run early (sigtimedwait in Main); blocked
  // before gRPC starts its threads, which inherit the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  Options o;
  if (std::string err = ParseOptions(argc, argv, &o); !err.empty()) {
    std::fprintf(stderr, "loadgen: %s\n", err.c_str());
    return 2;
  }
  const char* mode_name = o.mode == Mode::kRecharge ? "recharge"
                          : o.mode == Mode::kReplay ? "replay" : "echo";

  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.ca_file.empty()) {
    std::ifstream in(o.ca_file);
    if (!in) {
      std::fprintf(stderr, "loadgen: cannot read --ca-file %s\n", o.ca_file.c_str());
      return 2;
    }
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    creds = grpc::SslCredentials(ssl);
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < o.channels; ++i) {
    grpc::ChannelArguments args;
    // A channel of its own connection: no subchannel sharing between them.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    // A target that went away is tried again within a second of coming back
    // (gRPC's default backoff grows to two minutes), as an app server
    // behind a restarted replica would want.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt("loadgen.channel", i);
    channels.push_back(grpc::CreateCustomChannel(o.targets[i % o.targets.size()], creds, args));
  }
  for (size_t i = 0; i < channels.size(); ++i) {
    if (!channels[i]->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
      std::fprintf(stderr, "loadgen: cannot connect to %s within 5 s\n",
                   o.targets[i % o.targets.size()].c_str());
      return 1;
    }
  }

  recharge::v1::RecordRechargeRequest recharge_request;
  MakeRechargeRequest(o, 1'000'000, ExpiryYear(), &recharge_request);
  bench::v1::EchoRequest echo_request;
  const int payload = o.payload_bytes >= 0 ? o.payload_bytes
                                           : static_cast<int>(recharge_request.ByteSizeLong());
  echo_request.set_payload(std::string(static_cast<size_t>(payload), 'x'));

  if (o.mode == Mode::kReplay) {
    // Record the one recharge first: every measured call is then its replay.
    MakeRechargeRequest(o, 0, ExpiryYear(), &recharge_request);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!o.token.empty()) ctx.AddMetadata("authorization", "Bearer " + o.token);
    recharge::v1::RecordRechargeResponse first;
    const grpc::Status s =
        recharge::v1::RechargeGateway::NewStub(channels[0])->RecordRecharge(&ctx, recharge_request, &first);
    if (!s.ok() || first.status() != recharge::v1::RECHARGE_STATUS_APPROVED) {
      std::fprintf(stderr, "loadgen: the recharge to replay was not approved: %s %s\n",
                   s.error_message().c_str(), recharge::v1::RechargeStatus_Name(first.status()).c_str());
      return 1;
    }
  }

  const Clock::time_point start = Clock::now();
  Run run(o, start);
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < o.concurrency; ++i) {
    const size_t ch = static_cast<size_t>(i) % channels.size();
    slots.push_back(std::make_unique<Slot>(run, channels[ch], static_cast<int>(ch % o.targets.size()),
                                           echo_request));
  }
  for (auto& slot : slots) slot->Issue();

  std::this_thread::sleep_until(run.measure_start());
  const double cpu0 = CpuSeconds();
  // Until the end of the measured window, or SIGINT / SIGTERM (blocked in
  // every thread, taken here), which end the run early: the answers so far
  // are still reported and written.
  {
    const auto left = run.measure_end() - Clock::now();
    if (left > Clock::duration::zero()) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      timespec wait{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
      if (sigtimedwait(&stop_signals, nullptr, &wait) > 0) run.EndNow();
    }
  }
  const double cpu1 = CpuSeconds();
  const Clock::time_point drain_deadline = run.measure_end() + Run::ToDuration(o.timeout_s + 5);
  if (!run.WaitAllStopped(o.concurrency, drain_deadline)) {
    // Calls are still in flight past their deadline: the slots cannot be
    // freed safely, so report what we have and leave without cleanup.
    std::fprintf(stderr, "loadgen: calls still in flight %.0f s after the end; exiting\n",
                 o.timeout_s + 5);
    std::fflush(stdout);
    std::_Exit(1);
  }

  Counts measured, total;
  std::vector<uint32_t> lat;
  for (const auto& slot : slots) {
    measured.Add(slot->measured());
    total.Add(slot->total());
    lat.insert(lat.end(), slot->latencies_us().begin(), slot->latencies_us().end());
  }
  std::sort(lat.begin(), lat.end());
  double mean_ms = 0;
  for (uint32_t v : lat) mean_ms += v;
  if (!lat.empty()) mean_ms = mean_ms / static_cast<double>(lat.size()) / 1000.0;

  // The measured window as it was (shorter if a signal ended the run).
  const double window = std::max(
      1e-3, std::chrono::duration<double>(run.measure_end() - run.measure_start()).count());
  nlohmann::json latency = {{"p50", Round3(QuantileMs(lat, 0.50))},
                            {"p90", Round3(QuantileMs(lat, 0.90))},
                            {"p99", Round3(QuantileMs(lat, 0.99))},
                            {"p999", Round3(QuantileMs(lat, 0.999))},
                            {"max", Round3(lat.empty() ? 0 : lat.back() / 1000.0)},
                            {"mean", Round3(mean_ms)}};
  nlohmann::json summary = {
      {"mode", mode_name},
      {"target", o.target},
      {"concurrency", o.concurrency},
      {"channels", o.channels},
      {"warmup_s", o.warmup_s},
      {"duration_s", Round3(window)},  // as run (a signal may end it early)
      {"key_prefix", IsRechargeMode(o.mode) ? o.key_prefix : ""},
      {"mix", {{"card", o.mix[0]}, {"paypal", o.mix[1]}, {"gcash", o.mix[2]}}},
      // --mode replay: the one recharge recorded (approved) before the slots start.
      {"primed_approved", o.mode == Mode::kReplay ? 1 : 0},
      {"payload_bytes", o.mode == Mode::kEcho ? payload : 0},
      {"throughput", Round3(static_cast<double>(measured.calls) / window)},
      {"good_throughput", Round3(static_cast<double>(measured.good) / window)},
      {"latency_ms", latency},
      {"loadgen_cpu_cores", Round3((cpu1 - cpu0) / window)},
      {"measured", CountsJson(measured, o.mode)},
      {"total", CountsJson(total, o.mode)},
  };

  const nlohmann::json& m = summary["measured"];
  std::printf("loadgen: mode=%s target=%s concurrency=%d channels=%d warmup=%gs duration=%gs\n",
              mode_name, o.target.c_str(), o.concurrency, o.channels, o.warmup_s, o.duration_s);
  std::printf("  calls        %llu in the measured window (%llu in the whole run, warm-up and drain included)\n",
              static_cast<unsigned long long>(measured.calls),
              static_cast<unsigned long long>(total.calls));
  std::printf("  throughput   %.1f calls/s, good %.1f calls/s, errors %llu\n",
              static_cast<double>(measured.calls) / window,
              static_cast<double>(measured.good) / window,
              static_cast<unsigned long long>(measured.calls - measured.grpc[0]));
  std::printf("  latency ms   p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (all completed calls)\n",
              latency["p50"].get<double>(), latency["p90"].get<double>(),
              latency["p99"].get<double>(), latency["p999"].get<double>(),
              latency["max"].get<double>());
  std::printf("  grpc status  %s\n", CountsLine(m["grpc_status"]).c_str());
  if (IsRechargeMode(o.mode)) {
    std::printf("  recharge     %s; replayed %llu; fraud decision degraded %llu\n",
                CountsLine(m["recharge_status"]).c_str(),
                static_cast<unsigned long long>(measured.replayed),
                static_cast<unsigned long long>(measured.degraded));
    std::printf("  whole run    %s\n", CountsLine(summary["total"]["recharge_status"]).c_str());
  }
  std::printf("  loadgen cpu  %.2f cores\n", (cpu1 - cpu0) / window);
  const std::string line = summary.dump();
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (!o.answers_out.empty()) {
    std::ofstream answers(o.answers_out);
    for (const auto& slot : slots) {
      for (const Slot::Answer& a : slot->answers()) {
        answers << nlohmann::json{{"key", a.key},
                                  {"target", o.targets[static_cast<size_t>(slot->target())]},
                                  {"code", a.code},
                                  {"status", a.status},
                                  {"recharge_id", a.recharge_id},
                                  {"replayed", a.replayed},
                                  {"ms", Round3(a.us / 1000.0)},
                                  {"sent_at_ms", a.sent_at_ms}}
                       .dump()
                << "\n";
      }
    }
  }
  if (!o.json_out.empty()) {
    std::ofstream out(o.json_out);
    out << line << "\n";
    if (!out) {
      std::fprintf(stderr, "loadgen: cannot write %s\n", o.json_out.c_str());
      return 1;
    }
  }
  return measured.good > 0 ? 0 : 1;
}

}  // namespace
}  // namespace loadgen

int main(int argc, char** argv) { return loadgen::Main(argc, argv); }
