// XfrmTable: the agent's mirror of one network namespace's SAD and SPD, built
// from a dump and kept current from XFRM multicast messages. It turns each
// message into the lifecycle Events it means, and answers "which SA is this
// packet event about". Holds only allow-listed fields (XfrmSa has no key
// material). Pure: no I/O; time is passed in. Single-threaded.
#pragma once

#include <chrono>
#include <compare>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/event.hpp"
#include "xfrm/xfrm_message.hpp"

namespace ipsec {

struct SaKey {
  IpAddress daddr;
  std::uint32_t spi{0};
  std::uint8_t proto{0};
  friend auto operator<=>(const SaKey&, const SaKey&) = default;
  friend bool operator==(const SaKey&, const SaKey&) = default;
};

struct SaEntry {
  XfrmSa sa;
  std::string direction{"unknown"};         // "in", "out", "unknown"
  std::string direction_source{"none"};     // "kernel" (XFRMA_SA_DIR), "policy", "none"
  std::shared_ptr<const std::string> json;  // the record's `sa` object
};

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
  // Applies one multicast message; returns the records it means (0..n).
  std::vector<Event> apply(const XfrmMessage& m, TimePoint now);
  // Fresh per-SA values (a GETSA reply): replaces the entry, keeps direction.
  const SaEntry* refresh(const XfrmSa& sa);

  const SaEntry* find(const SaKey& k) const;
  // Every SA with this destination and SPI (any proto). SPI 0 never matches.
  std::vector<const SaEntry*> find(const IpAddress& daddr, std::uint32_t spi) const;

  std::size_t sa_count() const { return sas_.size(); }
  std::size_t policy_count() const { return policies_.size(); }
  const std::map<std::uint32_t, XfrmPolicy>& policies() const { return policies_; }
  const std::optional<XfrmPolicyDefault>& defaults() const { return defaults_; }
  void set_defaults(const XfrmPolicyDefault& d) { defaults_ = d; }

 private:
  SaEntry make_entry(const XfrmSa& sa) const;
  void rebuild_directions();
  Event base(EventKind k, TimePoint now) const;
  Event sa_event(EventKind k, const SaEntry& e, TimePoint now) const;
  Event policy_event(EventKind k, const XfrmPolicy& p, TimePoint now) const;

  std::string netns_;
  std::map<SaKey, SaEntry> sas_;
  std::map<std::uint32_t, XfrmPolicy> policies_;  // by the kernel's policy index
  std::optional<XfrmPolicyDefault> defaults_;
};

SaKey sa_key(const XfrmSa& sa);
std::string proto_name(std::uint8_t proto);
std::string mode_name(std::uint8_t mode);
std::string policy_dir_name(std::uint8_t dir);
nlohmann::json selector_json(const XfrmSelector& s);
nlohmann::json policy_json(const XfrmPolicy& p);
// The `sa` object: allow-listed fields only, never key material.
nlohmann::json sa_json(const XfrmSa& sa, const std::string& netns, const std::string& direction,
                       const std::string& direction_source);

}  // namespace ipsec
