// recharge-gateway: the gRPC server. Loads the configuration, opens the
// ledger, builds the adapters, serves RechargeGateway and FraudAdmin (every
// call through the CallGate: callers, roles, rate limits, audit), the
// health service and reflection, over TLS/mTLS or, on loopback only,
// plaintext.
//
// Usage: recharge-gateway [--config configs/gateway.yaml] [--listen host:port]
//                         [--log-level debug|info|warn|error] (overrides log_level)
// SIGHUP: reload the fraud rules and the TLS certificate, key and client CA
// (for each, a bad file is refused and what was live stays live).
// SIGINT/SIGTERM: health goes NOT_SERVING, no new calls are taken, in-flight
// calls get `shutdown_grace` to finish, then the process exits 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "adapters/router.h"
#include "fraud/fraud_filter.h"
#include "fraud/rule_engine.h"
#include "gateway/admin_service.h"
#include "gateway/auth.h"
#include "gateway/call_gate.h"
#include "gateway/catalogue.h"
#include "gateway/config.h"
#include "gateway/reconciler.h"
#include "gateway/recharge_flow.h"
#include "gateway/server_tls.h"
#include "gateway/rules_sync.h"
#include "gateway/service.h"
#include "gateway/webhook_intake.h"
#include "io/asio.h"
#include "io/gateway_metrics.h"
#include "io/https_listener.h"
#include "io/log.h"
#include "io/redis_client.h"
#include "io/redis_cluster.h"
#include "io/strings.h"
#include "ledger/postgres/postgres_ledger_store.h"
#include "ledger/sqlite/sqlite_ledger_store.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

namespace recharge {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "recharge-gateway: %s\n", std::string(status.message()).c_str());
  return 2;
}

// Listener options for "host:port" (an IPv6 host in brackets). Errors name
// the value.
absl::StatusOr<HttpsListener::Options> ListenOptions(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  HttpsListener::Options options;
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(StrCat("bad listen address \"", listen, "\""));
  }
  options.host = listen.substr(0, colon);
  if (options.host.size() >= 2 && options.host.front() == '[' && options.host.back() == ']') {
    options.host = options.host.substr(1, options.host.size() - 2);
  }
  options.port = static_cast<uint16_t>(port);
  return options;
}

// The ledger the config names. PostgreSQL is opened (connected, migrated)
// on `io`, run for the while by a thread of its own: the io threads start
// later, and what the store left pending (its writer) carries on with them.
absl::StatusOr<std::unique_ptr<LedgerStore>> OpenLedger(asio::io_context& io,
                                                        const GatewayConfig& config) {
  if (config.ledger_backend == "sqlite") {
    absl::StatusOr<std::unique_ptr<SqliteLedgerStore>> sqlite = SqliteLedgerStore::Open(
        {.path = config.ledger_path,
         .group_commit_max = static_cast<size_t>(config.group_commit_max)});
    if (!sqlite.ok()) return sqlite.status();
    return std::unique_ptr<LedgerStore>(*std::move(sqlite));
  }
  PostgresLedgerStore::Options options{
      .conninfo = config.ledger_postgres_dsn,
      .password = std::string(config.ledger_postgres_password.Reveal()),
      .read_connections = config.ledger_postgres_read_connections,
      .group_commit_max = static_cast<size_t>(config.group_commit_max),
      .timeout = config.ledger_postgres_timeout};
  auto work = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });
  absl::StatusOr<std::unique_ptr<PostgresLedgerStore>> opened =
      asio::co_spawn(io, PostgresLedgerStore::Open(io.get_executor(), std::move(options)),
                     asio::use_future)
          .get();
  work.reset();
  io.stop();
  runner.join();
  io.restart();
  if (!opened.ok()) return opened.status();
  return std::unique_ptr<LedgerStore>(*std::move(opened));
}

