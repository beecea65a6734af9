// Telling 4961 from 4962. The kernel writes the same audit text
// (SA-replayed-pkt ... seqno=N) for a duplicate inside the replay window and
// for a sequence number below it; only the SA's per-SA counters differ:
// `replay` counts the first, `replay_window` the second. Pure.
#pragma once

#include <cstdint>
#include <optional>

namespace ipsec {

struct ReplayCounters {
  std::uint32_t replay{0};
  std::uint32_t replay_window{0};
};

struct ReplayVerdict {
  bool below_window{false};  // 4962, else 4961
  bool exact{false};         // decided by the counters alone ("counter"), else "inferred"
};

// `records`: replay records held for this SA since the last counter read;
// `before`/`after`: the SA's counters then and now; `window_top`/`window`:
// the SA's replay state now (highest sequence number seen, window size).
// For an ESN SA the top is 64 bits (seq_hi << 32 | seq) while the audit
// record carries only the low 32 bits of the packet's number: it is taken as
// the highest number at or below the top with those low bits (the window lies
// below the top, also across a 2^32 boundary). The counters decide when they
// moved by exactly `records` and all of one kind; otherwise each sequence
// number is placed against the window as it is now (the window may have moved
// on since the packet was dropped).
ReplayVerdict classify_replay(std::uint64_t records, const ReplayCounters& before, const ReplayCounters& after,
                              std::optional<std::uint32_t> seq, std::uint64_t window_top, std::uint32_t window);

// The 64-bit top of an SA's replay window: seq_hi << 32 | seq for ESN, else seq.
constexpr std::uint64_t replay_window_top(std::uint32_t seq_hi, std::uint32_t seq) {
  return (std::uint64_t{seq_hi} << 32) | seq;
}

}  // namespace ipsec
