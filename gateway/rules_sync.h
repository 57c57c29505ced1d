// RulesSync: a rule reload on one replica reaches every replica. The
// replicas share Redis: a reload that took (FraudAdmin.ReloadRules, SIGHUP)
// increments `<prefix>:{rules}:generation`, and every replica reads that key
// every `interval` and, when it moved, reloads its own rule file. Replicas
// run the same file (the deployment ships it to each); a replica whose file
// does not load keeps the rules it has and says why (rules_reload_failed,
// caller "replica-sync").
//
// Redis down: nothing is announced or seen; each replica keeps its rules
// and catches up on the first read that works.
//
// Thread-safety: all members may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

#include "fraud/rule_engine.h"
#include "io/asio.h"
#include "io/redis_client.h"

namespace recharge {

class RulesSync {
 public:
  RulesSync(RedisCommands& redis, RuleEngine& engine, const std::string& prefix,
            std::chrono::milliseconds interval, std::chrono::milliseconds timeout);

  // After a reload that took here: tells the other replicas.
  asio::awaitable<void> Announce();
  // Reads the generation now, then every `interval`, reloading when it
  // moved; until the executor stops.
  asio::awaitable<void> Run();
  // Reloads this replica made because another one announced.
  int64_t followed() const { return followed_.load(); }

 private:
  asio::awaitable<std::optional<int64_t>> Read();
  // Moves seen_ up to `generation` (never down); true if it moved from a
  // generation already seen (not the first read).
  bool Raise(int64_t generation);

  RedisCommands& redis_;
  RuleEngine& engine_;
  const std::string key_;
  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds timeout_;
  std::atomic<int64_t> seen_{-1};  // the generation this replica's rules answer to
  std::atomic<int64_t> followed_{0};
};

}  // namespace recharge
