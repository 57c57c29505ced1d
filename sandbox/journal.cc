#include "sandbox/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>

#include "io/log.h"
#include "io/strings.h"

namespace recharge::sandbox {
namespace {

std::string Errno(std::string_view what, const std::string& path) {
  return StrCat(what, " ", path, ": ", std::strerror(errno));
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::StatusOr<std::vector<Json>> Journal::Load() {
  std::ifstream in(path_, std::ios::binary);
  if (!in) {
    if (::access(path_.c_str(), F_OK) != 0 && errno == ENOENT) return std::vector<Json>{};
    return absl::FailedPreconditionError(Errno("cannot read", path_));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  std::vector<Json> records;
  size_t good_len = 0;
  size_t pos = 0;
  int lineno = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    ++lineno;
    if (nl == std::string::npos) {  // torn tail
      Json tail = Json::parse(data.substr(pos), nullptr, /*allow_exceptions=*/false);
      if (tail.is_object()) {
        records.push_back(std::move(tail));
        good_len = data.size();
        needs_newline_ = true;
      }
      break;
    }
    std::string_view line(data.data() + pos, nl - pos);
    pos = nl + 1;
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.remove_suffix(1);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) line.remove_prefix(1);
    if (!line.empty()) {
      Json rec = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (rec.is_discarded()) {
        return absl::DataLossError(StrCat(path_, ":", lineno, ": corrupt journal line"));
      }
      if (!rec.is_object()) {
        return absl::DataLossError(StrCat(path_, ":", lineno, ": journal line is not an object"));
      }
      records.push_back(std::move(rec));
    }
    good_len = pos;
  }
  if (good_len < data.size()) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(good_len)) != 0 || ::fsync(fd) != 0) {
      std::string err = Errno("cannot truncate the torn tail of", path_);
      if (fd >= 0) ::close(fd);
      return absl::FailedPreconditionError(err);
    }
    ::close(fd);
  }
  return records;
}

absl::Status Journal::Open() {
  const bool existed = ::access(path_.c_str(), F_OK) == 0;
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return absl::FailedPreconditionError(Errno("cannot open", path_));
  if (needs_newline_ && (!WriteAll(fd_, "\n", 1) || ::fsync(fd_) != 0)) {
    return absl::FailedPreconditionError(Errno("cannot write", path_));
  }
  if (!existed) {  // make the new directory entry durable too
    int dfd = ::open(DirName(path_).c_str(), O_RDONLY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  struct stat st{};
  if (::fstat(fd_, &st) != 0) return absl::FailedPreconditionError(Errno("cannot stat", path_));
  size_ = st.st_size;
  {
    std::lock_guard lock(mu_);
    open_ = true;
  }
  writer_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

asio::awaitable<bool> Journal::Append(const Json& record) {
  co_return co_await AppendLine(JsonBytes(record));
}

asio::awaitable<bool> Journal::AppendLine(std::string line) {
  line.push_back('\n');
  auto initiate = [this, &line](auto handler) {
    using H = decltype(handler);
    struct Impl final : Waiter {
      explicit Impl(H&& h) : handler(std::move(h)) {}
      void Complete(bool ok) override {
        auto ex = asio::get_associated_executor(handler);
        asio::post(ex, [h = std::move(handler), ok]() mutable { h(ok); });
      }
      H handler;
    };
    Enqueue(std::move(line), std::make_unique<Impl>(std::move(handler)));
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(bool)>(
      initiate, asio::use_awaitable);
}

void Journal::Enqueue(std::string line, std::unique_ptr<Waiter> waiter) {
  {
    std::lock_guard lock(mu_);
    if (open_ && !closing_) {
      pending_ += line;
      waiters_.push_back(std::move(waiter));
      if (waiters_.size() == 1) cv_.notify_one();
      return;
    }
  }
  waiter->Complete(false);  // closed: nothing can be written any more
}

void Journal::Run() {
  std::string batch;
  std::vector<std::unique_ptr<Waiter>> done;
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return !waiters_.empty() || closing_; });
    if (waiters_.empty()) break;  // closing, and everything is written
    batch.swap(pending_);
    done.swap(waiters_);
    lock.unlock();
    const bool ok = WriteBatch(batch);
    for (auto& w : done) w->Complete(ok);
    done.clear();
    batch.clear();
    lock.lock();
  }
}

bool Journal::WriteBatch(const std::string& data) {
  if (WriteAll(fd_, data.data(), data.size()) && ::fdatasync(fd_) == 0) {
    size_ += static_cast<off_t>(data.size());
    return true;
  }
  // Not durable means not taken: take the partial batch back out, so that
  // no line of an unacknowledged charge stays behind.
  if (::ftruncate(fd_, size_) != 0) {
    LogError("journal_truncate_failed", {{"error", std::strerror(errno)}});
  }
  return false;
}

void Journal::Close() {
  {
    std::lock_guard lock(mu_);
    if (closing_) return;
    closing_ = true;
  }
  cv_.notify_one();
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace recharge::sandbox
