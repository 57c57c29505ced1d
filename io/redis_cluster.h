// RedisClusterClient: Redis Cluster over the async RedisClient (DESIGN §3,
// §5): every command goes to the master that serves its key's hash slot
// (io/redis_slot.h), so the counter store runs on one server or a cluster
// unchanged (RedisCommands).
//
// The slot map comes from CLUSTER SLOTS, asked of a known node (the one that
// answered last, then the masters, then the seeds), on first use and again
// when the topology changes. There is one RedisClient per master, created as
// nodes appear and kept until the client is destroyed. Replies that say the
// map is wrong are handled here, each within the command's deadline:
//   -MOVED <slot> <host:port>  the slot is updated at once, a full refresh is
//                              scheduled in the background, the command is
//                              sent again to the new node;
//   -ASK <slot> <host:port>    ASKING then the command, back to back on one
//                              connection of that node; the map is unchanged
//                              (a slot being migrated);
//   -TRYAGAIN                  (a multi-key command during a migration) sent
//                              again after a short backoff;
//   -CLUSTERDOWN, a lost or refused connection, a slot no node serves:
//                              the map is refreshed and the command sent again
//                              after a backoff.
// At most `max_redirects` MOVED and ASK per command. When the deadline leaves
// no room for another try, the command fails UNAVAILABLE (DEADLINE_EXCEEDED
// if a node took the whole deadline), the message naming the slot, the node
// and what it said. Any other error reply (NOSCRIPT, CROSSSLOT, WRONGTYPE...)
// is the caller's, as with RedisClient.
//
// Only one refresh runs at a time: commands that need a map while one is
// under way wait for it (until their deadline) and do not ask again, and
// background refreshes run at most every `min_refresh_interval`.
//
// A command whose connection was lost may already have been applied when it
// is sent again: what this project keeps in Redis is approximate by design
// (DESIGN §5), so a lost reply costs at most a counter counted twice.
//
// Thread-safety: Command may be called concurrently from any thread. No
// thread ever blocks: waits are Asio timers and coroutines.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/redis_client.h"

namespace recharge {

class RedisClusterClient final : public RedisCommands {
 public:
  struct Options {
    // Nodes to ask for the slot map first (ParseRedisAddresses); their
    // `connections` is not used. Any node of the cluster will do, and one
    // that answers is enough.
    std::vector<RedisClient::Options> seeds;
    int connections_per_node = 2;
    // MOVED and ASK replies followed per command, at most.
    int max_redirects = 5;
    // The longest one node may take to answer CLUSTER SLOTS before the next
    // one is asked.
    std::chrono::milliseconds refresh_timeout{1000};
    // Background refreshes (after MOVED) and refreshes after a failure run at
    // most this often; the first load is never held back.
    std::chrono::milliseconds min_refresh_interval{100};
    // The wait before a command is sent again (TRYAGAIN, CLUSTERDOWN, a lost
    // connection); it doubles on each retry of one command, up to the max.
    std::chrono::milliseconds retry_backoff{10};
    std::chrono::milliseconds max_retry_backoff{200};
  };

  // Nothing is sent before the first command. Connections are opened on
  // `executor`'s context.
  RedisClusterClient(asio::any_io_executor executor, Options options);
  // REQUIRES: no io thread is running the executor's context any more
  // (as for RedisClient).
  ~RedisClusterClient() override;

  using RedisCommands::Command;
  // Sends the command to the master serving `route_key`'s slot, or its first
  // key's (RedisCommandKey) when `route_key` is empty; to any master when it
  // has no key.
  asio::awaitable<absl::StatusOr<RedisReply>> Command(
      std::vector<std::string> args, std::chrono::steady_clock::time_point deadline,
      std::string route_key) override;

  // Commands callers sent (one per Command call, whatever the redirects).
  uint64_t commands_sent() const override { return sent_.load(); }
  bool sharded() const override { return true; }

  // What the client did about the cluster's topology (tests, metrics).
  uint64_t moved_redirects() const;
  uint64_t ask_redirects() const;
  uint64_t tryagain_retries() const;    // TRYAGAIN and CLUSTERDOWN replies retried
  uint64_t connection_retries() const;  // commands sent again after a lost connection
  uint64_t map_refreshes() const;       // slot maps loaded from CLUSTER SLOTS

  // "host:port" of the master the current map gives for `slot`; empty when
  // there is no map yet or no node serves it (tests, diagnostics).
  std::string NodeForSlot(uint16_t slot) const;

 private:
  class Topology;

  const Options options_;
  std::shared_ptr<Topology> topology_;  // shared with background refreshes
  std::atomic<uint64_t> sent_{0};
};

}  // namespace recharge
