// BatchTicker: the agent's one clock for work batched under a stream
// (issue 17). While records flow it ticks every `period` (batch.delay_ms); at
// each tick one callback runs: the sources drain their sockets (taken out of
// epoll while they are busy, so that datagrams arriving between ticks wake
// nobody), the correlator releases what is due, the replay resolver sends
// the GETSAs due and reads their answers (ReplayResolver::tick) and the
// pipeline writes the tick's records with one write per output.
//
// The ticks are not a timer: the daemon's loop runs the io_context with
// run_one_until(next tick), so the wait for the next tick is the timeout of
// the epoll_wait the loop makes anyway. No timerfd is set, read or re-armed
// per tick, and no descriptor re-armed (Asio's async_wait costs an
// EPOLL_CTL_MOD per call). Per tick under a stream: one epoll_wait, one
// recvmmsg per busy socket, one write per output.
//
// Single-threaded: runs on the io_context thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace ipsec {

// LoopClock: the agent's time at one wake-up of its loop (issue 17). Under
// TCG every clock read is an emulated HPET read, dearer than the record it
// stamps, so the per-record paths (the flood limiter's time, the ticker's
// due check) share one read per wake-up: the daemon's loop calls
// new_wakeup() before each wait, and now() reads the steady clock at its
// first call after that, then returns the same time until the next wait.
// Outside the loop (start-up, stop, tests) every call reads the clock.
class LoopClock {
 public:
  using Clock = std::chrono::steady_clock;
  Clock::time_point now() {
    if (!caching_) return Clock::now();
    if (!have_) {
      now_ = Clock::now();
      have_ = true;
    }
    return now_;
  }
  void new_wakeup() { have_ = false; }
  // The loop runs: one read per wake-up from now on (false: every call reads).
  void set_caching(bool on) {
    caching_ = on;
    have_ = false;
  }

 private:
  Clock::time_point now_{};
  bool have_{false};
  bool caching_{false};
};

class BatchTicker {
 public:
  using Clock = std::chrono::steady_clock;
  // Runs at each tick; returns true while there is work for a later tick
  // (a socket still busy, records held). After `kLinger` idle ticks in a row
  // the ticker stops until the next wake().
  using Tick = std::function<bool()>;
  static constexpr int kLinger = 2;

  // Period 0: disabled (callers then work at once, as without batching).
  explicit BatchTicker(std::chrono::milliseconds period) : period_(period) {}
  void set_tick(Tick t) { tick_ = std::move(t); }

  bool enabled() const { return period_.count() > 0; }
  std::chrono::milliseconds period() const { return period_; }
  // Work is waiting: tick from now on (the first tick one period from now).
  void wake();
  bool ticking() const { return ticking_; }
  // When the next tick is due (ticking only).
  Clock::time_point next() const { return next_; }
  // Runs the tick if it is due; true if it ran.
  bool run_if_due(Clock::time_point now);
  // Inside the tick callback (the pipeline then leaves the flush to the tick).
  bool in_tick() const { return in_tick_; }
  // Inside the tick callback: the time the tick was run for (no clock read).
  Clock::time_point now() const { return now_; }
  std::uint64_t ticks() const { return ticks_; }
  // The loop's time (one read per wake-up while the loop runs).
  LoopClock& clock() { return clock_; }

 private:
  LoopClock clock_;
  std::chrono::milliseconds period_;
  Tick tick_;
  Clock::time_point next_{};
  Clock::time_point now_{};
  bool ticking_{false};
  bool in_tick_{false};
  int idle_{0};
  std::uint64_t ticks_{0};
};

}  // namespace ipsec
