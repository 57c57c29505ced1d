// What the ledger tests share (tests/unit/ledger and the suite on both
// backends, tests/integration/ledger_store_test.cc): an io_context on a
// thread of its own to run the stores' coroutines on, and the claim and the
// completion of a recharge.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

#include <string>
#include <thread>

#include "io/asio.h"
#include "ledger/ledger_store.h"

namespace recharge::testing {

// One io thread, started at construction and joined by Stop() (call it once
// the stores on it are gone) or at destruction.
class LedgerIo {
 public:
  LedgerIo() : thread_([this] { io_.run(); }) {}
  ~LedgerIo() { Stop(); }
  LedgerIo(const LedgerIo&) = delete;
  LedgerIo& operator=(const LedgerIo&) = delete;

  void Stop() {
    work_.reset();
    if (thread_.joinable()) thread_.join();
  }
  asio::io_context& context() { return io_; }
  asio::any_io_executor executor() { return io_.get_executor(); }
  // Runs `a` on the io thread and waits for its result.
  template <typename T>
  T Run(asio::awaitable<T> a) {
    return asio::co_spawn(io_, std::move(a), asio::use_future).get();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::thread thread_;
};

// The claim of a new key: recharge "rch_<key>" of `user`, 65 coins.
inline KeyClaim LedgerClaim(const std::string& key, const std::string& fingerprint,
                            const std::string& user = "u1") {
  KeyClaim c;
  c.idempotency_key = key;
  c.fingerprint = fingerprint;
  c.draft.set_recharge_id("rch_" + key);
  c.draft.set_idempotency_key(key);
  c.draft.set_user_id(user);
  c.draft.set_coins(65);
  return c;
}

// The completion of `claim` with `status` (recharge and response).
inline Completion LedgerDone(const KeyClaim& claim, recharge::v1::RechargeStatus status) {
  Completion d;
  d.idempotency_key = claim.idempotency_key;
  d.recharge = claim.draft;
  d.recharge.set_status(status);
  d.response.set_recharge_id(claim.draft.recharge_id());
  d.response.set_status(status);
  return d;
}

}  // namespace recharge::testing
