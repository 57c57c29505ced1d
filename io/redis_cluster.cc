#include "io/redis_cluster.h"

#include <algorithm>
#include <boost/asio/redirect_error.hpp>
#include <charconv>
#include <mutex>
#include <optional>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "io/async_semaphore.h"
#include "io/log.h"
#include "io/redis_slot.h"
#include "io/strings.h"

namespace recharge {
namespace {

using Clock = std::chrono::steady_clock;

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

template <typename Int>
bool ParseInt(std::string_view text, Int* out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

// A -MOVED or -ASK reply ("MOVED 3999 127.0.0.1:6381"; hiredis drops the '-').
struct Redirect {
  bool ask = false;
  uint16_t slot = 0;
  std::string host;  // empty: the host of the node that replied
  uint16_t port = 0;
};

std::optional<Redirect> ParseRedirect(std::string_view error) {
  Redirect r;
  if (StartsWith(error, "MOVED ")) {
    error.remove_prefix(6);
  } else if (StartsWith(error, "ASK ")) {
    r.ask = true;
    error.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const size_t space = error.find(' ');
  const std::string_view address = space == std::string_view::npos ? "" : error.substr(space + 1);
  const size_t colon = address.rfind(':');
  unsigned slot = 0;
  unsigned port = 0;
  if (colon == std::string_view::npos || !ParseInt(error.substr(0, space), &slot) ||
      slot >= kRedisClusterSlots || !ParseInt(address.substr(colon + 1), &port) || port == 0 ||
      port > 65535) {
    return std::nullopt;
  }
  r.slot = static_cast<uint16_t>(slot);
  r.host = std::string(address.substr(0, colon));
  r.port = static_cast<uint16_t>(port);
  return r;
}

// One range of a CLUSTER SLOTS reply, with the master that serves it.
struct SlotRange {
  int start = 0;
  int end = 0;
  std::string host;
  uint16_t port = 0;
};

// CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...]. An
// empty host means the node asked (`asked_host`); "?" an unknown endpoint,
// whose slots are left unserved.
absl::StatusOr<std::vector<SlotRange>> ParseClusterSlots(const RedisReply& reply,
                                                         const std::string& asked_host) {
  using Type = RedisReply::Type;
  if (reply.type != Type::kArray) return absl::InternalError("CLUSTER SLOTS: not an array");
  std::vector<SlotRange> out;
  for (const RedisReply& e : reply.elements) {
    if (e.type != Type::kArray || e.elements.size() < 3 || e.elements[0].type != Type::kInteger ||
        e.elements[1].type != Type::kInteger || e.elements[2].type != Type::kArray ||
        e.elements[2].elements.size() < 2 || e.elements[2].elements[0].type != Type::kString ||
        e.elements[2].elements[1].type != Type::kInteger) {
      return absl::InternalError("CLUSTER SLOTS: unexpected range");
    }
    SlotRange range;
    const int64_t start = e.elements[0].integer;
    const int64_t end = e.elements[1].integer;
    const int64_t port = e.elements[2].elements[1].integer;
    if (start < 0 || end < start || end >= kRedisClusterSlots || port <= 0 || port > 65535) {
      return absl::InternalError(
          StrCat("CLUSTER SLOTS: bad range ", start, "-", end, " port ", port));
    }
    range.start = static_cast<int>(start);
    range.end = static_cast<int>(end);
    range.host = e.elements[2].elements[0].str;
    range.port = static_cast<uint16_t>(port);
    if (range.host == "?") continue;
    if (range.host.empty()) range.host = asked_host;
    out.push_back(std::move(range));
  }
  if (out.empty()) return absl::UnavailableError("CLUSTER SLOTS: no slot is served yet");
  return out;
}

absl::Status WithContext(const absl::Status& status, std::string_view context) {
  return absl::Status(status.code(), StrCat(context, ": ", status.message()));
}

// Waits `delay`, unless that would pass `deadline`: then returns false at once
// (no time is left to try again).
asio::awaitable<bool> PauseBefore(Clock::duration delay, Clock::time_point deadline) {
  if (Clock::now() + delay >= deadline) co_return false;
  asio::steady_timer timer(co_await asio::this_coro::executor, delay);
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return true;
}

}  // namespace

// The slot map and the nodes, shared by the client and its background
// refreshes. Nodes are never removed before Close(): a Node* stays valid
// while the client lives.
class RedisClusterClient::Topology : public std::enable_shared_from_this<Topology> {
 public:
  struct Node {
    std::string host;
    uint16_t port = 0;
    std::string address;  // "host:port"
    std::unique_ptr<RedisClient> client;
  };

  Topology(asio::any_io_executor executor, const Options& options)
      : executor_(std::move(executor)), options_(options) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const RedisClient::Options& seed : options_.seeds) NodeAtLocked(seed.host, seed.port);
  }

