#include "audit/correlator.hpp"

namespace ipsec {

bool ChangeCorrelator::joins(EventKind k) {
  return k == EventKind::sa_added || k == EventKind::sa_deleted || k == EventKind::policy_added ||
         k == EventKind::policy_deleted;
}

namespace {
// A hard SA expiry: XFRM says EXPIRE hard=1 (and no DELSA), audit says SAD-delete.
bool is_hard_expiry(const Event& e) {
  return e.kind == EventKind::sa_expired && e.detail.is_object() && e.detail.value("expire", "") == "hard";
}
EventKind change_kind(const Event& e) { return is_hard_expiry(e) ? EventKind::sa_deleted : e.kind; }
}  // namespace

bool ChangeCorrelator::accepts(const Event& e) { return joins(e.kind) || is_hard_expiry(e); }

bool ChangeCorrelator::same_change(const Event& a, const Event& b) {
  const EventKind k = change_kind(a);
  if (k != change_kind(b) || a.src != b.src || a.dst != b.dst) return false;
  const bool sa = k == EventKind::sa_added || k == EventKind::sa_deleted;
  return !sa || a.spi == b.spi;
}

void ChangeCorrelator::add(Event e, Clock::time_point now) { pending_.push_back(Pending{std::move(e), now}); }

std::optional<ChangeCorrelator::Clock::time_point> ChangeCorrelator::next_deadline() const {
  if (pending_.empty()) return std::nullopt;
  return pending_.front().at + window_;
}

std::vector<Event> ChangeCorrelator::take_ready(Clock::time_point now, bool all) {
  std::vector<Event> out;
  while (!pending_.empty()) {
    Pending& head = pending_.front();
    if (head.done) {
      pending_.pop_front();
      continue;
    }
    if (!all && now - head.at < window_) break;
    // The group: every pending entry describing the same change as the head.
    std::vector<Pending*> xfrm, audit;
    for (auto& p : pending_) {
      if (p.done || !same_change(p.event, head.event)) continue;
      (p.event.source == Source::kernel_audit ? audit : xfrm).push_back(&p);
    }
    if (xfrm.size() == 1 && audit.size() == 1) {
      Event merged = std::move(xfrm[0]->event);
      const Event& a = audit[0]->event;
      merged.kernel = a.kernel;
      merged.audit = a.audit;
      if (is_hard_expiry(merged) && merged.audit) {
        // The kernel's timer deleted the SA; the audit record names whatever
        // task happened to run then, which says nothing about who did it.
        merged.audit = KernelAuditFields{a.audit->op, {}, {}, {}, a.audit->res, {}, {}, {}};
        merged.message += "; the kernel deleted it";
      }
      merged.correlation = "matched";
      out.push_back(std::move(merged));
    } else {
      const char* how = xfrm.empty() ? "unmatched" : audit.empty() ? "none" : "ambiguous";
      // Emit in arrival order.
      for (auto& p : pending_) {
        if (p.done || !same_change(p.event, head.event)) continue;
        p.event.correlation = how;
        out.push_back(std::move(p.event));
        p.done = true;
      }
    }
    for (auto* p : xfrm) p->done = true;
    for (auto* p : audit) p->done = true;
  }
  return out;
}

}  // namespace ipsec
