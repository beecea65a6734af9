#include "agent/batch_ticker.hpp"

#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ipsec {

BatchTicker::BatchTicker(boost::asio::io_context& io, std::chrono::milliseconds period) : io_(io), period_(period) {}

BatchTicker::~BatchTicker() { stop(); }

Result<Unit> BatchTicker::start(Tick tick) {
  tick_ = std::move(tick);
  if (period_.count() <= 0) return Unit{};
  const int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return make_error(Errc::io, std::string("timerfd_create: ") + std::strerror(errno), errno);
  desc_.emplace(io_, fd);
  return Unit{};
}

void BatchTicker::set(bool on) {
  itimerspec its{};
  if (on) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(period_).count();
    its.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
    its.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
    its.it_interval = its.it_value;
  }
  // Cannot fail with a valid descriptor and value.
  if (::timerfd_settime(desc_->native_handle(), 0, &its, nullptr) != 0) on = false;
  ticking_ = on;
}

void BatchTicker::wake() {
  idle_ = 0;
  if (!desc_ || ticking_) return;
  set(true);
  if (!waiting_) wait();
}

void BatchTicker::wait() {
  waiting_ = true;
  desc_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    waiting_ = false;
    if (ec) return;  // stopped
    on_expiry();
  });
}

void BatchTicker::on_expiry() {
  if (!ticking_) return;  // an expiry from before a disarm: wake() waits again
  // At once: an expiry during the callback (a tick longer than the period)
  // is then the next tick, not lost.
  wait();
  ++ticks_;
  in_tick_ = true;
  const bool busy = tick_ ? tick_() : false;
  in_tick_ = false;
  if (busy) {
    idle_ = 0;
    return;
  }
  if (++idle_ >= kLinger && ticking_) set(false);
}

void BatchTicker::stop() {
  if (!desc_) return;
  boost::system::error_code ec;
  desc_->close(ec);
  desc_.reset();
  ticking_ = false;
}

}  // namespace ipsec
