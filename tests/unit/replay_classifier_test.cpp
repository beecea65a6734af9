#include "audit/replay_classifier.hpp"

#include <gtest/gtest.h>

using namespace ipsec;

// The recorded case (shared/kernel-facts console.log): window 32, two
// duplicates of seq 4 (replay 0 -> 2), then 40 fresh packets and seq 4 again
// (replay-window 0 -> 1).
TEST(ReplayClassifier, CountersDecideExactly) {
  auto v = classify_replay(2, {0, 0}, {2, 0}, 4, 4, 32);
  EXPECT_FALSE(v.below_window);
  EXPECT_TRUE(v.exact);
  v = classify_replay(1, {2, 0}, {2, 1}, 4, 0x2c, 32);
  EXPECT_TRUE(v.below_window);
  EXPECT_TRUE(v.exact);
}

TEST(ReplayClassifier, MixedOrMismatchedCountersInferFromTheWindow) {
  // One of each since the last read: the counters cannot say which is which.
  auto in = classify_replay(2, {0, 0}, {1, 1}, 40, 44, 32);
  EXPECT_FALSE(in.exact);
  EXPECT_FALSE(in.below_window);  // 44 - 40 = 4 < 32
  auto low = classify_replay(2, {0, 0}, {1, 1}, 4, 44, 32);
  EXPECT_FALSE(low.exact);
  EXPECT_TRUE(low.below_window);  // 44 - 4 = 40 >= 32
  // More drops counted than records held (records lost or still in flight).
  EXPECT_FALSE(classify_replay(1, {0, 0}, {3, 0}, 44, 44, 32).exact);
  // Exactly at the edge: diff == window is below (the kernel's >=).
  EXPECT_TRUE(classify_replay(2, {0, 0}, {1, 1}, 12, 44, 32).below_window);
  EXPECT_FALSE(classify_replay(2, {0, 0}, {1, 1}, 13, 44, 32).below_window);
}

TEST(ReplayClassifier, CounterWrapAndMissingFields) {
  auto v = classify_replay(1, {0xFFFFFFFFu, 0}, {0, 0}, 5, 5, 32);
  EXPECT_TRUE(v.exact);
  EXPECT_FALSE(v.below_window);
  EXPECT_FALSE(classify_replay(0, {0, 0}, {0, 0}, std::nullopt, 10, 32).below_window);
  EXPECT_FALSE(classify_replay(2, {0, 0}, {1, 1}, 4, 44, 0).below_window) << "no window, nothing is below it";
}
