#include "audit/sa_context.hpp"

#include <netinet/in.h>

namespace ipsec {

std::string proto_name(std::uint8_t p) {
  switch (p) {
    case IPPROTO_ESP:
      return "esp";
    case IPPROTO_AH:
      return "ah";
    case IPPROTO_COMP:
      return "comp";
    case IPPROTO_ROUTING:
      return "route2";
    case IPPROTO_DSTOPTS:
      return "hao";
    default:
      return std::to_string(p);
  }
}

std::string mode_name(std::uint8_t m) {
  switch (m) {
    case 0:
      return "transport";
    case 1:
      return "tunnel";
    case 2:
      return "ro";
    case 3:
      return "in_trigger";
    case 4:
      return "beet";
    default:
      return std::to_string(m);
  }
}

std::string policy_dir_name(std::uint8_t d) {
  return d == 0 ? "in" : d == 1 ? "out" : d == 2 ? "fwd" : std::to_string(d);
}

const char* direction_name(SaDirection d) {
  switch (d) {
    case SaDirection::in:
      return "in";
    case SaDirection::out:
      return "out";
    case SaDirection::unknown:
      break;
  }
  return "unknown";
}

const char* direction_source_name(DirectionSource s) {
  switch (s) {
    case DirectionSource::kernel:
      return "kernel";
    case DirectionSource::policy:
      return "policy";
    case DirectionSource::none:
      break;
  }
  return "none";
}

const char* direction_pending_name(DirectionPending p) {
  switch (p) {
    case DirectionPending::no_policy:
      return "no-matching-policy";
    case DirectionPending::both_ways:
      return "policies-both-ways";
    case DirectionPending::none:
      break;
  }
  return "";
}

const char* sa_match_name(SaMatch m) {
  switch (m) {
    case SaMatch::by_direction:
      return "by-direction";
    case SaMatch::ambiguous:
      return "ambiguous";
    case SaMatch::none:
      break;
  }
  return "";
}

const char* candidate_reason_name(CandidateReason r) {
  switch (r) {
    case CandidateReason::other_netns:
      return "other-netns";
    case CandidateReason::other_mark_or_netns:
      return "other-mark-or-netns";
    case CandidateReason::none:
      break;
  }
  return "";
}

}  // namespace ipsec
