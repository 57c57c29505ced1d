#include "io/log.h"
#include "io/log_buffering.h"

#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <atomic>
#include <chrono>
#include <ctime>

#include <nlohmann/json.hpp>

namespace recharge {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

// Printable ASCII needs only '"' and '\\' escaped: what nlohmann's dump
// gives for such text (ensure_ascii off).
bool AppendPlainString(std::string* out, std::string_view text) {
  out->push_back('"');
  for (char c : text) {
    if (c < 0x20 || c > 0x7e) return false;
    if (c == '"' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
  out->push_back('"');
  return true;
}

// The line written directly (the hot path: one log line a request), when
// every key and value is printable ASCII and no key repeats; false: the
// caller formats it through nlohmann (escapes, invalid UTF-8, repeats).
bool AppendPlainLine(std::string* out, std::string_view ts, std::string_view level,
                     std::string_view event, LogFields fields) {
  out->reserve(96 + 32 * fields.size());
  out->append("{\"ts\":");
  AppendPlainString(out, ts);
  out->append(",\"level\":");
  if (!AppendPlainString(out, level)) return false;
  out->append(",\"event\":");
  if (!AppendPlainString(out, event)) return false;
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    const std::string_view key = it->first;
    if (key == "ts" || key == "level" || key == "event") return false;
    for (auto prev = fields.begin(); prev != it; ++prev) {
      if (prev->first == key) return false;
    }
    out->push_back(',');
    if (!AppendPlainString(out, key)) return false;
    out->push_back(':');
    if (!AppendPlainString(out, it->second)) return false;
  }
  out->push_back('}');
  return true;
}

bool BufferLine(const std::string& line);

void Write(std::string_view level, std::string_view event, LogFields fields) {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[64];
  const int ms = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  std::string line;
  if (!AppendPlainLine(&line, ts, level, event, fields)) {
    nlohmann::ordered_json j;
    j["ts"] = ts;
    j["level"] = level;
    j["event"] = event;
    for (const auto& [k, v] : fields) j[std::string(k)] = v;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  line.push_back('\n');
  if (BufferLine(line)) return;
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

// Buffered mode: lines queue here and a background thread writes them in
// batches (one write(2) per batch).
struct LogBuffer {
  std::mutex mu;
  std::condition_variable cv;
  std::string pending;
  bool stopping = false;
  std::chrono::milliseconds interval{5};
  std::thread writer;
};
std::atomic<LogBuffer*> g_buffer{nullptr};

bool BufferLine(const std::string& line) {
  LogBuffer* b = g_buffer.load(std::memory_order_acquire);
  if (b == nullptr) return false;
  std::lock_guard lock(b->mu);
  if (b->stopping) return false;
  b->pending += line;
  return true;
}

void WriteAll(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(STDERR_FILENO, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void RunLogWriter(LogBuffer* b) {
  std::string batch;
  std::unique_lock lock(b->mu);
  while (true) {
    b->cv.wait_for(lock, b->interval, [b] { return b->stopping; });
    batch.swap(b->pending);
    const bool stop = b->stopping;
    lock.unlock();
    WriteAll(batch);
    batch.clear();
    if (stop) return;
    lock.lock();
  }
}

}  // namespace

void EnableBufferedLogging(std::chrono::milliseconds interval) {
  if (g_buffer.load() != nullptr) return;
  auto* b = new LogBuffer;  // lives until FlushAndStopBufferedLogging
  b->interval = interval;
  b->writer = std::thread(RunLogWriter, b);
  g_buffer.store(b, std::memory_order_release);
}

void StopBufferedLogging() {
  LogBuffer* b = g_buffer.load();
  if (b == nullptr) return;
  {
    std::lock_guard lock(b->mu);
    b->stopping = true;  // later lines are written directly
  }
  b->cv.notify_one();
  b->writer.join();  // writes what is pending
  // Intentionally leaked: a concurrent BufferLine may still hold a pointer.
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
bool DebugLogging() { return g_level.load(std::memory_order_relaxed) <= static_cast<int>(LogLevel::kDebug); }

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

namespace {
bool Enabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}
}  // namespace

void LogDebug(std::string_view event, LogFields fields) {
  if (Enabled(LogLevel::kDebug)) Write("debug", event, fields);
}
void LogInfo(std::string_view event, LogFields fields) {
  if (Enabled(LogLevel::kInfo)) Write("info", event, fields);
}
void LogWarn(std::string_view event, LogFields fields) {
  if (Enabled(LogLevel::kWarn)) Write("warn", event, fields);
}
void LogError(std::string_view event, LogFields fields) { Write("error", event, fields); }

}  // namespace recharge
