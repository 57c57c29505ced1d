// Journal: the append-only JSON-lines file of every charge the sandbox took
// and every operation on one -- capture, void, refund, a 3-D Secure
// authentication, a wallet approval or cancellation (those lines carry
// "op") -- one compact JSON object a line. Tests and the gateway's tooling reconcile
// the ledger against it, and the sandbox rebuilds its idempotency store from
// it at start-up.
//
// Durability: Append completes only after its line is on disk (written and
// fdatasync'd), and a charge is answered only after that, as the Python
// sandbox promised ("append returns only after fsync"). Lines are written by
// one writer thread in group commits: whatever accumulated while the last
// batch was being synced goes out in one write(2) and one fdatasync, so the
// cost of a sync is shared by every request in the batch. A failed batch is
// truncated away and its appends complete with false (the API answers "not
// charged").
//
// Load: a torn final line (a crash mid-write; its charge was never
// acknowledged) is dropped, or kept if it parses; any other corrupt line is
// an error, because silently dropping a charge would break idempotency.
//
// Thread-safety: Append may be called from any thread; Load/Open/Close from
// one thread, before and after serving.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/asio.h"
#include "sandbox/http.h"

namespace recharge::sandbox {

class Journal {
 public:
  explicit Journal(std::string path) : path_(std::move(path)) {}
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal() { Close(); }

  // Reads the existing records (truncating a torn tail away).
  absl::StatusOr<std::vector<Json>> Load();
  // Opens for appending (creating the file) and starts the writer thread.
  absl::Status Open();
  // Appends `record` as one line; true once it is durable, false if it
  // could not be written (the caller must then not report a charge).
  asio::awaitable<bool> Append(const Json& record);
  // The same for a record already encoded as one line of JSON (no newline).
  asio::awaitable<bool> AppendLine(std::string line);
  // Writes everything appended so far, then stops the writer. Idempotent.
  void Close();

 private:
  struct Waiter {
    virtual ~Waiter() = default;
    virtual void Complete(bool ok) = 0;
  };

  void Enqueue(std::string line, std::unique_ptr<Waiter> waiter);
  void Run();
  bool WriteBatch(const std::string& data);

  const std::string path_;
  bool needs_newline_ = false;
  int fd_ = -1;
  off_t size_ = 0;  // writer thread only (after Open)
  std::thread writer_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace recharge::sandbox
