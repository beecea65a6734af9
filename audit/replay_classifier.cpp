#include "audit/replay_classifier.hpp"

namespace ipsec {

ReplayVerdict classify_replay(std::uint64_t records, const ReplayCounters& before, const ReplayCounters& after,
                              std::optional<std::uint32_t> seq, std::uint64_t window_top, std::uint32_t window) {
  // The kernel's counters are 32-bit and wrap.
  const std::uint32_t d_replay = after.replay - before.replay;
  const std::uint32_t d_window = after.replay_window - before.replay_window;
  if (records > 0 && std::uint64_t{d_replay} + d_window == records && (d_replay == 0 || d_window == 0))
    return ReplayVerdict{d_window > 0, true};
  if (!seq || window == 0) return ReplayVerdict{false, false};
  // The packet's full number: the top's high half with the record's low half,
  // one 2^32 subspace lower when that would lie above the top (ESN past a
  // 2^32 boundary). Without ESN the high half is 0 and this is the number.
  std::uint64_t full = (window_top & ~std::uint64_t{0xFFFFFFFF}) | *seq;
  if (full > window_top) {
    if (window_top >> 32 == 0) return ReplayVerdict{false, false};  // above the top: not below the window
    full -= std::uint64_t{1} << 32;
  }
  // As the kernel decides it (xfrm_replay_check): diff = top - seq >= window.
  return ReplayVerdict{window_top - full >= window, false};
}

}  // namespace ipsec
