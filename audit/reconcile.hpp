// Reconciliation: the kernel's counters against the records the agent
// received for them. Pure arithmetic, no I/O, no clock.
//
// A pairing (LossKey) has a counter that rose by `counted` since the agent's
// baseline and `seen` records that stand for the same packets. A record
// reaches the agent after its counter moved (kauditd runs later, a GETSA is
// answered later), so each settle() compares what the counters said at the
// PREVIOUS settle with every record received until now: a record has a whole
// interval to arrive before its absence counts. A shortfall is written once:
// `lost` only grows, by max(0, counted_then - seen - lost).
//
// Records the agent cannot attribute to one pairing (an audit record whose SA
// is ambiguous; a host-wide audit record against one netns's counter) are
// counted for every pairing they may belong to: losses are then a lower
// bound, never invented.
//
// One loss, one count. Every pairing here is of kernel audit records, and
// the kernel audit side reports some losses itself before a shortfall shows
// them: the kernel's `lost` counter (records it dropped) and the overruns of
// the agent's audit socket ("at least 1" at once). Those counts are handed
// to reported(); a shortfall found later is first matched against them, and
// only what exceeds them is new (Loss::count). So the sum of the events-lost
// counts over the kernel audit reports and the shortfalls is the number of
// audit records lost as far as the agent can tell: exact when the losses are
// all IPsec packet records (the kernel `lost` counter and an overrun may
// also stand for other audit records, and then the sum is a lower bound).
// A report is matched only against shortfalls settled after it, so the
// agent settles after reading its audit socket, and at stop after a last
// AUDIT_GET (see the daemon). A report not matched within kCreditSettles
// settles expires: the shortfall of the records it stood for has been found
// by then (a loss is counted at the next reading, per-SA stats come one
// tick later, and it is settled at the tick after), so it was about other
// audit records and must not hide a later IPsec loss.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ipsec {

// The rise of a counter between two readings. A counter that went down was
// reset (its namespace was recreated): the new value is the rise.
std::uint64_t counter_delta(std::uint64_t before, std::uint64_t after);

// What a pairing lost that was not written yet.
std::uint64_t shortfall(std::uint64_t counted, std::uint64_t seen, std::uint64_t already_lost);

struct LossKey {
  std::string counter;               // "XfrmInNoStates", "integrity_failed", ...
  std::optional<std::string> netns;  // nullopt: the sum over every watched netns
  std::optional<std::uint32_t> spi;  // per-SA pairings
  std::string sa;                    // per-SA: the SA's identity as text (dst, proto, mark, if_id)
  friend auto operator<=>(const LossKey&, const LossKey&) = default;
  friend bool operator==(const LossKey&, const LossKey&) = default;
};

struct Loss {
  LossKey key;
  std::uint64_t count{0};            // new: not reported by any events-lost record before
  std::uint64_t shortfall{0};        // the whole shortfall found (count + already_reported)
  std::uint64_t already_reported{0};  // matched against earlier kernel audit loss reports
};

class Reconciler {
 public:
  struct Entry {
    std::uint64_t counted{0};  // the counter's rise since the baseline, as read last
    std::uint64_t settled{0};  // `counted` at the previous settle
    std::uint64_t seen{0};     // records received for it
    std::uint64_t lost{0};     // shortfalls found so far (reported before or written now)
    std::uint64_t already_reported{0};  // the part of `lost` matched against reported()
    int closing{0};            // 1: closed, one more settle; 2: erased at the next
  };

  void counted(const LossKey& k, std::uint64_t rise) { entries_[k].counted += rise; }
  void seen(const LossKey& k, std::uint64_t n = 1) { entries_[k].seen += n; }
  // The pairing ends (its SA is gone): settled twice more, then forgotten.
  void close(const LossKey& k);
  // Closes every pairing `pred` picks that is not closing yet.
  void close_if(const std::function<bool(const LossKey&)>& pred);
  // Losses the kernel audit side has written itself (kernel `lost` rise,
  // socket overruns): the next shortfalls are matched against them first.
  void reported(std::uint64_t n) { credit_[0] += n; }
  static constexpr std::size_t kCreditSettles = 3;
  // New losses since the last settle (see above). `final` (at stop, once the
  // counters were read, the kernel's audit queue was empty and the audit
  // socket drained): what the counters say now is compared, not what they
  // said at the previous settle; the last interval is not left out.
  std::vector<Loss> settle(bool final = false);

  const std::map<LossKey, Entry>& entries() const { return entries_; }
  // Totals per counter name: {"<name>": {"counted", "seen", "lost",
  // "already_reported"}}, closed pairings included (service-stopped).
  nlohmann::json totals() const;

 private:
  std::map<LossKey, Entry> entries_;
  std::map<std::string, Entry> gone_;  // totals of forgotten pairings, by counter
  // reported() and not matched yet, by age in settles ([0]: since the last).
  std::array<std::uint64_t, kCreditSettles> credit_{};
};

}  // namespace ipsec
