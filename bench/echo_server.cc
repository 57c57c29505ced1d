// bench-echo-server: the baseline for the RecordRecharge benchmark. A bare
// gRPC echo service built the way the gateway's server is (DESIGN §3): the
// callback API, each call run as a C++20 coroutine co_spawned on an Asio
// io_context with one thread per core, the reactor finished from the
// coroutine's completion. Comparing the two isolates what the gateway's
// flow (validation, ledger, adapter, sandbox) adds to the same plumbing.
//
// With --redis HOST:PORT every call also runs one EVALSHA (a small Lua
// script: INCR and PEXPIRE of one counter key) through the gateway's own
// async Redis client before answering: the reference for a server that does
// one Redis round trip per call, as the gateway's fraud filter does.
//
// Usage: bench-echo-server [--listen 127.0.0.1:50052] [--threads N (0 = one per core)]
//                          [--redis HOST:PORT]
// SIGINT/SIGTERM: stops taking calls, lets in-flight ones finish, exits 0.
#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "echo.grpc.pb.h"
#include "io/asio.h"
#include "io/redis_client.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

namespace bench {
namespace {

class EchoService final : public bench::v1::Echo::CallbackService {
 public:
  // `redis` null: a bare echo. Otherwise each call runs EVALSHA `sha`.
  EchoService(asio::io_context& io, recharge::RedisClient* redis, std::string sha)
      : io_(io), redis_(redis), sha_(std::move(sha)) {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx,
                                 const bench::v1::EchoRequest* request,
                                 bench::v1::EchoResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    // Same shape as the gateway's Spawn(): the body is a coroutine, the
    // completion handler finishes the reactor exactly once.
    asio::co_spawn(
        io_,
        [this, request, response]() -> asio::awaitable<grpc::Status> {
          if (redis_ != nullptr) {
            const uint64_t n = calls_.fetch_add(1, std::memory_order_relaxed);
            std::vector<std::string> command = {"EVALSHA", sha_, "1",
                                                "bench:echo:" + std::to_string(n % 1024), "60000"};
            absl::StatusOr<recharge::RedisReply> reply = co_await redis_->Command(
                std::move(command), std::chrono::steady_clock::now() + std::chrono::seconds(1));
            if (!reply.ok() || reply->type != recharge::RedisReply::Type::kInteger) {
              co_return grpc::Status(grpc::StatusCode::UNAVAILABLE, "redis");
            }
          }
          response->set_payload(request->payload());
          co_return grpc::Status::OK;
        },
        [reactor](std::exception_ptr e, grpc::Status status) {
          if (e) {
            reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, "internal error"));
            return;
          }
          reactor->Finish(status);
        });
    return reactor;
  }

 private:
  asio::io_context& io_;
  recharge::RedisClient* redis_;
  const std::string sha_;
  std::atomic<uint64_t> calls_{0};
};

constexpr const char* kCounterScript =
    "local n = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], ARGV[1]) return n";

int Main(int argc, char** argv) {
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex (gRPC's
  // locks) runs deadlock detection, a graph update per lock: ~3% of the
  // gateway's CPU in bench/README.md's profile. Off, as in release builds.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::string listen = "127.0.0.1:50052";
  int threads = 0;
  std::string redis_address;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (arg == "--redis" && i + 1 < argc) {
      redis_address = argv[++i];
    } else if (arg == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--help" || arg == "-h") {
      std::printf("usage: bench-echo-server [--listen HOST:PORT] [--threads N] [--redis HOST:PORT]\n");
      return 0;
    } else {
      std::fprintf(stderr, "bench-echo-server: unknown argument \"%s\" (see --help)\n",
                   arg.c_str());
      return 2;
    }
  }
  if (threads <= 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  // Signals are taken by the main thread alone (sigwait below); a parent
  // shell may have left SIGINT ignored for background jobs.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  asio::io_context io(threads);
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  auto stop_pool = [&] {
    work.reset();
    io.stop();
    for (std::thread& t : pool) t.join();
  };

  std::unique_ptr<recharge::RedisClient> redis;
  std::string sha;
  if (!redis_address.empty()) {
    absl::StatusOr<recharge::RedisClient::Options> ro = recharge::ParseRedisAddress(redis_address);
    if (!ro.ok()) {
      stop_pool();
      std::fprintf(stderr, "bench-echo-server: --redis: %s\n", std::string(ro.status().message()).c_str());
      return 2;
    }
    redis = std::make_unique<recharge::RedisClient>(io.get_executor(), *ro);
    std::future<absl::StatusOr<recharge::RedisReply>> loaded = asio::co_spawn(
        io, redis->Command({"SCRIPT", "LOAD", kCounterScript},
                           std::chrono::steady_clock::now() + std::chrono::seconds(5)),
        asio::use_future);
    absl::StatusOr<recharge::RedisReply> r = loaded.get();
    if (!r.ok() || r->type != recharge::RedisReply::Type::kString) {
      stop_pool();
      std::fprintf(stderr, "bench-echo-server: cannot load the script into Redis at %s\n",
                   redis_address.c_str());
      return 2;
    }
    sha = r->str;
  }
  EchoService service(io, redis.get(), sha);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    stop_pool();
    std::fprintf(stderr, "bench-echo-server: cannot listen on %s\n", listen.c_str());
    return 2;
  }
  std::fprintf(stderr, "bench-echo-server: serving on %s (port %d, %d io threads)\n",
               listen.c_str(), bound_port, threads);

  int sig = 0;
  sigwait(&signals, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  stop_pool();
  redis.reset();  // after the io threads: RedisClient requires it
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) { return bench::Main(argc, argv); }
