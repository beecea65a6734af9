// BatchTicker: when it ticks and when it stops (time points passed in; no
// timing is measured).
#include <gtest/gtest.h>

#include "agent/batch_ticker.hpp"

namespace ipsec {
namespace {

using std::chrono::milliseconds;

TEST(LoopClock, OneReadPerWakeUpWhileTheLoopRunsEveryCallOtherwise) {
  LoopClock c;
  const auto a = c.now();
  // Not caching (start-up, stop): each call reads the clock, which goes on.
  auto b = c.now();
  for (int i = 0; i < 1000000 && b == a; ++i) b = c.now();
  EXPECT_GT(b, a);
  c.set_caching(true);
  const auto w1 = c.now();
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(c.now(), w1) << "one wake-up, one time";
  c.new_wakeup();
  auto w2 = c.now();
  EXPECT_GE(w2, w1);
  for (int i = 0; i < 1000000 && w2 == w1; ++i) {
    c.new_wakeup();
    w2 = c.now();
  }
  EXPECT_GT(w2, w1) << "read again after the next wait";
}

TEST(BatchTicker, PeriodZeroIsDisabledAndNeverTicks) {
  BatchTicker t(milliseconds(0));
  int ran = 0;
  t.set_tick([&] {
    ++ran;
    return true;
  });
  EXPECT_FALSE(t.enabled());
  t.wake();
  EXPECT_FALSE(t.ticking());
  EXPECT_FALSE(t.run_if_due(BatchTicker::Clock::now() + milliseconds(1000)));
  EXPECT_EQ(ran, 0);
}

TEST(BatchTicker, TicksOncePerPeriodWhileBusyAndStopsAfterTwoIdleTicks) {
  BatchTicker t(milliseconds(50));
  bool busy = true;
  int ran = 0;
  t.set_tick([&] {
    ++ran;
    EXPECT_TRUE(t.in_tick());
    return busy;
  });
  EXPECT_FALSE(t.ticking());
  t.wake();
  ASSERT_TRUE(t.ticking());
  const auto first = t.next();
  EXPECT_FALSE(t.run_if_due(first - milliseconds(1)));  // not yet due
  EXPECT_EQ(ran, 0);
  EXPECT_TRUE(t.run_if_due(first));
  EXPECT_FALSE(t.in_tick());
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(t.next(), first + milliseconds(50));  // on the grid, not re-armed from the call
  EXPECT_FALSE(t.run_if_due(first + milliseconds(10)));
  // A wake-up while ticking changes nothing but the idle count.
  t.wake();
  EXPECT_EQ(t.next(), first + milliseconds(50));
  busy = false;
  EXPECT_TRUE(t.run_if_due(t.next()));
  EXPECT_TRUE(t.ticking());  // one idle tick: still ticking
  EXPECT_TRUE(t.run_if_due(t.next()));
  EXPECT_FALSE(t.ticking());  // two: stopped until the next wake()
  EXPECT_EQ(ran, 3);
  t.wake();
  EXPECT_TRUE(t.ticking());
}

TEST(BatchTicker, ALateTickDoesNotCauseABurst) {
  BatchTicker t(milliseconds(20));
  t.set_tick([] { return true; });
  t.wake();
  const auto late = t.next() + milliseconds(500);
  EXPECT_TRUE(t.run_if_due(late));
  EXPECT_EQ(t.next(), late + milliseconds(20));
  EXPECT_FALSE(t.run_if_due(late + milliseconds(19)));
}

}  // namespace
}  // namespace ipsec
