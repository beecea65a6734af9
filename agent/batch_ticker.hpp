// BatchTicker: the agent's one clock for work batched under a stream
// (issue 17). While records flow it ticks every `period` (batch.delay_ms) on a
// periodic timerfd of its own, armed once when work starts and disarmed once
// the work is done: no timer is re-armed per tick or per event. At each tick
// one callback runs: the sources drain their sockets (taken out of epoll while
// they are busy, so that datagrams arriving between ticks wake nobody), the
// correlator releases what is due and the pipeline writes the tick's records
// with one write per output. Per tick that is one epoll_wait, one recvmmsg
// per busy socket and one write.
//
// The timerfd is registered edge-triggered (as Asio registers every
// descriptor) and never read: each expiry is a new edge, so it is reported
// once per period without a read(2).
//
// Single-threaded: runs on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <functional>
#include <optional>

#include "xfrm/result.hpp"

namespace ipsec {

class BatchTicker {
 public:
  // Runs at each tick; returns true while there is work for a later tick
  // (a socket still busy, records held). After `kLinger` idle ticks in a row
  // the ticker stops until the next wake().
  using Tick = std::function<bool()>;
  static constexpr int kLinger = 2;

  BatchTicker(boost::asio::io_context& io, std::chrono::milliseconds period);
  ~BatchTicker();
  BatchTicker(const BatchTicker&) = delete;
  BatchTicker& operator=(const BatchTicker&) = delete;

  // Creates the timerfd. Period 0, or a failure: disabled (callers then work
  // at once, as without batching).
  Result<Unit> start(Tick tick);
  bool enabled() const { return desc_.has_value(); }
  std::chrono::milliseconds period() const { return period_; }
  // Work is waiting: tick from now on (the first tick one period from now).
  void wake();
  // Inside the tick callback (the pipeline then leaves the flush to the tick).
  bool in_tick() const { return in_tick_; }
  bool ticking() const { return ticking_; }
  void stop();

  std::uint64_t ticks() const { return ticks_; }

 private:
  void wait();
  void on_expiry();
  void set(bool on);

  boost::asio::io_context& io_;
  std::chrono::milliseconds period_;
  Tick tick_;
  std::optional<boost::asio::posix::stream_descriptor> desc_;
  bool ticking_{false};
  bool waiting_{false};
  bool in_tick_{false};
  int idle_{0};
  std::uint64_t ticks_{0};
};

}  // namespace ipsec
