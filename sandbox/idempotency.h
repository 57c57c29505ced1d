// IdempotencyStore: the results an API keeps under idempotency keys, and a
// per-key lock so that concurrent requests with one key are processed one at
// a time (one charge, the others replay it; a lookup waits for an in-flight
// charge so that "not found" is definite).
//
// Waiting for a key never blocks a thread: Acquire suspends the coroutine
// and is resumed (on its own executor) when the key is handed to it, in
// arrival order. The store is sharded by key hash, one mutex a shard, held
// only for a map operation.
//
// Thread-safety: all methods may be called from any thread. A Hold is used
// by one coroutine at a time.
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "io/asio.h"

namespace recharge::sandbox {

// What an API stores under a key; each API derives its own record type.
struct StoredResult {
  virtual ~StoredResult() = default;
};

class IdempotencyStore {
  struct Entry;
  struct Shard;

 public:
  IdempotencyStore() = default;
  IdempotencyStore(const IdempotencyStore&) = delete;
  IdempotencyStore& operator=(const IdempotencyStore&) = delete;

  // Exclusive use of one key until destroyed (or Release()d).
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept { *this = std::move(other); }
    Hold& operator=(Hold&& other) noexcept;
    ~Hold() { Release(); }

    // The result stored under the key, or null.
    const std::shared_ptr<const StoredResult>& prior() const;
    // Stores `result` under the key (replacing nothing: call once, when the
    // key had no prior result).
    void Put(std::shared_ptr<const StoredResult> result);
    // Lets the next waiter (if any) have the key.
    void Release();

   private:
    friend class IdempotencyStore;
    Shard* shard_ = nullptr;
    Entry* entry_ = nullptr;
    std::string key_;
  };

  // Waits until no other Hold on `key` exists, then returns one.
  asio::awaitable<Hold> Acquire(std::string key);

  // Stores without locking (rebuilding from the journal at start-up).
  void Put(const std::string& key, std::shared_ptr<const StoredResult> result);

 private:
  struct Waiter {
    virtual ~Waiter() = default;
    virtual void Wake() = 0;  // resumes the waiting coroutine on its executor
  };
  struct Entry {
    bool held = false;
    std::shared_ptr<const StoredResult> result;
    std::deque<std::unique_ptr<Waiter>> waiters;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, Entry> entries ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kShards = 64;

  Shard& ShardFor(std::string_view key);

  std::array<Shard, kShards> shards_;
};

}  // namespace recharge::sandbox
