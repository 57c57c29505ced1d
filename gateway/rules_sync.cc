#include "gateway/rules_sync.h"

#include <boost/asio/redirect_error.hpp>

#include <charconv>

#include "io/log.h"
#include "io/strings.h"

namespace recharge {

RulesSync::RulesSync(RedisCommands& redis, RuleEngine& engine, const std::string& prefix,
                     std::chrono::milliseconds interval, std::chrono::milliseconds timeout)
    : redis_(redis),
      engine_(engine),
      key_(StrCat(prefix, ":{rules}:generation")),
      interval_(interval),
      timeout_(timeout) {}

asio::awaitable<void> RulesSync::Announce() {
  std::vector<std::string> incr = {"INCR", key_};
  absl::StatusOr<RedisReply> r =
      co_await redis_.Command(std::move(incr), std::chrono::steady_clock::now() + timeout_);
  if (!r.ok() || r->type != RedisReply::Type::kInteger) {
    LogWarn("rules_announce_failed",
            {{"error", r.ok() ? r->str : std::string(r.status().message())},
             {"effect", "the other replicas keep their rules until the next reload"}});
    co_return;
  }
  Raise(r->integer);  // this replica is at that generation already
}

bool RulesSync::Raise(int64_t generation) {
  int64_t before = seen_.load();
  while (generation > before && !seen_.compare_exchange_weak(before, generation)) {
  }
  return before >= 0 && generation > before;
}

asio::awaitable<std::optional<int64_t>> RulesSync::Read() {
  std::vector<std::string> get = {"GET", key_};
  absl::StatusOr<RedisReply> r =
      co_await redis_.Command(std::move(get), std::chrono::steady_clock::now() + timeout_);
  if (!r.ok()) co_return std::nullopt;
  if (r->type == RedisReply::Type::kNil) co_return 0;
  int64_t value = 0;
  if (r->type != RedisReply::Type::kString ||
      std::from_chars(r->str.data(), r->str.data() + r->str.size(), value).ec != std::errc()) {
    co_return std::nullopt;
  }
  co_return value;
}

asio::awaitable<void> RulesSync::Run() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    std::optional<int64_t> generation = co_await Read();
    // The first read only learns where the cluster is (the file was loaded
    // at start-up); a later one that finds the generation moved on reloads.
    if (generation && Raise(*generation)) {
      ++followed_;
      (void)engine_.Reload(StrCat("replica-sync (generation ", *generation, ")"));
    }
    timer.expires_after(interval_);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

}  // namespace recharge
