// CounterStore: the fraud filter's rate counters, seller flags and block
// lists, kept in Redis (DESIGN §6). Approximate and short-lived by design:
// money records never live here.
//
// Counters are sliding windows approximated by time buckets: a window of W
// split into B buckets is one key living W + W/B past its last update: a hash
// of bucket -> count or sum, or (distinct) a sorted set of value -> the last
// bucket it was seen in. A read sums the live buckets or counts the values
// seen in them; an update also drops what left the window. (Bucket keys and
// HyperLogLogs cost ~10x more Redis CPU per decision: bench/README.md.)
//
// Every counter of a request is updated and read in ONE round-trip time: one
// Lua script called by SHA (sent whole with EVAL once, when a server answers
// NOSCRIPT), with every key it touches passed in KEYS. Keys are hash-tagged
// per entity ({u:<user>}, {s:<seller>}, {c:<card fingerprint>}...) and all
// carry a TTL.
//
// The store talks to one server or to a Redis Cluster (RedisCommands). On one
// server a request is one script call. On a cluster, where every key of one
// script must share a hash slot, the request's keys are grouped by slot (one
// group per entity) and each group's script is sent to its node, all at once:
// the request still waits one round-trip time. An `only_if` gate whose
// counter lives in another slot (a seller counter gated on a card counter)
// cannot be decided inside one script: the gated counter is read as it is
// and as it would be after the update, the gate is decided here once the
// replies are in (the value returned is the one the single script would
// give), and the update is sent afterwards without holding up the request
// (deferred). Between the read and the deferred update, a concurrent request
// can read the counter one short: counters are approximate by design
// (DESIGN §5), and on one server nothing is deferred.
//
// Thread-safety: all methods may be called concurrently from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/redis_client.h"

namespace recharge {

// One counter of one request, resolved to its entity.
struct CounterUpdate {
  enum class Kind { kCount, kSum, kDistinct };
  Kind kind = Kind::kCount;
  std::string key;        // base key, e.g. "rc:{s:seller-9}:seller_users_1h"
  std::chrono::milliseconds window{3'600'000};
  int buckets = 12;
  std::string value;      // kSum: the amount; kDistinct: the element
  bool update = true;     // false: read only (outcome counters on a request)
  // Empty, or "<i> <op> <number>": update only if the value of counter i of
  // the same call (1-based, this request included) compares so (`only_if`).
  std::string gate;
};

// The instruments of one request that link sellers (`links:`): each is
// recorded as used by `seller_id` now, and the other sellers that used it
// within `window` are read back, in the same round trip as the counters.
struct LinkUpdate {
  struct Instrument {
    std::string kind;   // the field: "card_fingerprint", "device_id", "ip"...
    std::string value;  // never a secret: a fingerprint, a device id, an address
  };
  std::string seller_id;
  std::vector<Instrument> instruments;
  std::chrono::milliseconds window{24 * 3'600'000};
};

struct CounterReadout {
  std::vector<double> values;  // one per CounterUpdate, in order
  std::vector<bool> exists;    // one per key given to check
  // One per LinkUpdate instrument, in order: the other sellers that used it
  // within the window (at most 20).
  std::vector<std::vector<std::string>> linked;
};

// A seller linked to another by instruments both sellers' buyers used.
struct LinkedSeller {
  std::string seller_id;
  std::vector<std::string> by;  // the kinds of instrument shared ("card_fingerprint", ...)
  int shared = 0;               // how many instruments
};

struct SellerFlag {
  std::string seller_id;
  std::string rule_id;
  std::string reason;
  int64_t flagged_at_ms = 0;
  int64_t expires_at_ms = 0;
};

class RedisCounterStore {
 public:
  // `prefix` starts every key ("rc" by default; tests use their own).
  // `redis` (one server or a cluster) must outlive the store.
  RedisCounterStore(RedisCommands& redis, std::string prefix, std::chrono::milliseconds timeout);

  // Applies and reads `counters` and tells which of `check_keys` exist (flags,
  // block lists), in one round-trip time: atomically on one server, per hash
  // slot on a cluster (see above). `now` picks the buckets. A failure may
  // leave some slots' updates applied (the request is then decided degraded).
  // Arguments are taken by value: the coroutine may start after the
  // caller's full expression ends (co_spawn), so it must own them.
  asio::awaitable<absl::StatusOr<CounterReadout>> UpdateAndRead(
      std::vector<CounterUpdate> counters, std::vector<std::string> check_keys,
      std::chrono::system_clock::time_point now, std::optional<LinkUpdate> links = std::nullopt);

  // The sellers linked to `seller_id` within `window`: every seller whose
  // buyers used an instrument this seller's buyers used (GetSellerRisk;
  // several round trips, off the payment path).
  asio::awaitable<absl::StatusOr<std::vector<LinkedSeller>>> LinkedSellers(
      std::string seller_id, std::chrono::milliseconds window,
      std::chrono::system_clock::time_point now);

  // Adds 1 to count counters (outcome events: declines, chargebacks).
  asio::awaitable<absl::Status> Increment(std::vector<CounterUpdate> counters,
                                          std::chrono::system_clock::time_point now);
  // Reads counters without changing them (GetSellerRisk).
  asio::awaitable<absl::StatusOr<std::vector<double>>> Read(
      std::vector<CounterUpdate> counters, std::chrono::system_clock::time_point now);

  // Deferred updates (see above) sent and not yet answered (tests wait for 0).
  int64_t deferred_in_flight() const { return deferred_in_flight_.load(); }

  // Seller flags: visible to every replica, expiring on their own.
  asio::awaitable<absl::Status> FlagSeller(SellerFlag flag);
  asio::awaitable<absl::StatusOr<std::optional<SellerFlag>>> GetFlag(std::string seller_id);
  asio::awaitable<absl::StatusOr<std::vector<SellerFlag>>> ListFlags(int64_t now_ms);
  // Returns whether a flag was there.
  asio::awaitable<absl::StatusOr<bool>> ClearFlag(std::string seller_id);

  // Block lists (card fingerprints, devices), with a TTL.
  asio::awaitable<absl::Status> Block(std::string key, std::chrono::milliseconds ttl);

  // Key names.
  std::string SellerFlagKey(const std::string& seller_id) const;
  std::string CardBlockKey(const std::string& card_fingerprint) const;
  std::string DeviceBlockKey(const std::string& device_id) const;
  // A sorted set of the sellers that used an instrument, and of the
  // instruments ("<kind>:<value>") a seller used.
  std::string InstrumentSellersKey(const std::string& kind, const std::string& value) const;
  std::string SellerInstrumentsKey(const std::string& seller_id) const;
  // The base key of a counter for an entity, hash-tagged by the entity.
  std::string CounterKey(const std::string& per_field, const std::string& per_value,
                         const std::string& counter_name) const;

 private:
  asio::awaitable<absl::StatusOr<RedisReply>> Eval(std::vector<std::string> keys,
                                                   std::vector<std::string> args);
  std::chrono::steady_clock::time_point Deadline() const;
  // Sends the updates whose gates were decided after the round trip.
  asio::awaitable<void> ApplyDeferred(std::vector<CounterUpdate> updates,
                                      std::chrono::system_clock::time_point now);

  RedisCommands& redis_;
  const std::string prefix_;
  const std::chrono::milliseconds timeout_;
  std::atomic<int64_t> deferred_in_flight_{0};
};

}  // namespace recharge
