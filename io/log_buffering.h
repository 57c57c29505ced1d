// Buffered mode for the log lines of io/log.h, off by default: for a server
// that logs a line per request (the PSP sandbox). Lines are queued and a
// background thread writes them in batches, one write(2) every few
// milliseconds: still whole lines, in order, but a crash loses the lines of
// the last interval.
//
// Thread-safety: Enable once at start-up, Stop once before exiting; lines
// may be logged from any thread meanwhile.
#pragma once

#include <chrono>

namespace recharge {

void EnableBufferedLogging(std::chrono::milliseconds interval);
// Writes what is queued; later lines are written directly again.
void StopBufferedLogging();

}  // namespace recharge
