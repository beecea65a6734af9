#include "audit/replay_classifier.hpp"

namespace ipsec {

ReplayVerdict classify_replay(std::uint64_t records, const ReplayCounters& before, const ReplayCounters& after,
                              std::optional<std::uint32_t> seq, std::uint32_t window_top, std::uint32_t window) {
  // The kernel's counters are 32-bit and wrap.
  const std::uint32_t d_replay = after.replay - before.replay;
  const std::uint32_t d_window = after.replay_window - before.replay_window;
  if (records > 0 && std::uint64_t{d_replay} + d_window == records && (d_replay == 0 || d_window == 0))
    return ReplayVerdict{d_window > 0, true};
  // As the kernel decides it (xfrm_replay_check): diff = top - seq >= window.
  const bool below = seq && window > 0 && *seq <= window_top && window_top - *seq >= window;
  return ReplayVerdict{below, false};
}

}  // namespace ipsec
