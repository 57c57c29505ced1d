// RedisCluster: a real throwaway Redis Cluster for integration tests — three
// masters (and one replica each, if asked) on free loopback ports, joined
// with `redis-cli --cluster create`, nothing persisted, files in a temp dir;
// every process stopped (and reaped) and the dir removed on destruction. The
// constructor waits, with a bounded deadline, until every node says
// cluster_state:ok (and every replica is in sync).
//
// It also moves one slot from a master to another the way
// `redis-cli --cluster reshard` does, in steps, so that a test can stop half
// way: BeginMigration (IMPORTING on the target, MIGRATING on the source: keys
// not yet moved are served by the source, the others answer -ASK), MoveKeys
// (MIGRATE some keys), FinishMigration (the remaining keys, then SETSLOT
// NODE on every master: -MOVED from then on).
//
// Set-up and checks use plain blocking hiredis connections (with a timeout):
// tests only, never the code under test.
#pragma once

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/redis_client.h"

namespace recharge::testing {

// Whether `port` can be bound on loopback now.
inline bool LoopbackPortFree(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return free;
}

// A port P in [20000, 30000) such that P and its cluster bus port P + 10000
// are both free, and neither is in `taken` (below the kernel's ephemeral
// range, 32768+, so outgoing connections do not take them meanwhile).
inline uint16_t FreeClusterPort(std::set<uint16_t>* taken) {
  static thread_local std::mt19937 random(std::random_device{}());
  std::uniform_int_distribution<int> pick(20000, 29999);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto port = static_cast<uint16_t>(pick(random));
    const auto bus = static_cast<uint16_t>(port + 10000);
    if (taken->count(port) || taken->count(bus)) continue;
    if (!LoopbackPortFree(port) || !LoopbackPortFree(bus)) continue;
    taken->insert(port);
    taken->insert(bus);
    return port;
  }
  throw std::runtime_error("no free port pair (P, P + 10000) for a cluster node");
}

class RedisCluster {
 public:
  struct Options {
    bool replicas = false;       // one replica per master (6 nodes)
    int node_timeout_ms = 5000;  // cluster-node-timeout: how soon a dead master fails over
  };

  RedisCluster() : RedisCluster(Options{}) {}
  explicit RedisCluster(Options options) : options_(options) {
    char dir[] = "/tmp/redis-cluster-XXXXXX";
    if (mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = dir;
    const int nodes = options_.replicas ? 6 : 3;
    std::set<uint16_t> taken;
    for (int i = 0; i < nodes; ++i) ports_.push_back(FreeClusterPort(&taken));
    pids_.assign(nodes, -1);
    try {
      for (int i = 0; i < nodes; ++i) Start(i);
      Create();
      WaitUntilOk(std::chrono::seconds(20));
      for (int i = 0; i < nodes; ++i) ids_.push_back(Run(i, {"CLUSTER", "MYID"}).str);
    } catch (...) {
      StopAll();
      throw;
    }
  }

  ~RedisCluster() {
    StopAll();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  int size() const { return static_cast<int>(ports_.size()); }
  uint16_t port(int i) const { return ports_.at(i); }
  std::string address(int i) const { return "127.0.0.1:" + std::to_string(port(i)); }
  const std::string& id(int i) const { return ids_.at(i); }
  // "host:port,host:port,..." of every node (ParseRedisAddresses).
  std::string seeds() const {
    std::string out;
    for (int i = 0; i < size(); ++i) out += (i ? "," : "") + address(i);
    return out;
  }

  // Runs one command on node `i` over a blocking connection with a 5 s
  // timeout. A connection failure is a Type::kError reply naming the node.
  RedisReply Run(int i, const std::vector<std::string>& args) const {
    RedisReply out;
    out.type = RedisReply::Type::kError;
    timeval timeout{5, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port(i), timeout);
    if (c == nullptr || c->err) {
      out.str = "cannot connect to " + address(i);
    } else {
      redisSetTimeout(c, timeout);
      std::vector<const char*> argv;
      std::vector<size_t> argvlen;
      for (const std::string& a : args) {
        argv.push_back(a.data());
        argvlen.push_back(a.size());
      }
      auto* r = static_cast<redisReply*>(
          redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), argvlen.data()));
      if (r == nullptr) {
        out.str = "no reply from " + address(i);
      } else {
        out = CopyRedisReply(r);
        freeReplyObject(r);
      }
    }
    if (c != nullptr) redisFree(c);
    return out;
  }

