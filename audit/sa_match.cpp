#include "audit/sa_match.hpp"

namespace ipsec {

namespace {
bool takes_any_mark(const XfrmSa& sa) { return !sa.mark || sa.mark->mask == 0; }
}  // namespace

PacketSaMatch match_packet_event(Event& e, const std::vector<const XfrmTable*>& tables) {
  PacketSaMatch r;
  match_packet_event(e, tables, r.hits);
  return r;
}

void match_packet_event(Event& e, const std::vector<const XfrmTable*>& tables,
                        std::vector<std::pair<std::size_t, const SaEntry*>>& hits) {
  hits.clear();
  if (!e.dst || !e.spi) return;
  if (e.kind == EventKind::incorrect_spi) {
    // The kernel looks an inbound SA up by (mark, dst, SPI, proto) in the
    // packet's netns and found none. An SA that takes any mark would have
    // been found in its own netns: the packet arrived elsewhere.
    for (const XfrmTable* t : tables)
      t->for_each_sa(*e.dst, *e.spi, [&](const SaEntry& s) {
        e.sa_candidates.push_back(SaCandidate{t->context(s), takes_any_mark(s.sa) ? CandidateReason::other_netns
                                                                                   : CandidateReason::other_mark_or_netns});
      });
    return;
  }
  const SaDirection want = e.kind == EventKind::sequence_overflow ? SaDirection::out : SaDirection::in;
  // Two passes over the (few) SAs with this (dst, SPI), no vector of their
  // own: count, then keep those of the way that wins (the event's own way
  // beats unknown; an SA known to run the other way is never a candidate).
  std::size_t all = 0, same = 0;
  for (const XfrmTable* t : tables)
    t->for_each_sa(*e.dst, *e.spi, [&](const SaEntry& s) {
      ++all;
      if (s.direction == want) ++same;
    });
  if (all == 0) return;
  const SaDirection keep = same > 0 ? want : SaDirection::unknown;
  for (std::size_t i = 0; i < tables.size(); ++i)
    tables[i]->for_each_sa(*e.dst, *e.spi, [&](const SaEntry& s) {
      if (s.direction == keep) hits.emplace_back(i, &s);
    });
  if (hits.size() == 1) {
    const auto& [i, s] = hits[0];
    e.sa = tables[i]->context(*s);
    e.netns = tables[i]->netns();
    // Say so when other SAs had this (dst, SPI) and the direction set them aside.
    if (all > 1) e.sa_match = SaMatch::by_direction;
  } else if (hits.size() > 1) {
    e.sa_match = SaMatch::ambiguous;
    for (const auto& [i, s] : hits) e.sa_candidates.push_back(SaCandidate{tables[i]->context(*s), {}});
  }
}

}  // namespace ipsec