  // The node at `host`:`port`, created on first sight.
  Node* NodeAt(const std::string& host, uint16_t port) {
    std::lock_guard<std::mutex> lock(mu_);
    return NodeAtLocked(host, port);
  }

  // Where a command goes: the master serving `slot` (the next master in turn
  // for no slot); no node before the first map, or when no node serves the
  // slot. With the map's epoch, for Refresh.
  struct Route {
    Node* node = nullptr;
    bool loaded = false;  // there is a map
    uint64_t epoch = 0;
  };
  Route Lookup(std::optional<uint16_t> slot) {
    std::lock_guard<std::mutex> lock(mu_);
    Route route;
    route.epoch = epoch_;
    route.loaded = !slots_.empty();
    if (!route.loaded) return route;
    if (slot) {
      route.node = slots_[*slot];
    } else if (!masters_.empty()) {
      route.node = masters_[next_master_++ % masters_.size()];
    }
    return route;
  }

  std::string AddressForSlot(uint16_t slot) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (slots_.empty() || slots_[slot] == nullptr) return "";
    return slots_[slot]->address;
  }

  uint64_t epoch() const {
    std::lock_guard<std::mutex> lock(mu_);
    return epoch_;
  }

  // A MOVED reply: `slot` is now served by `node`.
  void SetSlot(uint16_t slot, Node* node) {
    std::lock_guard<std::mutex> lock(mu_);
    if (slots_.empty()) return;
    slots_[slot] = node;
    if (std::find(masters_.begin(), masters_.end(), node) == masters_.end())
      masters_.push_back(node);
  }

