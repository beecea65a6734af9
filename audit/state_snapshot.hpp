// The state snapshot: what each watched netns's SAD and SPD held at the last
// clean stop, by identity only, so that the next start can write what changed
// while the agent was stopped. An SA keeps (mark, if_id, dst, spi, proto),
// src, reqid, mode, flags and its selector; a policy its index, dir,
// selector, action, priority, type, mark, if_id and templates. No key, no
// algorithm, no counter. Pure: text in, text out.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "audit/event.hpp"
#include "xfrm/result.hpp"
#include "xfrm/xfrm_message.hpp"

namespace ipsec {

struct NetnsTables {
  std::vector<XfrmSa> sas;
  std::vector<XfrmPolicy> policies;
};
// By the netns's label (what records call it: names survive a reboot, inodes do not).
using StateSnapshot = std::map<std::string, NetnsTables>;

inline constexpr const char* kStateSnapshotFormat = "ipsec-audit-state/1";

// The snapshot file's text (one JSON object).
std::string snapshot_text(const StateSnapshot& s);
// Parses it back; anything malformed is an error (never an exception).
Result<StateSnapshot> parse_snapshot(std::string_view text);

// The sa-added / sa-deleted / policy-added / policy-deleted records that turn
// `before` (the snapshot) into `now` (the first dump), marked while_stopped,
// by XfrmTable's resync diff.
std::vector<Event> changes_while_stopped(const std::string& netns, NetnsTables before, NetnsTables now,
                                         std::chrono::system_clock::time_point t);

}  // namespace ipsec
