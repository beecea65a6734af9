// ChangeCorrelator: joins the kernel audit SAD-*/SPD-* record (who made the
// change: auid, ses, subj) with the XFRM message for the same change (what
// changed, in which netns), only as far as the match is known.
//
// Facts from Debian's 6.1 kernel that shape it: the XFRM multicast is sent
// from the syscall, the audit record later from kauditd, so either can come
// first; a flush gives N audit records under one serial but one FLUSH
// message; an inbound and an outbound policy with the same selector give
// identical audit lines, and so does the same change made in two netns (audit
// names no netns). So both sides wait up to `window` and are grouped by
// (change, src, dst, spi); a group is decided once its oldest member is older
// than the window:
//   one XFRM + one audit                       -> "matched" (one record)
//   XFRM only / audit only                     -> "none" / "unmatched"
//   several, the audit records identical in all they say (actor, op,
//   result, prefixes)                          -> "paired" in arrival order;
//                                                 extra XFRM "none", extra audit "unmatched"
//   several, the audit records differ          -> each XFRM message once, "ambiguous",
//                                                 with every audit record as a candidate
// Each change is written once: no audit record of a group is written beside
// the XFRM messages it may belong to. Keyed: each event costs O(1).
//
// kauditd can deliver an audit record well after the XFRM message of the
// same change (seen: 310 ms on a loaded machine). While kernel audit is on
// and its records reach this agent (`set_audit_expected`), a group with more
// XFRM messages than audit records is not decided "none" at the end of the
// window but waits until its audit records came, or the audit stream has
// passed it (an audit record stamped more than `kHorizonSlack` after the
// newest XFRM message of the group: the kernel queues a change's audit record
// before or right after its XFRM message, and kauditd sends in order), or
// `late_limit` (records lost). The other way round, a flush audits each
// entry during the syscall (all under one serial) and sends its one FLUSH
// message at the end: audit records that share their serial with another
// SAD/SPD record wait, likewise up to `late_limit`, for their XFRM messages.
// And a group with more audit records than XFRM messages (a lone audit
// record: its XFRM message is late, or the change was made in an unwatched
// netns) is decided only once every watched XFRM socket has been read empty
// after its newest audit record arrived (`xfrm_read_up_to`): the kernel
// queues a change's XFRM message inside the syscall, before kauditd sends
// the audit record, so by then the XFRM message is in if there is one
// (likewise bounded by `late_limit`; no such wait before the first call).
// Output order stays arrival order.
// Pure: time is passed in. Single-threaded.
#pragma once

#include <algorithm>
#include <chrono>
#include <compare>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <unordered_map>
#include <vector>

#include "audit/event.hpp"

namespace ipsec {

class ChangeCorrelator {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ChangeCorrelator(std::chrono::milliseconds window,
                            std::chrono::milliseconds late_limit = std::chrono::milliseconds(5000))
      : window_(window), late_limit_(std::max(window, late_limit)) {}
  static constexpr std::chrono::milliseconds kHorizonSlack{50};

  // Kernel audit is on and its records reach this agent: XFRM changes wait
  // (up to late_limit) for theirs. Off, or not known: the window alone.
  void set_audit_expected(bool on) {
    audit_expected_ = on;
    waiting_ = false;
    waiting_xfrm_ = false;
  }
  bool audit_expected() const { return audit_expected_; }
  // Any kernel audit record's time stamp (not only SAD/SPD ones): how far the
  // audit stream has come. True when a waiting group should be looked at again.
  bool audit_seen(const AuditHeader& h);
  // Every watched XFRM socket has been read until it was empty at `t` (time
  // of this clock): every XFRM message queued before `t` has been added.
  // True when a group waiting for that should be looked at again.
  bool xfrm_read_up_to(Clock::time_point t);
  // The head group is an audit-only one waiting for the XFRM sockets to be
  // read past it (see xfrm_read_up_to).
  bool awaits_xfrm() const { return waiting_xfrm_; }

  // True for the kinds this correlator joins (SA/policy added/deleted).
  static bool joins(EventKind k);
  // True for the events it takes: those kinds, and a hard SA expiry (which
  // the kernel audits as SAD-delete).
  static bool accepts(const Event& e);

  void add(Event e, Clock::time_point now);
  // Decided events, oldest first. `all` decides everything (shutdown).
  std::vector<Event> take_ready(Clock::time_point now, bool all = false);
  // The same, each decided event handed to `emit` as it is decided (a flush
  // decides thousands at once: no vector of them all is built).
  using Emit = std::function<void(Event&)>;
  void take_ready(Clock::time_point now, bool all, const Emit& emit);
  // When the next decision is due, if anything is pending.
  std::optional<Clock::time_point> next_deadline() const;
  std::size_t pending() const { return pending_.size(); }

 private:
  struct Key {
    EventKind kind{};
    std::optional<IpAddress> src, dst;
    std::optional<std::uint32_t> spi;  // SA changes only
    friend auto operator<=>(const Key&, const Key&) = default;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    // Not noexcept on purpose: libstdc++ then keeps each node's hash code, so
    // walking a bucket and erasing a group do not hash every key again (that
    // was 16% of the correlator's time in BM_TunnelsUpAndFlushed).
    std::size_t operator()(const Key& k) const;
  };
  struct Pending {
    Event event;
    Clock::time_point at;
    bool done{false};
  };
  static Key key_of(const Event& e);
  // What the group may still wait for: its audit records, or (a flush's
  // audit records, a lone audit record) its XFRM messages.
  enum class Wait { nothing, audit, flush, xfrm };
  Wait awaits(const std::vector<std::uint64_t>& ids) const;
  void decide(const std::vector<std::uint64_t>& ids, std::vector<Event>& out);
  Pending& at(std::uint64_t id) { return pending_[static_cast<std::size_t>(id - base_)]; }

  std::chrono::milliseconds window_;
  std::chrono::milliseconds late_limit_;
  bool audit_expected_{false};
  bool waiting_{false};  // the head group awaits its audit records
  bool waiting_xfrm_{false};  // the head group awaits the XFRM sockets' progress
  std::optional<Clock::time_point> xfrm_read_;  // every XFRM socket read empty at this time
  std::optional<std::chrono::system_clock::time_point> horizon_;  // newest audit time stamp seen
  std::unordered_map<std::uint64_t, std::uint32_t> serials_;       // SAD/SPD audit records pending per serial
  std::deque<Pending> pending_;  // arrival order; entry i has id base_ + i
  std::uint64_t base_{0};
  std::unordered_map<Key, std::vector<std::uint64_t>, KeyHash> groups_;  // undecided ids per change, in arrival order
};

}  // namespace ipsec