  // Loads the slot map, unless it changed since the caller saw `seen_epoch`
  // (another refresh did the work) or was loaded — or failed to load — less
  // than min_refresh_interval ago (then that attempt's outcome is returned).
  // One at a time: callers queue until `deadline`. Asks `preferred` first
  // and `avoid` last.
  asio::awaitable<absl::Status> Refresh(uint64_t seen_epoch, Node* preferred, Node* avoid,
                                        Clock::time_point deadline) {
    const AsyncSemaphore::Wait wait = co_await gate_->Acquire(deadline);
    if (wait == AsyncSemaphore::Wait::kClosed) {
      co_return absl::UnavailableError("the client is closed");
    }
    if (wait != AsyncSemaphore::Wait::kGranted) {
      co_return absl::DeadlineExceededError(
          "no slot map before the deadline (a refresh was under way)");
    }
    GateRelease release{gate_};
    std::optional<absl::Status> recent;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (epoch_ != seen_epoch) {
        recent = absl::OkStatus();
      } else if (attempted_ && Clock::now() - last_attempt_ < options_.min_refresh_interval) {
        recent = last_outcome_;
      }
    }
    if (recent) co_return *recent;
    co_return co_await Load(preferred, avoid, deadline);
  }

  // After a MOVED: a refresh in the background, from `preferred` (the node
  // that now serves the slot), at most one waiting at a time.
  void ScheduleRefresh(Node* preferred) {
    if (refresh_scheduled_.exchange(true)) return;
    asio::co_spawn(executor_, RefreshLater(shared_from_this(), preferred), asio::detached);
  }

  // Closes every node's connections. REQUIRES: no io thread running.
  void Close() {
    std::vector<std::unique_ptr<Node>> nodes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      nodes.swap(nodes_);
      slots_.clear();
      masters_.clear();
      last_answered_ = nullptr;
    }
    gate_->Close();
    nodes.clear();
  }

  std::atomic<uint64_t> moved{0};
  std::atomic<uint64_t> asks{0};
  std::atomic<uint64_t> tryagains{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> refreshes{0};

 private:
  // Gives the refresh slot back however the refresh ends.
  struct GateRelease {
    std::shared_ptr<AsyncSemaphore> gate;
    ~GateRelease() { gate->Release(); }
  };

  Node* NodeAtLocked(const std::string& host, uint16_t port) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::unique_ptr<Node>& n : nodes_) {
      if (n->port == port && n->host == host) return n.get();
    }
    auto node = std::make_unique<Node>();
    node->host = host;
    node->port = port;
    node->address = StrCat(host, ":", port);
    node->client = std::make_unique<RedisClient>(
        executor_, RedisClient::Options{host, port, options_.connections_per_node});
    nodes_.push_back(std::move(node));
    return nodes_.back().get();
  }

  // Whom to ask, in order: `preferred`, the node that answered last, the
  // masters, every other node known (seeds, former masters); `avoid` last.
  std::vector<Node*> Candidates(Node* preferred, Node* avoid) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Node*> out;
    auto add = [&out, avoid](Node* n) {
      if (n != nullptr && n != avoid && std::find(out.begin(), out.end(), n) == out.end()) {
        out.push_back(n);
      }
    };
    add(preferred);
    add(last_answered_);
    for (Node* n : masters_) add(n);
    for (const std::unique_ptr<Node>& n : nodes_) add(n.get());
    if (avoid != nullptr && !nodes_.empty()) out.push_back(avoid);
    return out;
  }

  asio::awaitable<absl::Status> Load(Node* preferred, Node* avoid, Clock::time_point deadline) {
    std::vector<std::string> errors;
    const std::vector<Node*> candidates = Candidates(preferred, avoid);
    for (Node* node : candidates) {
      const Clock::time_point now = Clock::now();
      if (now >= deadline) {
        errors.push_back("the deadline passed");
        break;
      }
      std::vector<std::string> command = {"CLUSTER", "SLOTS"};
      absl::StatusOr<RedisReply> reply = co_await node->client->Command(
          std::move(command), std::min(deadline, now + options_.refresh_timeout));
      if (!reply.ok()) {
        errors.emplace_back(reply.status().message());
        continue;
      }
      if (reply->type == RedisReply::Type::kError) {
        errors.push_back(StrCat("redis ", node->address, ": ", reply->str));
        continue;
      }
      absl::StatusOr<std::vector<SlotRange>> ranges = ParseClusterSlots(*reply, node->host);
      if (!ranges.ok()) {
        errors.push_back(StrCat("redis ", node->address, ": ", ranges.status().message()));
        continue;
      }
      Apply(*ranges, node);
      co_return absl::OkStatus();
    }
    if (errors.empty()) errors.push_back("no node known");
    absl::Status failed = absl::UnavailableError(
        StrCat("no node gave the slot map (", StrJoin(errors, "; "), ")"));
    {
      std::lock_guard<std::mutex> lock(mu_);
      attempted_ = true;
      last_attempt_ = Clock::now();
      last_outcome_ = failed;
    }
    LogWarn("redis_cluster_refresh_failed", {{"error", std::string(failed.message())}});
    co_return failed;
  }

  void Apply(const std::vector<SlotRange>& ranges, Node* from) {
    size_t served = 0;
    size_t masters = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (nodes_.empty()) return;  // closed meanwhile
      std::vector<Node*> slots(kRedisClusterSlots, nullptr);
      masters_.clear();
      for (const SlotRange& r : ranges) {
        Node* node = NodeAtLocked(r.host, r.port);
        std::fill(slots.begin() + r.start, slots.begin() + r.end + 1, node);
        served += static_cast<size_t>(r.end - r.start + 1);
        if (std::find(masters_.begin(), masters_.end(), node) == masters_.end()) {
          masters_.push_back(node);
        }
      }
      slots_.swap(slots);
      ++epoch_;
      attempted_ = true;
      last_attempt_ = Clock::now();
      last_outcome_ = absl::OkStatus();
      last_answered_ = from;
      masters = masters_.size();
    }
    ++refreshes;
    LogInfo("redis_cluster_slot_map", {{"from", from->address},
                                       {"masters", std::to_string(masters)},
                                       {"slots_served", std::to_string(served)}});
  }

  static asio::awaitable<void> RefreshLater(std::shared_ptr<Topology> self, Node* preferred) {
    Clock::time_point not_before;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      not_before = self->last_attempt_ + self->options_.min_refresh_interval;
    }
    if (Clock::now() < not_before) {
      asio::steady_timer timer(co_await asio::this_coro::executor, not_before);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    const uint64_t seen = self->epoch();
    self->refresh_scheduled_ = false;  // a MOVED from now on asks for another
    absl::Status s = co_await self->Refresh(seen, preferred, nullptr,
                                            Clock::now() + 2 * self->options_.refresh_timeout);
    (void)s;  // a failure is logged by Load; the next MOVED or failure tries again
  }

  const asio::any_io_executor executor_;
  const Options options_;
  const std::shared_ptr<AsyncSemaphore> gate_ = std::make_shared<AsyncSemaphore>(1);
  std::atomic<bool> refresh_scheduled_{false};

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Node>> nodes_ ABSL_GUARDED_BY(mu_);
  std::vector<Node*> slots_ ABSL_GUARDED_BY(mu_);  // kRedisClusterSlots once loaded
  std::vector<Node*> masters_ ABSL_GUARDED_BY(mu_);
  size_t next_master_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;  // maps loaded so far
  Node* last_answered_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool attempted_ ABSL_GUARDED_BY(mu_) = false;
  Clock::time_point last_attempt_ ABSL_GUARDED_BY(mu_);
  absl::Status last_outcome_ ABSL_GUARDED_BY(mu_);
};

