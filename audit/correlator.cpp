#include "audit/correlator.hpp"

#include <algorithm>
#include <cstring>

namespace ipsec {

const char* correlation_name(Correlation c) {
  switch (c) {
    case Correlation::matched:
      return "matched";
    case Correlation::paired:
      return "paired";
    case Correlation::ambiguous:
      return "ambiguous";
    case Correlation::none:
      return "none";
    case Correlation::unmatched:
      break;
  }
  return "unmatched";
}

const char* replay_basis_name(ReplayBasis b) {
  switch (b) {
    case ReplayBasis::counter:
      return "counter";
    case ReplayBasis::inferred:
      return "inferred";
    case ReplayBasis::unknown:
      break;
  }
  return "unknown";
}

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

// Everything an audit record says about a change beyond its addresses and SPI.
bool same_say(const KernelAuditFields& a, const KernelAuditFields& b) {
  return a.op == b.op && a.auid == b.auid && a.ses == b.ses && a.subj == b.subj && a.res == b.res &&
         a.src_prefixlen == b.src_prefixlen && a.dst_prefixlen == b.dst_prefixlen && a.other == b.other;
}

// The XFRM message with what the audit record says of who made the change.
Event merge(Event x, Event&& a, Correlation how) {
  x.kernel = a.kernel;
  x.audit = std::move(a.audit);
  if (is_hard_expiry(x) && x.audit) {
    // The kernel's timer deleted the SA; the audit record names whatever
    // task happened to run then, which says nothing about who did it.
    x.audit = KernelAuditFields{x.audit->op, {}, {}, {}, x.audit->res, {}, {}, {}};
    x.message += "; the kernel deleted it";
  }
  x.correlation = how;
  return x;
}
}  // namespace

bool ChangeCorrelator::accepts(const Event& e) { return joins(e.kind) || is_hard_expiry(e); }

std::size_t ChangeCorrelator::KeyHash::operator()(const Key& k) const {
  // Multiply-xorshift over 64-bit words of what tells changes apart.
  std::uint64_t h = static_cast<std::uint64_t>(k.kind) * 0x9E3779B97F4A7C15ULL + k.spi.value_or(0);
  auto mix = [&](std::uint64_t w) {
    h ^= w + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
  };
  for (const auto* a : {&k.src, &k.dst}) {
    if (!*a) {
      mix(0);
      continue;
    }
    std::uint64_t w[2];
    std::memcpy(w, (*a)->bytes.data(), sizeof w);
    mix(w[0] ^ static_cast<std::uint64_t>((*a)->family));
    mix(w[1]);
  }
  return static_cast<std::size_t>(h);
}

ChangeCorrelator::Key ChangeCorrelator::key_of(const Event& e) {
  const EventKind k = change_kind(e);
  const bool sa = k == EventKind::sa_added || k == EventKind::sa_deleted;
  return Key{k, e.src, e.dst, sa ? e.spi : std::nullopt};
}

bool ChangeCorrelator::audit_seen(const AuditHeader& h) {
  const auto t = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::seconds(h.sec) +
                                                                      std::chrono::milliseconds(h.msec)));
  if (!horizon_ || t > *horizon_) horizon_ = t;
  const bool was = waiting_;
  waiting_ = false;
  return was;
}

bool ChangeCorrelator::xfrm_read_up_to(Clock::time_point t) {
  if (!xfrm_read_ || t > *xfrm_read_) xfrm_read_ = t;
  const bool was = waiting_xfrm_;
  waiting_xfrm_ = false;
  return was;
}

ChangeCorrelator::Wait ChangeCorrelator::awaits(const std::vector<std::uint64_t>& ids) const {
  std::size_t xfrm = 0, audit = 0;
  std::chrono::system_clock::time_point newest{};
  Clock::time_point newest_audit{};
  for (auto id : ids) {
    const Pending& p = pending_[static_cast<std::size_t>(id - base_)];
    if (p.event.source == Source::kernel_audit) {
      ++audit;
      newest_audit = std::max(newest_audit, p.at);
    } else {
      ++xfrm;
      newest = std::max(newest, p.event.time);
    }
  }
  if (audit > xfrm) {
    // A flush's audit records (several under one serial) come before its
    // FLUSH message: wait for the XFRM side.
    for (auto id : ids) {
      const Event& e = pending_[static_cast<std::size_t>(id - base_)].event;
      if (e.source != Source::kernel_audit || !e.kernel) continue;
      auto it = serials_.find(e.kernel->serial);
      if (it != serials_.end() && it->second > 1) return Wait::flush;
    }
    // Its XFRM message, if there is one, was queued before the audit record
    // came: wait until the XFRM sockets have been read past that.
    if (xfrm_read_ && *xfrm_read_ < newest_audit) return Wait::xfrm;
    return Wait::nothing;
  }
  if (audit == xfrm) return Wait::nothing;
  return !horizon_ || *horizon_ <= newest + kHorizonSlack ? Wait::audit : Wait::nothing;
}

