// PostgresServer: a real, throwaway PostgreSQL cluster for tests (initdb in a
// temp directory, the server on a free loopback port, trust authentication,
// fsync off: nothing here is meant to survive the test). Run as root, the
// server runs as the `postgres` user (PostgreSQL refuses root). Stopped and
// removed on destruction. Start() waits, with a bounded deadline, until the
// server accepts connections.
#pragma once

#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/integration/redis_server.h"  // FreePort

namespace recharge::testing {

class PostgresServer {
 public:
  PostgresServer() : port_(FreePort()) {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() /
           ("pg-test-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(dir_);
    if (geteuid() == 0) {
      const passwd* pw = getpwnam("postgres");
      if (pw == nullptr) throw std::runtime_error("running as root needs the postgres user");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (chown(dir_.c_str(), uid_, gid_) != 0) throw std::runtime_error("chown " + dir_.string());
    }
    bin_ = FindBinDir();
    Spawn({bin_ + "/initdb", "-D", (dir_ / "data").string(), "-U", "postgres", "--auth=trust",
           "-E", "UTF8", "--no-sync", "--no-instructions"},
          /*wait=*/true);
    Start();
  }
  ~PostgresServer() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  uint16_t port() const { return port_; }

  // A libpq connection string for `dbname`.
  std::string conninfo(const std::string& dbname = "postgres") const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + dbname +
           " user=postgres connect_timeout=5";
  }

  void Start() {
    pid_ = Spawn({bin_ + "/postgres", "-D", (dir_ / "data").string(), "-p", std::to_string(port_),
                  "-k", dir_.string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                  "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c",
                  "max_connections=200", "-c", "shared_buffers=32MB"},
                 /*wait=*/false);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(conninfo().c_str()) == PQPING_OK) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a condition
    }
    throw std::runtime_error("postgres did not start on port " + std::to_string(port_) +
                             " (log: " + (dir_ / "postgres.log").string() + ")");
  }

  // Fast shutdown (SIGINT), then SIGKILL if it lingers.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGINT);
    for (int i = 0; i < 500; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a condition
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // Every process of the server stopped (SIGSTOP) or let go on (SIGCONT):
  // the postmaster and its children (each backend is a session of its own,
  // so a process-group signal would miss them).
  void Pause() { SignalAll(SIGSTOP); }
  void Resume() { SignalAll(SIGCONT); }

  // Runs SQL on a blocking connection (test set-up only); the first error
  // throws.
  void Exec(const std::string& sql, const std::string& dbname = "postgres") const {
    PGconn* c = PQconnectdb(conninfo(dbname).c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(c);
      PQfinish(c);
      throw std::runtime_error("connect: " + msg);
    }
    PGresult* r = PQexec(c, sql.c_str());
    const ExecStatusType s = PQresultStatus(r);
    std::string msg = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + msg);
  }

  // A new empty database; returns its name.
  std::string CreateDatabase(const std::string& prefix = "t") {
    const std::string name = prefix + "_" + std::to_string(++databases_);
    Exec("CREATE DATABASE " + name);
    return name;
  }

 private:
  // `sig` to the postmaster and every process whose parent it is.
  void SignalAll(int sig) const {
    if (pid_ <= 0) return;
    if (sig == SIGSTOP) kill(pid_, sig);  // no new children meanwhile
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = e.path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::FILE* f = std::fopen((e.path() / "stat").c_str(), "r");
      if (f == nullptr) continue;
      int pid = 0, ppid = 0;
      char comm[256];
      char state = 0;
      const int n = std::fscanf(f, "%d (%255[^)]) %c %d", &pid, comm, &state, &ppid);
      std::fclose(f);
      if (n == 4 && ppid == pid_) kill(pid, sig);
    }
    if (sig != SIGSTOP) kill(pid_, sig);
  }

  static std::string FindBinDir() {
    std::string best;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      const std::string bin = (e.path() / "bin").string();
      if (std::filesystem::exists(bin + "/postgres") && bin > best) best = bin;
    }
    if (best.empty()) throw std::runtime_error("no PostgreSQL server under /usr/lib/postgresql");
    return best;
  }

  // Runs `argv` as the server's user, its output in the directory's log.
  pid_t Spawn(const std::vector<std::string>& argv, bool wait) {
    const std::string log = (dir_ / (wait ? "initdb.log" : "postgres.log")).string();
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      const int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, STDIN_FILENO);
      if (uid_ != 0 && (setgid(gid_) != 0 || setuid(uid_) != 0)) _exit(126);
      // Dies with the test (a crashed test must not leave a server behind);
      // set after setuid, which clears it.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() == 1) _exit(125);  // the test is gone already
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    if (wait) {
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw std::runtime_error(argv[0] + " failed (log: " + log + ")");
      }
    }
    return pid;
  }

  uint16_t port_;
  std::filesystem::path dir_;
  std::string bin_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = -1;
  int databases_ = 0;
};

}  // namespace recharge::testing