RedisClusterClient::RedisClusterClient(asio::any_io_executor executor, Options options)
    : options_(std::move(options)),
      topology_(std::make_shared<Topology>(std::move(executor), options_)) {}

RedisClusterClient::~RedisClusterClient() { topology_->Close(); }

uint64_t RedisClusterClient::moved_redirects() const { return topology_->moved.load(); }
uint64_t RedisClusterClient::ask_redirects() const { return topology_->asks.load(); }
uint64_t RedisClusterClient::tryagain_retries() const { return topology_->tryagains.load(); }
uint64_t RedisClusterClient::connection_retries() const { return topology_->reconnects.load(); }
uint64_t RedisClusterClient::map_refreshes() const { return topology_->refreshes.load(); }

std::string RedisClusterClient::NodeForSlot(uint16_t slot) const {
  return topology_->AddressForSlot(slot);
}

asio::awaitable<absl::StatusOr<RedisReply>> RedisClusterClient::Command(
    std::vector<std::string> args, Clock::time_point deadline, std::string route_key) {
  using Node = Topology::Node;
  ++sent_;
  std::optional<uint16_t> slot;
  if (!route_key.empty()) {
    slot = RedisKeySlot(route_key);
  } else if (std::optional<std::string_view> key = RedisCommandKey(args)) {
    slot = RedisKeySlot(*key);
  }
  const std::string where = slot ? StrCat("redis cluster, slot ", *slot) : "redis cluster";
  Topology& topology = *topology_;
  Clock::duration backoff = options_.retry_backoff;
  auto next_backoff = [&backoff, this] {
    const Clock::duration now = backoff;
    backoff = std::min<Clock::duration>(backoff * 2, options_.max_retry_backoff);
    return now;
  };
  int redirects = 0;
  Node* ask = nullptr;  // after -ASK: where to send ASKING and the command
  for (;;) {
    if (Clock::now() >= deadline) {
      co_return absl::DeadlineExceededError(StrCat(where, ": no reply before the deadline"));
    }
    // 1. The node: from the slot map, loaded on first use.
    const Topology::Route route = topology.Lookup(slot);
    const uint64_t epoch = route.epoch;
    Node* node = ask != nullptr ? ask : route.node;
    if (node == nullptr && !route.loaded) {
      absl::Status loaded = co_await topology.Refresh(epoch, nullptr, nullptr, deadline);
      if (!loaded.ok()) co_return WithContext(loaded, where);
      continue;
    }
    if (node == nullptr) {
      absl::Status unserved = absl::UnavailableError(StrCat(where, ": no node serves the slot"));
      absl::Status refreshed = co_await topology.Refresh(epoch, nullptr, nullptr, deadline);
      (void)refreshed;
      const bool again = co_await PauseBefore(next_backoff(), deadline);
      if (!again) co_return unserved;
      continue;
    }

    // 2. The command (after ASKING, on the same connection, when asked to).
    absl::StatusOr<RedisReply> reply;
    if (ask != nullptr) {
      ask = nullptr;
      std::vector<std::vector<std::string>> asking = {{"ASKING"}, args};
      absl::StatusOr<std::vector<RedisReply>> replies =
          co_await node->client->Commands(std::move(asking), deadline);
      if (replies.ok()) {
        reply = std::move(replies->back());
      } else {
        reply = replies.status();
      }
    } else {
      std::vector<std::string> copy = args;  // kept for a retry
      reply = co_await node->client->Command(std::move(copy), deadline);
    }

    // 3. No reply: a node that took the whole deadline, or one that is gone
    // (a failover may have moved its slots: refresh, then try again).
    if (!reply.ok()) {
      absl::Status lost = WithContext(reply.status(), where);
      if (reply.status().code() == absl::StatusCode::kDeadlineExceeded) co_return lost;
      absl::Status refreshed = co_await topology.Refresh(epoch, nullptr, node, deadline);
      (void)refreshed;
      const bool again = co_await PauseBefore(next_backoff(), deadline);
      if (!again) co_return lost;
      ++topology.reconnects;
      continue;
    }
    if (reply->type != RedisReply::Type::kError) co_return reply;

    // 4. The cluster's own error replies.
    const std::string& error = reply->str;
    if (std::optional<Redirect> redirect = ParseRedirect(error)) {
      if (++redirects > options_.max_redirects) {
        co_return absl::UnavailableError(StrCat(where, ": more than ", options_.max_redirects,
                                                " redirects, the last from ", node->address, ": ",
                                                error));
      }
      Node* target =
          topology.NodeAt(redirect->host.empty() ? node->host : redirect->host, redirect->port);
      if (redirect->ask) {
        ++topology.asks;
        ask = target;
      } else {
        ++topology.moved;
        topology.SetSlot(redirect->slot, target);
        topology.ScheduleRefresh(target);
      }
      continue;
    }
    const bool down = StartsWith(error, "CLUSTERDOWN");
    if (down || StartsWith(error, "TRYAGAIN")) {
      absl::Status busy =
          absl::UnavailableError(StrCat(where, ": redis ", node->address, ": ", error));
      if (down) {
        absl::Status refreshed = co_await topology.Refresh(epoch, nullptr, node, deadline);
        (void)refreshed;
      }
      const bool again = co_await PauseBefore(next_backoff(), deadline);
      if (!again) co_return busy;
      ++topology.tryagains;
      continue;
    }
    co_return reply;  // the caller's (NOSCRIPT, CROSSSLOT, WRONGTYPE...)
  }
}

}  // namespace recharge