  // CLUSTER KEYSLOT, asked of a running node.
  uint16_t KeySlot(const std::string& key) const {
    const RedisReply r = Run(AnyRunning(), {"CLUSTER", "KEYSLOT", key});
    if (r.type != RedisReply::Type::kInteger) throw std::runtime_error("CLUSTER KEYSLOT: " + r.str);
    return static_cast<uint16_t>(r.integer);
  }

  // The node serving `slot`, as `asked` (a running node by default) sees it.
  int Owner(uint16_t slot, int asked = -1) const {
    if (asked < 0) asked = AnyRunning();
    const RedisReply r = Run(asked, {"CLUSTER", "SLOTS"});
    for (const RedisReply& range : r.elements) {
      if (range.elements.size() < 3 || slot < range.elements[0].integer ||
          slot > range.elements[1].integer) {
        continue;
      }
      const int64_t port = range.elements[2].elements.at(1).integer;
      for (int i = 0; i < size(); ++i) {
        if (ports_[i] == port) return i;
      }
    }
    throw std::runtime_error("no node serves slot " + std::to_string(slot) + " in the view of " +
                             address(asked));
  }

  // The masters, as a running node sees them (the first three at creation).
  std::vector<int> Masters() const {
    std::vector<int> out;
    const RedisReply r = Run(AnyRunning(), {"CLUSTER", "SLOTS"});
    for (const RedisReply& range : r.elements) {
      const int64_t port = range.elements.at(2).elements.at(1).integer;
      for (int i = 0; i < size(); ++i) {
        if (ports_[i] == port && std::find(out.begin(), out.end(), i) == out.end())
          out.push_back(i);
      }
    }
    return out;
  }

  // Kills node `i` (SIGKILL: no goodbye to the cluster).
  void Stop(int i) {
    if (pids_.at(i) <= 0) return;
    kill(pids_[i], SIGKILL);
    waitpid(pids_[i], nullptr, 0);
    pids_[i] = -1;
  }
  bool running(int i) const { return pids_.at(i) > 0; }

  // Step 1: `to` imports `slot` from `from`, which starts migrating it.
  void BeginMigration(uint16_t slot, int from, int to) {
    Expect(to, {"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", id(from)}, "OK");
    Expect(from, {"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", id(to)}, "OK");
  }

