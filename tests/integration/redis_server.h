// RedisServer: a real redis-server for integration tests, on a free loopback
// port, with nothing persisted; stopped (and its process reaped) on
// destruction. Start() waits, with a bounded deadline, until it answers PING.
#pragma once

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

namespace recharge::testing {

inline uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class RedisServer {
 public:
  explicit RedisServer(uint16_t port = FreePort()) : port_(port) { Start(); }
  ~RedisServer() { Stop(); }

  uint16_t port() const { return port_; }

  void Start() {
    pid_ = fork();
    if (pid_ == 0) {
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, STDOUT_FILENO);
      const std::string port = std::to_string(port_);
      execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
             static_cast<char*>(nullptr));
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Ping()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a condition
    }
    throw std::runtime_error("redis-server did not start on port " + std::to_string(port_));
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // Runs one command on a plain blocking connection (test set-up only).
  std::string Run(const std::string& command) {
    redisContext* c = redisConnect("127.0.0.1", port_);
    std::string out;
    if (c != nullptr && !c->err) {
      auto* r = static_cast<redisReply*>(redisCommand(c, command.c_str()));
      if (r != nullptr) {
        if (r->str != nullptr) out.assign(r->str, r->len);
        if (r->type == REDIS_REPLY_INTEGER) out = std::to_string(r->integer);
        freeReplyObject(r);
      }
    }
    if (c != nullptr) redisFree(c);
    return out;
  }

  bool Ping() { return Run("PING") == "PONG"; }

 private:
  uint16_t port_;
  pid_t pid_ = -1;
};

}  // namespace recharge::testing
