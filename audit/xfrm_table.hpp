// XfrmTable: the agent's mirror of one network namespace's SAD and SPD, built
// from a dump and kept current from XFRM multicast messages. It turns each
// message into the lifecycle Events it means, and answers "which SA is this
// packet event about". Holds only allow-listed fields (XfrmSa has no key
// material). Pure: no I/O; time is passed in. Single-threaded.
//
// Identity is the kernel's: an SA is (mark, if_id, dst, SPI, proto) - route-
// based VPNs have SAs that differ only by mark - and a policy is its index
// (which encodes its direction). An SA's direction comes from the policies
// whose templates it satisfies, matched as the kernel's xfrm_state_ok does.
//
// Cost: every change is O(log n) plus the entries it affects. SAs are indexed
// by SPI, reqid and (dst, src); templates by the most specific of SPI, reqid
// and addresses they name, so a policy change re-derives the direction of the
// SAs its templates can match only, and an SA finds the policies that can
// match it without a scan. The `sa` context of an entry is built lazily, once
// per state of the SA. A template that names none of these (transport mode,
// no reqid, no SPI, a selector wider than one host) matches any SA of its
// proto and mode: it is kept apart and costs a scan, as it costs the kernel.
#pragma once

#include <chrono>
#include <compare>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "audit/event.hpp"
#include "audit/sa_context.hpp"
#include "xfrm/xfrm_message.hpp"

namespace ipsec {

struct SaKey {
  IpAddress daddr;
  std::uint32_t spi{0};
  std::uint8_t proto{0};
  std::uint32_t mark_value{0}, mark_mask{0};
  std::uint32_t if_id{0};
  friend auto operator<=>(const SaKey&, const SaKey&) = default;
  friend bool operator==(const SaKey&, const SaKey&) = default;
};
SaKey sa_key(const XfrmSa& sa);
SaKey sa_key(const XfrmSaId& id, const std::optional<XfrmMark>& mark, const std::optional<std::uint32_t>& if_id);

// The kernel's policy index carries the direction in its low 3 bits; the key
// keeps both, as the kernel's byidx lookup checks both.
struct PolicyKey {
  std::uint32_t index{0};
  std::uint8_t dir{0};
  friend auto operator<=>(const PolicyKey&, const PolicyKey&) = default;
  friend bool operator==(const PolicyKey&, const PolicyKey&) = default;
};
inline PolicyKey policy_key(const XfrmPolicy& p) { return PolicyKey{p.index, p.dir}; }

struct SaEntry {
  XfrmSa sa;
  SaDirection direction{SaDirection::unknown};
  DirectionSource direction_source{DirectionSource::none};
  DirectionPending direction_pending{DirectionPending::no_policy};
  // The shared `sa` context of this state of the SA; built on first use by
  // XfrmTable::context, dropped when the entry changes.
  mutable std::shared_ptr<const SaContext> context;
};

// Does SA `sa` satisfy template `t` of policy `p`, as the kernel's
// xfrm_state_ok sees it: proto, mode and family; SPI and reqid when the
// template sets them; the policy's if_id when set; addresses where the
// template names them (tunnel and BEET always). In transport mode the flow's
// addresses are the SA's own, so the policy's selector must also take them.
bool template_matches(const XfrmTemplate& t, const XfrmPolicy& p, const XfrmSa& sa);

class XfrmTable {
 public:
  using TimePoint = std::chrono::system_clock::time_point;
  explicit XfrmTable(std::string netns) : netns_(std::move(netns)) {}
  const std::string& netns() const { return netns_; }

  // Replaces the whole table with a dump, emitting nothing.
  void load(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies);
  // After an overrun: replaces the table with a fresh dump and returns the
  // adds and deletes that were missed, marked "resync": true.
  std::vector<Event> resync(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies, TimePoint now);
  // The same diff for changes made while the agent was stopped (the table
  // loaded from the state snapshot, `sas`/`policies` the dump at start):
  // records marked "while_stopped": true instead.
  std::vector<Event> diff_while_stopped(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies, TimePoint now);
  // Applies one multicast message; returns the records it means (0..n).
  std::vector<Event> apply(const XfrmMessage& m, TimePoint now);
  // Fresh per-SA values (a GETSA reply): updates the entry in place (pointers
  // to it stay valid), keeps its direction.
  const SaEntry* refresh(const XfrmSa& sa);

