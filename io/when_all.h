// WhenAll: runs several coroutines at once and waits for all of them, without
// a thread (DESIGN §3). The counter store sends a decision's per-slot scripts
// to their Redis Cluster nodes with it, so the decision waits one round-trip
// time, not one per node.
//
// Each task is co_spawned on the caller's executor; their results come back
// in the order of `tasks`. An exception thrown by a task is rethrown here once
// every task has ended (the project's coroutines return Status instead).
//
// Thread-safety: the tasks may complete on any thread of the executor's
// context; the caller is resumed on its own executor.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "io/asio.h"

namespace recharge {

template <typename T>
asio::awaitable<std::vector<T>> WhenAll(std::vector<asio::awaitable<T>> tasks) {
  if (tasks.empty()) co_return std::vector<T>();
  struct State {
    std::mutex mu;
    size_t left = 0;
    std::vector<std::optional<T>> results;
    std::exception_ptr error;
    std::function<void()> done;  // resumes the caller; set before any task runs
  };
  auto state = std::make_shared<State>();
  state->left = tasks.size();
  state->results.resize(tasks.size());
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto initiation = [state, executor, &tasks](auto handler) {
    using Handler = decltype(handler);
    auto shared = std::make_shared<Handler>(std::move(handler));
    state->done = [shared] {
      auto ex = asio::get_associated_executor(*shared);
      asio::post(ex, [shared]() mutable { std::move(*shared)(); });
    };
    // Nothing of the caller's frame is touched once the first task is
    // spawned: the last one to end resumes the caller, which may then return
    // (on another thread) while this loop is still running.
    std::vector<asio::awaitable<T>> spawning = std::move(tasks);
    for (size_t i = 0; i < spawning.size(); ++i) {
      asio::co_spawn(executor, std::move(spawning[i]), [state, i](std::exception_ptr e, T result) {
        bool last = false;
        {
          std::lock_guard<std::mutex> lock(state->mu);
          if (e && !state->error) state->error = e;
          if (!e) state->results[i].emplace(std::move(result));
          last = --state->left == 0;
        }
        if (last) state->done();
      });
    }
  };
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(initiation,
                                                                         asio::use_awaitable);
  if (state->error) std::rethrow_exception(state->error);
  std::vector<T> out;
  out.reserve(state->results.size());
  for (std::optional<T>& r : state->results) out.push_back(std::move(*r));
  co_return out;
}

}  // namespace recharge
