// Which SA a kernel audit packet event is about. Kernel audit names no netns,
// no mark and no direction; the event names (dst, SPI) and, by its kind, the
// direction (an overflow is outbound, the rest inbound). Pure.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "audit/event.hpp"
#include "audit/xfrm_table.hpp"

namespace ipsec {

struct PacketSaMatch {
  // (index into `tables`, entry): one = the SA named; several = ambiguous.
  std::vector<std::pair<std::size_t, const SaEntry*>> hits;
};

// Sets e.sa, e.netns, e.sa_match and e.sa_candidates:
//  - an SA known to run the other way is no candidate; one known to run the
//    event's way beats one of unknown direction; among equals nothing is
//    guessed (sa_match ambiguous, the candidates listed);
//  - incorrect-spi (4965) means the kernel matched no SA: `sa` stays null, and
//    the SAs that have this (dst, SPI) (in another netns, or with a mark the
//    packet did not carry) are listed as candidates it did not match, with
//    the reason where one can be told.
PacketSaMatch match_packet_event(Event& e, const std::vector<const XfrmTable*>& tables);
// The same, the hits into `hits` (cleared first): a caller that reuses it
// allocates nothing per record once warm (the agent's packet path).
void match_packet_event(Event& e, const std::vector<const XfrmTable*>& tables,
                        std::vector<std::pair<std::size_t, const SaEntry*>>& hits);

}  // namespace ipsec