  const SaEntry* find(const SaKey& k) const;
  // Every SA with this destination and SPI (any proto, mark, if_id). SPI 0 never matches.
  std::vector<const SaEntry*> find(const IpAddress& daddr, std::uint32_t spi) const;
  // The same, one call of `f(const SaEntry&)` each: no vector (the packet path).
  template <typename F>
  void for_each_sa(const IpAddress& daddr, std::uint32_t spi, F&& f) const {
    if (spi == 0) return;
    for (auto it = sas_.lower_bound(SaKey{daddr, spi, 0, 0, 0, 0});
         it != sas_.end() && it->first.daddr == daddr && it->first.spi == spi; ++it)
      f(it->second);
  }
  // The entry's `sa` context (built once per state of the entry).
  std::shared_ptr<const SaContext> context(const SaEntry& e) const;

  std::size_t sa_count() const { return sas_.size(); }
  std::size_t policy_count() const { return policies_.size(); }
  // Every SA / policy, in key order (the state snapshot).
  std::vector<XfrmSa> sas() const;
  std::vector<XfrmPolicy> policies() const;
  const XfrmPolicy* find_policy(const PolicyKey& k) const;
  // Every policy, by key (the nftables table is derived from them).
  const std::map<PolicyKey, XfrmPolicy>& policy_map() const { return policies_; }
  const std::optional<XfrmPolicyDefault>& defaults() const { return defaults_; }
  void set_defaults(const XfrmPolicyDefault& d) { defaults_ = d; }

 private:
  using AddrPair = std::pair<IpAddress, IpAddress>;  // (dst, src)
  SaEntry& put_sa(const XfrmSa& sa);
  void erase_sa(std::map<SaKey, SaEntry>::iterator it);
  void unindex_sa(const SaKey& k, const XfrmSa& sa);
  void put_policy(const XfrmPolicy& p);
  void erase_policy(std::map<PolicyKey, XfrmPolicy>::iterator it);
  // Re-derives the direction of every SA that `p`'s templates can match.
  void redirect_affected(const XfrmPolicy& p);
  void redirect(SaEntry& e) const;
  template <typename F>
  void for_each_candidate_policy(const XfrmSa& sa, F&& f) const;
  template <typename F>
  void for_each_candidate_sa(const XfrmPolicy& p, F&& f);
  void clear();
  std::vector<Event> diff(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies, TimePoint now, bool while_stopped);

  Event base(EventKind k, TimePoint now) const;
  Event sa_event(EventKind k, const SaEntry& e, TimePoint now) const;
  Event policy_event(EventKind k, const XfrmPolicy& p, TimePoint now) const;

  std::string netns_;
  std::map<SaKey, SaEntry> sas_;
  std::map<PolicyKey, XfrmPolicy> policies_;
  std::optional<XfrmPolicyDefault> defaults_;
  // SA indexes.
  std::map<std::uint32_t, std::set<SaKey>> sa_by_spi_, sa_by_reqid_;
  std::map<AddrPair, std::set<SaKey>> sa_by_addr_;
  // Template indexes: each template is in the bucket of the most specific
  // thing it names; `tmpl_wild_` holds those that name nothing.
  std::map<std::uint32_t, std::set<PolicyKey>> tmpl_by_spi_, tmpl_by_reqid_;
  std::map<AddrPair, std::set<PolicyKey>> tmpl_by_addr_;
  std::set<PolicyKey> tmpl_wild_;
};

// The selector of an ACQUIRE record.
nlohmann::json selector_json(const XfrmSelector& s);

}  // namespace ipsec