  // Step 2: moves up to `max` keys of `slot` from `from` to `to` (MIGRATE);
  // returns how many were moved.
  int MoveKeys(uint16_t slot, int from, int to, int max) {
    const RedisReply keys =
        Run(from, {"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(max)});
    if (keys.type != RedisReply::Type::kArray) {
      throw std::runtime_error("CLUSTER GETKEYSINSLOT on " + address(from) + ": " + keys.str);
    }
    if (keys.elements.empty()) return 0;
    std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(port(to)), "", "0",
                                        "5000",    "KEYS"};
    for (const RedisReply& k : keys.elements) migrate.push_back(k.str);
    const RedisReply r = Run(from, migrate);
    if (r.type == RedisReply::Type::kError) {
      throw std::runtime_error("MIGRATE from " + address(from) + " to " + address(to) + ": " +
                               r.str);
    }
    return static_cast<int>(keys.elements.size());
  }

  // Step 3: the remaining keys, then `to` owns the slot on every master
  // (told to `to` first, then `from`, then the others, as redis-cli does).
  void FinishMigration(uint16_t slot, int from, int to) {
    while (MoveKeys(slot, from, to, 100) > 0) {
    }
    const std::vector<int> masters = Masters();
    std::vector<int> order = {to, from};
    for (int m : masters) {
      if (m != to && m != from) order.push_back(m);
    }
    for (int m : order) {
      if (running(m)) Expect(m, {"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", id(to)}, "OK");
    }
  }

  // BeginMigration, then FinishMigration.
  void MigrateSlot(uint16_t slot, int from, int to) {
    BeginMigration(slot, from, to);
    FinishMigration(slot, from, to);
  }

  // Waits until every running node says cluster_state:ok and every running
  // replica's link to its master is up.
  void WaitUntilOk(std::chrono::milliseconds within) const {
    const auto deadline = std::chrono::steady_clock::now() + within;
    std::string last;
    while (std::chrono::steady_clock::now() < deadline) {
      bool ok = true;
      for (int i = 0; i < size() && ok; ++i) {
        if (!running(i)) continue;
        const std::string info = Run(i, {"CLUSTER", "INFO"}).str;
        const std::string replication = Run(i, {"INFO", "replication"}).str;
        const bool replica = replication.find("role:slave") != std::string::npos;
        ok = info.find("cluster_state:ok") != std::string::npos &&
             (!replica || replication.find("master_link_status:up") != std::string::npos);
        if (!ok) last = address(i) + ": " + info.substr(0, 40);
      }
      if (ok) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a condition
    }
    throw std::runtime_error("the cluster did not reach cluster_state:ok (" + last + ")");
  }

 private:
  void Start(int i) {
    const std::string port = std::to_string(ports_[i]);
    const std::string conf = "nodes-" + port + ".conf";
    const std::string timeout = std::to_string(options_.node_timeout_ms);
    pids_[i] = fork();
    if (pids_[i] == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no server behind
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, STDOUT_FILENO);
      execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", conf.c_str(),
             "--cluster-node-timeout", timeout.c_str(), "--dir", dir_.c_str(), "--save", "",
             "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--daemonize", "no",
             "--loglevel", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Run(i, {"PING"}).str == "PONG") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a condition
    }
    throw std::runtime_error("redis-server did not start on " + address(i));
  }

  // redis-cli --cluster create, bounded by a deadline; its output goes to a
  // file in the temp dir, quoted in the error if it fails.
  void Create() {
    std::vector<std::string> args = {"redis-cli", "--cluster", "create"};
    for (int i = 0; i < size(); ++i) args.push_back(address(i));
    if (options_.replicas) {
      args.push_back("--cluster-replicas");
      args.push_back("1");
    }
    args.push_back("--cluster-yes");
    std::vector<char*> argv;  // made before fork: the child only execs
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = dir_ + "/create.log";
    const pid_t pid = fork();
    if (pid == 0) {
      const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
      execvp("redis-cli", argv.data());
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        throw std::runtime_error("redis-cli --cluster create took over 30 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a condition
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::string output;
      if (FILE* f = fopen(log.c_str(), "r")) {
        char buf[4096];
        output.assign(buf, fread(buf, 1, sizeof buf, f));
        fclose(f);
      }
      throw std::runtime_error("redis-cli --cluster create failed: " + output);
    }
  }

  void Expect(int i, const std::vector<std::string>& args, const std::string& want) const {
    const RedisReply r = Run(i, args);
    if (r.str != want) {
      std::string command;
      for (const std::string& a : args) command += (command.empty() ? "" : " ") + a;
      throw std::runtime_error(command + " on " + address(i) + ": " + r.str);
    }
  }

  int AnyRunning() const {
    for (int i = 0; i < size(); ++i) {
      if (running(i)) return i;
    }
    throw std::runtime_error("no cluster node is running");
  }

  void StopAll() {
    for (int i = 0; i < static_cast<int>(pids_.size()); ++i) Stop(i);
  }

  const Options options_;
  std::string dir_;
  std::vector<uint16_t> ports_;
  std::vector<pid_t> pids_;
  std::vector<std::string> ids_;
};

}  // namespace recharge::testing