void ChangeCorrelator::add(Event e, Clock::time_point now) {
  if (e.source == Source::kernel_audit && e.kernel) {
    audit_seen(*e.kernel);
    ++serials_[e.kernel->serial];
  }
  waiting_ = false;  // anything new may complete the group that waits
  waiting_xfrm_ = false;
  const std::uint64_t id = base_ + pending_.size();
  groups_[key_of(e)].push_back(id);
  pending_.push_back(Pending{std::move(e), now});
}

std::optional<ChangeCorrelator::Clock::time_point> ChangeCorrelator::next_deadline() const {
  for (const auto& p : pending_)
    if (!p.done) return p.at + (waiting_ || waiting_xfrm_ ? late_limit_ : window_);
  return std::nullopt;
}

void ChangeCorrelator::decide(const std::vector<std::uint64_t>& ids, std::vector<Event>& out) {
  std::vector<Pending*> xfrm, audit;
  for (auto id : ids) {
    Pending& p = at(id);
    (p.event.source == Source::kernel_audit ? audit : xfrm).push_back(&p);
  }
  for (auto id : ids) {
    Pending& p = at(id);
    p.done = true;
    if (p.event.source == Source::kernel_audit && p.event.kernel) {
      auto it = serials_.find(p.event.kernel->serial);
      if (it != serials_.end() && --it->second == 0) serials_.erase(it);
    }
  }
  if (xfrm.size() == 1 && audit.size() == 1) {
    out.push_back(merge(std::move(xfrm[0]->event), std::move(audit[0]->event), Correlation::matched));
    return;
  }
  if (xfrm.empty() || audit.empty()) {
    const Correlation how = xfrm.empty() ? Correlation::unmatched : Correlation::none;
    for (auto id : ids) {
      Pending& p = at(id);
      p.event.correlation = how;
      out.push_back(std::move(p.event));
    }
    return;
  }
  const KernelAuditFields nothing;
  auto says = [&](const Pending* p) -> const KernelAuditFields& { return p->event.audit ? *p->event.audit : nothing; };
  const bool alike =
      std::all_of(audit.begin(), audit.end(), [&](const Pending* p) { return same_say(says(p), says(audit[0])); });
  if (alike) {
    // Who made each change is known (they all say the same); which audit
    // serial goes with which message is taken from the order of arrival.
    const std::size_t n = std::min(xfrm.size(), audit.size());
    for (std::size_t i = 0; i < xfrm.size(); ++i) {
      if (i < n) {
        out.push_back(merge(std::move(xfrm[i]->event), std::move(audit[i]->event), Correlation::paired));
      } else {
        xfrm[i]->event.correlation = Correlation::none;
        out.push_back(std::move(xfrm[i]->event));
      }
    }
    for (std::size_t i = n; i < audit.size(); ++i) {
      audit[i]->event.correlation = Correlation::unmatched;
      out.push_back(std::move(audit[i]->event));
    }
    return;
  }
  // Who did which is not known: each change once, with every audit record
  // it may belong to.
  std::vector<AuditCandidate> cands;
  for (const Pending* a : audit) cands.push_back(AuditCandidate{a->event.kernel, says(a)});
  for (Pending* x : xfrm) {
    x->event.correlation = Correlation::ambiguous;
    x->event.audit_candidates = cands;
    out.push_back(std::move(x->event));
  }
}

std::vector<Event> ChangeCorrelator::take_ready(Clock::time_point now, bool all) {
  std::vector<Event> out;
  take_ready(now, all, [&out](Event& e) { out.push_back(std::move(e)); });
  return out;
}

void ChangeCorrelator::take_ready(Clock::time_point now, bool all, const Emit& emit) {
  std::vector<Event> out;  // one group's events at a time
  while (!pending_.empty()) {
    Pending& head = pending_.front();
    if (head.done) {
      pending_.pop_front();
      ++base_;
      continue;
    }
    if (!all && now - head.at < window_) break;
    auto g = groups_.find(key_of(head.event));
    if (!all && now - head.at < late_limit_) {
      const Wait w = awaits(g->second);
      if (audit_expected_ && (w == Wait::audit || w == Wait::flush)) {
        waiting_ = true;  // looked at again when an audit record comes, or at late_limit
        break;
      }
      if (w == Wait::xfrm) {
        waiting_xfrm_ = true;  // looked at again when the XFRM sockets were read, or at late_limit
        break;
      }
    }
    waiting_ = false;
    waiting_xfrm_ = false;
    const std::vector<std::uint64_t> ids = std::move(g->second);
    groups_.erase(g);
    decide(ids, out);
    for (auto& e : out) emit(e);
    out.clear();
  }
}

}  // namespace ipsec
