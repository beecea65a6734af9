// SaContext: what a record says about the SA it concerns (the `sa` object),
// as typed values; JsonWriter serialises it. Built from the table's entry at
// most once per SA change and shared by every record that names that state of
// the SA. Holds only allow-listed fields (XfrmSa has no key material).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xfrm/xfrm_message.hpp"

namespace ipsec {

// Which way an SA carries traffic. Linux 6.1 stores no direction for an SA
// (XFRMA_SA_DIR came in 6.10): the policies whose templates it satisfies say.
enum class SaDirection : std::uint8_t { unknown, in, out };
enum class DirectionSource : std::uint8_t { none, kernel, policy };
// Why the direction is unknown (none when it is known).
enum class DirectionPending : std::uint8_t {
  none,
  no_policy,  // no policy template matches the SA (yet: IKE daemons install SAs before their policies)
  both_ways,  // policies of both directions match it
};

std::string proto_name(std::uint8_t proto);  // "esp", "ah", ... or the number
std::string mode_name(std::uint8_t mode);    // "transport", "tunnel", ...
std::string policy_dir_name(std::uint8_t dir);
const char* direction_name(SaDirection d);
const char* direction_source_name(DirectionSource s);
const char* direction_pending_name(DirectionPending p);

struct SaContext {
  XfrmSa sa;
  std::string netns;
  SaDirection direction{SaDirection::unknown};
  DirectionSource direction_source{DirectionSource::none};
  DirectionPending direction_pending{DirectionPending::no_policy};
  // The `sa` object as JsonWriter writes it, made once with the context
  // (sa_json) so the records sharing it copy the text; empty: JsonWriter
  // serialises the fields above. `json`: the whole object (change records);
  // `packet_json`: what names the SA (packet records, XfrmTable::context
  // makes it).
  std::string json{};
  std::string packet_json{};
};

// How a packet event was matched to the SAs of the watched tables.
enum class SaMatch : std::uint8_t {
  none,          // one SA, no choice made (or no SA at all)
  by_direction,  // several had (dst, SPI); the direction left one
  ambiguous,     // several fit equally: none is named, see the candidates
};
const char* sa_match_name(SaMatch m);

// Why the kernel did not use a candidate SA (on incorrect-spi).
enum class CandidateReason : std::uint8_t {
  none,                 // (ambiguous matches: any of them may be it)
  other_netns,          // the SA takes any mark: the packet must have arrived in another netns
  other_mark_or_netns,  // the SA takes only packets with its mark
};
const char* candidate_reason_name(CandidateReason r);

struct SaCandidate {
  std::shared_ptr<const SaContext> sa;
  CandidateReason reason{CandidateReason::none};
};

}  // namespace ipsec
