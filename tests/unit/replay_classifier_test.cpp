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

// ESN: the audit record has the low 32 bits of the packet's number, the SA's
// replay state has seq_hi. Past a 2^32 boundary the low bits alone compare
// the wrong way.
TEST(ReplayClassifier, EsnNumbersAcrossA32BitBoundary) {
  const ReplayCounters mixed_before{0, 0}, mixed_after{1, 1};  // the counters cannot decide
  // Top 2^32 + 5 (seq_hi 1, seq 5): 0xFFFFFFF0 is 2^32 - 16, 21 below the top: inside a 32 window.
  auto in = classify_replay(2, mixed_before, mixed_after, 0xFFFFFFF0u, replay_window_top(1, 5), 32);
  EXPECT_FALSE(in.exact);
  EXPECT_FALSE(in.below_window);
  // Top 2^32 + 1000: the same packet is 1016 below the top, below the window.
  EXPECT_TRUE(classify_replay(2, mixed_before, mixed_after, 0xFFFFFFF0u, replay_window_top(1, 1000), 32).below_window);
  // Top 2 * 2^32 + 5: low bits 10 are 2^32 + 10, far below (not "above the top").
  EXPECT_TRUE(classify_replay(2, mixed_before, mixed_after, 10, replay_window_top(2, 5), 32).below_window);
  // Same subspace as before the boundary: unchanged.
  EXPECT_FALSE(classify_replay(2, mixed_before, mixed_after, 3, replay_window_top(1, 5), 32).below_window);
  EXPECT_TRUE(classify_replay(2, mixed_before, mixed_after, 0x80000000u, replay_window_top(1, 0x80000040u), 32)
                  .below_window);
  // At the edge across the boundary: top 2^32 + 15, packet 2^32 - 17 is exactly 32 below.
  EXPECT_TRUE(classify_replay(2, mixed_before, mixed_after, 0xFFFFFFEFu, replay_window_top(1, 15), 32).below_window);
  EXPECT_FALSE(classify_replay(2, mixed_before, mixed_after, 0xFFFFFFF0u, replay_window_top(1, 15), 32).below_window);
}

TEST(ReplayClassifier, WithoutEsnANumberAboveTheTopIsNotBelowTheWindow) {
  EXPECT_FALSE(classify_replay(2, {0, 0}, {1, 1}, 50, replay_window_top(0, 44), 32).below_window);
}
