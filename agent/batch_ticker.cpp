#include "agent/batch_ticker.hpp"

namespace ipsec {

void BatchTicker::wake() {
  idle_ = 0;
  if (!enabled() || ticking_) return;
  ticking_ = true;
  next_ = clock_.now() + period_;  // this wake-up's time: no read of its own
}

bool BatchTicker::run_if_due(Clock::time_point now) {
  if (!ticking_ || now < next_) return false;
  ++ticks_;
  now_ = now;
  in_tick_ = true;
  const bool busy = tick_ ? tick_() : false;
  in_tick_ = false;
  // On the grid while the loop keeps up; a tick that ran late does not make
  // the next ones come in a burst.
  next_ += period_;
  if (next_ <= now) next_ = now + period_;
  if (busy) {
    idle_ = 0;
  } else if (++idle_ >= kLinger) {
    ticking_ = false;
  }
  return true;
}

}  // namespace ipsec
