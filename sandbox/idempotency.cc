#include "sandbox/idempotency.h"

#include <functional>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>

namespace recharge::sandbox {

IdempotencyStore::Shard& IdempotencyStore::ShardFor(std::string_view key) {
  return shards_[std::hash<std::string_view>{}(key) % kShards];
}

IdempotencyStore::Hold& IdempotencyStore::Hold::operator=(Hold&& other) noexcept {
  if (this != &other) {
    Release();
    shard_ = other.shard_;
    entry_ = other.entry_;
    key_ = std::move(other.key_);
    other.shard_ = nullptr;
    other.entry_ = nullptr;
  }
  return *this;
}

const std::shared_ptr<const StoredResult>& IdempotencyStore::Hold::prior() const {
  // The entry cannot change under a Hold except through it, so no lock.
  return entry_->result;
}

void IdempotencyStore::Hold::Put(std::shared_ptr<const StoredResult> result) {
  std::lock_guard lock(shard_->mu);
  entry_->result = std::move(result);
}

void IdempotencyStore::Hold::Release() {
  if (shard_ == nullptr) return;
  std::unique_ptr<Waiter> next;
  {
    std::lock_guard lock(shard_->mu);
    if (!entry_->waiters.empty()) {
      next = std::move(entry_->waiters.front());  // the key passes to it, still held
      entry_->waiters.pop_front();
    } else {
      entry_->held = false;
      if (entry_->result == nullptr) shard_->entries.erase(key_);
    }
  }
  shard_ = nullptr;
  entry_ = nullptr;
  if (next) next->Wake();
}

asio::awaitable<IdempotencyStore::Hold> IdempotencyStore::Acquire(std::string key) {
  Shard& shard = ShardFor(key);
  Hold hold;
  {
    std::lock_guard lock(shard.mu);
    Entry& entry = shard.entries[key];
    if (!entry.held) {  // fast path: nobody has the key
      entry.held = true;
      hold.shard_ = &shard;
      hold.entry_ = &entry;
      hold.key_ = std::move(key);
      co_return hold;
    }
  }
  // Contended: queue up and suspend until Release hands the key over. The
  // entry is looked up again under the lock: it may have been freed since.
  Entry* taken = nullptr;
  auto initiate = [&shard, &key, &taken](auto handler) {
    using H = decltype(handler);
    struct Impl final : Waiter {
      explicit Impl(H&& h) : handler(std::move(h)) {}
      void Wake() override {
        auto ex = asio::get_associated_executor(handler);
        asio::post(ex, std::move(handler));
      }
      H handler;
    };
    std::unique_ptr<Waiter> waiter = std::make_unique<Impl>(std::move(handler));
    {
      std::lock_guard lock(shard.mu);
      Entry& entry = shard.entries[key];
      taken = &entry;
      if (entry.held) {
        entry.waiters.push_back(std::move(waiter));
        return;
      }
      entry.held = true;
    }
    waiter->Wake();
  };
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(initiate,
                                                                       asio::use_awaitable);
  hold.shard_ = &shard;
  hold.entry_ = taken;
  hold.key_ = std::move(key);
  co_return hold;
}

void IdempotencyStore::Put(const std::string& key, std::shared_ptr<const StoredResult> result) {
  Shard& shard = ShardFor(key);
  std::lock_guard lock(shard.mu);
  shard.entries[key].result = std::move(result);
}

}  // namespace recharge::sandbox
