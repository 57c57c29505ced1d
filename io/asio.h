// The one include for Boost.Asio coroutines in this project.
//
// Boost 1.74 with GCC 12 needs <utility> before <boost/asio/awaitable.hpp>
// (a missing include in Boost), so every file goes through this header.
#pragma once

#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace asio = boost::asio;

// GCC 12 destroys the captures of a lambda written inside a co_await
// expression twice (co_await f([x] {...}) frees x twice). Bind such a lambda
// to a named variable first, then co_await with the variable.
