#include "audit/sa_match.hpp"

namespace ipsec {

namespace {
bool takes_any_mark(const XfrmSa& sa) { return !sa.mark || sa.mark->mask == 0; }
}  // namespace

PacketSaMatch match_packet_event(Event& e, const std::vector<const XfrmTable*>& tables) {
  PacketSaMatch r;
  if (!e.dst || !e.spi) return r;
  if (e.kind == EventKind::incorrect_spi) {
    // The kernel looks an inbound SA up by (mark, dst, SPI, proto) in the
    // packet's netns and found none. An SA that takes any mark would have
    // been found in its own netns: the packet arrived elsewhere.
    for (const XfrmTable* t : tables)
      for (const SaEntry* s : t->find(*e.dst, *e.spi))
        e.sa_candidates.push_back(SaCandidate{t->context(*s), takes_any_mark(s->sa)
                                                                  ? CandidateReason::other_netns
                                                                  : CandidateReason::other_mark_or_netns});
    return r;
  }
  const SaDirection want = e.kind == EventKind::sequence_overflow ? SaDirection::out : SaDirection::in;
  std::vector<std::pair<std::size_t, const SaEntry*>> same, unknown;
  std::size_t all = 0;
  for (std::size_t i = 0; i < tables.size(); ++i)
    for (const SaEntry* s : tables[i]->find(*e.dst, *e.spi)) {
      ++all;
      if (s->direction == want)
        same.emplace_back(i, s);
      else if (s->direction == SaDirection::unknown)
        unknown.emplace_back(i, s);
    }
  r.hits = same.empty() ? std::move(unknown) : std::move(same);
  if (r.hits.size() == 1) {
    const auto& [i, s] = r.hits[0];
    e.sa = tables[i]->context(*s);
    e.netns = tables[i]->netns();
    // Say so when other SAs had this (dst, SPI) and the direction set them aside.
    if (all > 1) e.sa_match = SaMatch::by_direction;
  } else if (r.hits.size() > 1) {
    e.sa_match = SaMatch::ambiguous;
    for (const auto& [i, s] : r.hits) e.sa_candidates.push_back(SaCandidate{tables[i]->context(*s), {}});
  }
  return r;
}

}  // namespace ipsec