int Main(int argc, char** argv) {
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex (gRPC's
  // locks) runs deadlock detection, a graph update per lock: ~3% of the
  // gateway's CPU in bench/README.md's profile. Off, as in release builds.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::string config_path = "configs/gateway.yaml";
  std::optional<std::string> listen_override;
  std::optional<LogLevel> log_level_override;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg == "--listen" && i + 1 < argc) {
      listen_override = argv[++i];
    } else if (arg == "--log-level" && i + 1 < argc) {
      log_level_override = ParseLogLevel(argv[++i]);
      if (!log_level_override) {
        std::fprintf(stderr,
                     "recharge-gateway: --log-level: \"%s\" is not debug, info, warn or error\n",
                     argv[i]);
        return 2;
      }
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: recharge-gateway [--config FILE] [--listen HOST:PORT] "
          "[--log-level debug|info|warn|error]\n");
      return 0;
    } else {
      std::fprintf(stderr, "recharge-gateway: unknown argument \"%s\" (see --help)\n", arg.c_str());
      return 2;
    }
  }

  // Signals are taken by the main thread alone (sigwait below). A parent may
  // have left SIGINT ignored (background jobs of a shell): restore it.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<GatewayConfig> config = GatewayConfig::Load(config_path);
  if (!config.ok()) return Fail(config.status());
  const int threads = config->io_threads > 0
                          ? config->io_threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  // Declared before everything that owns Asio objects (the adapters'
  // connection pools), so that it is destroyed after them.
  asio::io_context io(threads);

  SetLogLevel(log_level_override ? *log_level_override : *ParseLogLevel(config->log_level));
  if (listen_override) config->listen = *listen_override;
  if (absl::Status s = CheckPlaintextListen(config->transport, config->listen); !s.ok()) {
    return Fail(absl::InvalidArgumentError(StrCat("transport: ", s.message())));
  }
  absl::StatusOr<std::unique_ptr<CallerRegistry>> callers = CallerRegistry::Create(config->callers);
  if (!callers.ok()) return Fail(callers.status());
  std::unique_ptr<ServerTls> tls;
  if (config->transport != Transport::kPlaintext) {
    absl::StatusOr<std::unique_ptr<ServerTls>> made = ServerTls::Create(
        {.cert_file = config->tls_cert_file,
         .key_file = config->tls_key_file,
         .client_ca_file = config->transport == Transport::kMtls ? config->tls_client_ca_file : ""});
    if (!made.ok()) return Fail(made.status());
    tls = *std::move(made);
  }
  absl::StatusOr<Catalogue> catalogue = Catalogue::Load(config->catalogue_path);
  if (!catalogue.ok()) return Fail(catalogue.status());
  absl::StatusOr<std::unique_ptr<Router>> router = Router::Load(config->adapters_path);
  if (!router.ok()) return Fail(router.status());
  absl::StatusOr<Secret> fingerprint_key = LoadFingerprintKey(config->fingerprint_key_file);
  if (!fingerprint_key.ok()) return Fail(fingerprint_key.status());
  absl::StatusOr<std::unique_ptr<LedgerStore>> ledger = OpenLedger(io, *config);
  if (!ledger.ok()) return Fail(ledger.status());

  // The fraud filter: the rule engine over Redis counters, or the named
  // allow-all policy when no rule file is configured.
  // One Redis server, or a Redis Cluster when redis.cluster names its seeds.
  std::unique_ptr<RedisCommands> redis_commands;
  if (config->redis_cluster.empty()) {
    absl::StatusOr<RedisClient::Options> redis_options = ParseRedisAddress(config->redis_address);
    if (!redis_options.ok()) return Fail(redis_options.status());
    redis_commands = std::make_unique<RedisClient>(io.get_executor(), *redis_options);
  } else {
    absl::StatusOr<std::vector<RedisClient::Options>> seeds = ParseRedisAddresses(config->redis_cluster);
    if (!seeds.ok()) return Fail(seeds.status());
    RedisClusterClient::Options cluster_options;
    cluster_options.seeds = *std::move(seeds);
    redis_commands = std::make_unique<RedisClusterClient>(io.get_executor(), std::move(cluster_options));
  }
  RedisCommands& redis = *redis_commands;
  RedisCounterStore counters(redis, config->redis_prefix, config->redis_timeout);
  std::unique_ptr<RuleEngine> engine;
  AllowAllFilter allow_all;
  FraudFilter* fraud = &allow_all;
  if (!config->fraud_rules_path.empty()) {
    absl::StatusOr<std::shared_ptr<const rules::RuleSet>> rule_set =
        rules::RuleSet::LoadFile(config->fraud_rules_path);
    if (!rule_set.ok()) return Fail(rule_set.status());
    engine = std::make_unique<RuleEngine>(counters, *std::move(rule_set), config->fraud_rules_path);
    fraud = engine.get();
  } else {
    LogWarn("fraud_rules_not_configured", {{"policy", "allow-all"}});
  }

  Reconciler reconciler(**ledger, **router, *fraud, config->recovery_settle_after,
                        config->review_hold_expiry);
  RechargeFlow flow(*catalogue, **ledger, **router, *fraud, reconciler, *std::move(fingerprint_key),
                    std::make_shared<AsyncSemaphore>(
                        static_cast<size_t>(config->max_recharges_deciding),
                        static_cast<size_t>(config->max_recharges_waiting)),
                    config->review_hold_expiry);

  (*router)->ExportCircuitStates();
  Metrics().build_info.With({RECHARGE_BUILD_VERSION}).Set(1);
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back([&io] { io.run(); });

  // Keys a crash left behind are resolved first thing, then periodically;
  // key retention is enforced on the same beat.
  asio::co_spawn(io, reconciler.Run(config->recovery_interval), asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        for (;;) {
          absl::StatusOr<int64_t> purged =
              co_await (*ledger)->PurgeKeys(std::chrono::system_clock::now() - config->key_retention);
          if (purged.ok() && *purged > 0) LogInfo("keys_purged", {{"count", std::to_string(*purged)}});
          absl::StatusOr<int64_t> events =
              co_await (*ledger)->PurgeEvents(std::chrono::system_clock::now() - config->event_retention);
          if (events.ok() && *events > 0) LogInfo("events_purged", {{"count", std::to_string(*events)}});
          timer.expires_after(std::chrono::minutes(10));
          co_await timer.async_wait(asio::use_awaitable);
        }
      },
      asio::detached);

  CallGate gate(io, **callers, **ledger,
                {.call_deadline = config->call_deadline,
                 .trust_client_certificates = config->transport == Transport::kMtls});
  EventFeed feed(io, **ledger, {});
  RefundFlow refunds(**ledger, **router, reconciler);
  // Provider notifications: their own HTTPS port, handled on the io threads.
  WebhookIntake intake(**ledger, **router, *fraud, config->review_hold_expiry);
  std::unique_ptr<HttpsListener> webhooks;
  auto stop_pool_and_fail = [&](absl::Status status) {
    work.reset();
    io.stop();
    for (std::thread& t : pool) t.join();
    return Fail(status);
  };
  if (!config->webhook_listen.empty()) {
    absl::StatusOr<HttpsListener::Options> options = ListenOptions(config->webhook_listen);
    if (!options.ok()) return stop_pool_and_fail(options.status());
    options->cert_file = config->webhook_cert_file;
    options->key_file = config->webhook_key_file;
    options->max_body_bytes = static_cast<size_t>(config->webhook_max_body_bytes);
    options->max_connections = static_cast<int>(config->webhook_max_connections);
    options->rate_per_second = static_cast<double>(config->webhook_rate_per_second);
    options->rate_burst = static_cast<double>(config->webhook_rate_burst);
    absl::StatusOr<std::unique_ptr<HttpsListener>> started = HttpsListener::Start(
        io, *std::move(options),
        [&intake](const HttpRequestView& request) { return intake.Handle(request); });
    if (!started.ok()) {
      return stop_pool_and_fail(absl::Status(started.status().code(),
                                             StrCat("webhooks: ", started.status().message())));
    }
    webhooks = *std::move(started);
    LogInfo("webhooks_listening", {{"listen", config->webhook_listen},
                                   {"port", std::to_string(webhooks->port())}});
  }
  // Prometheus scrapes: plain HTTP on loopback, GET /metrics only.
  std::unique_ptr<HttpsListener> metrics_port;
  if (!config->metrics_listen.empty()) {
    absl::StatusOr<HttpsListener::Options> options = ListenOptions(config->metrics_listen);
    if (!options.ok()) return stop_pool_and_fail(options.status());
    options->plaintext = true;
    options->log_name = "metrics";
    options->rate_per_second = 0;  // loopback: no limit
    options->max_connections = 16;
    absl::StatusOr<std::unique_ptr<HttpsListener>> started = HttpsListener::Start(
        io, *std::move(options), [](const HttpRequestView& request) -> asio::awaitable<HttpAnswer> {
          if (request.path != "/metrics") co_return HttpAnswer{404, "not found\n", "text/plain"};
          if (request.method != "GET") {
            co_return HttpAnswer{405, "GET /metrics\n", "text/plain"};
          }
          co_return HttpAnswer{200, metrics::Registry::Default().Render(),
                               "text/plain; version=0.0.4; charset=utf-8"};
        });
    if (!started.ok()) {
      return stop_pool_and_fail(absl::Status(started.status().code(),
                                             StrCat("metrics: ", started.status().message())));
    }
    metrics_port = *std::move(started);
    LogInfo("metrics_listening", {{"listen", config->metrics_listen},
                                  {"port", std::to_string(metrics_port->port())}});
  }
  RechargeGatewayService gateway(gate, flow, refunds, **ledger, *catalogue, feed);
  // Replicas sharing Redis follow each other's rule reloads.
  std::unique_ptr<RulesSync> rules_sync;
  if (engine) {
    rules_sync = std::make_unique<RulesSync>(redis, *engine, config->redis_prefix,
                                             std::chrono::seconds(1), config->redis_timeout);
    asio::co_spawn(io, rules_sync->Run(), asio::detached);
  }
  FraudAdminService fraud_admin(gate, engine.get(), **ledger, **router, rules_sync.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(config->listen,
                           tls ? tls->credentials() : grpc::InsecureServerCredentials(),
                           &bound_port);
  // A request larger than this is refused by gRPC itself (RESOURCE_EXHAUSTED)
  // before any of it is parsed.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config->max_request_bytes));
  // HTTP/2 pings every 30 s keep an idle WatchRecharges stream (and its
  // connection) alive through proxies and NAT, and find a dead peer.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(&gateway);
  builder.RegisterService(&fraud_admin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    work.reset();
    io.stop();
    for (std::thread& t : pool) t.join();
    return Fail(absl::UnavailableError(StrCat("cannot listen on ", config->listen)));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  LogInfo("serving", {{"listen", config->listen},
                      {"port", std::to_string(bound_port)},
                      {"io_threads", std::to_string(threads)},
                      {"ledger", config->ledger_backend == "sqlite"
                                     ? config->ledger_path
                                     : StrCat("postgres ", config->ledger_postgres_dsn)},
                      {"rules", engine ? engine->rules()->version() : "allow-all"},
                      {"redis", config->redis_cluster.empty()
                                    ? config->redis_address
                                    : StrCat("cluster ", config->redis_cluster)},
                      {"transport", config->transport == Transport::kPlaintext ? "plaintext"
                                    : config->transport == Transport::kTls     ? "tls"
                                                                               : "mtls"},
                      {"callers", std::to_string((*callers)->size())},
                      {"max_request_bytes", std::to_string(config->max_request_bytes)}});

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    // SIGHUP: reload the fraud rules and the TLS material; a broken file
    // leaves what was live.
    if (engine && engine->Reload().ok()) {
      asio::co_spawn(io, rules_sync->Announce(), asio::detached);
    }
    if (tls) {
      absl::StatusOr<std::string> served = tls->Reload();
      if (served.ok()) {
        LogInfo("tls_reloaded", {{"certificate", *served}});
      } else {
        LogError("tls_reload_failed", {{"error", std::string(served.status().message())},
                                       {"kept", "the certificate served before"}});
      }
    }
  }
  LogInfo("shutting_down", {{"signal", strsignal(sig)}});
  server->GetHealthCheckService()->SetServingStatus(false);
  gateway.StartDraining();
  feed.Shutdown();  // watchers end now, told to resume from their cursor
  if (metrics_port) metrics_port->Stop();
  if (webhooks) webhooks->Stop();  // notifications in progress finish; new ones are refused
  server->Shutdown(std::chrono::system_clock::now() + config->shutdown_grace);
  server->Wait();
  if (webhooks) {
    // Unanswered notifications are sent again by the provider.
    (void)webhooks->WaitDrained(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  }
  if (metrics_port) {
    (void)metrics_port->WaitDrained(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  }
  work.reset();
  io.stop();
  for (std::thread& t : pool) t.join();
  ledger->reset();  // commits whatever is queued
  LogInfo("stopped");
  return 0;
}

}  // namespace
}  // namespace recharge

int main(int argc, char** argv) { return recharge::Main(argc, argv); }
