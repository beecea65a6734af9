// ChangeCorrelator: joins the kernel audit SAD-*/SPD-* record (who made the
// change: auid, ses, subj) with the XFRM message for the same change (what
// changed, in which netns), only when the match is unambiguous.
//
// Facts from Debian's 6.1 kernel that shape it: the XFRM multicast is sent
// from the syscall, the audit record later from kauditd, so either can come
// first; a flush gives N audit records under one serial but one FLUSH
// message; an inbound and an outbound policy with the same selector give
// identical audit lines. So both sides wait up to `window` and are grouped by
// (change, src, dst, spi); a group is decided once its oldest member is older
// than the window: one XFRM + one audit = "matched" (one record); one side
// only = "none" / "unmatched"; anything else = "ambiguous" (every record on
// its own). Pure: time is passed in. Single-threaded.
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <vector>

#include "audit/event.hpp"

namespace ipsec {

class ChangeCorrelator {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ChangeCorrelator(std::chrono::milliseconds window) : window_(window) {}

  // True for the kinds this correlator joins (SA/policy added/deleted).
  static bool joins(EventKind k);
  // True for the events it takes: those kinds, and a hard SA expiry (which
  // the kernel audits as SAD-delete).
  static bool accepts(const Event& e);

  void add(Event e, Clock::time_point now);
  // Decided events, oldest first. `all` decides everything (shutdown).
  std::vector<Event> take_ready(Clock::time_point now, bool all = false);
  // When the next decision is due, if anything is pending.
  std::optional<Clock::time_point> next_deadline() const;
  std::size_t pending() const { return pending_.size(); }

 private:
  struct Pending {
    Event event;
    Clock::time_point at;
    bool done{false};
  };
  static bool same_change(const Event& a, const Event& b);

  std::chrono::milliseconds window_;
  std::deque<Pending> pending_;
};

}  // namespace ipsec
