// The agent's one nftables table, `inet ipsec_audit`, derived from a
// namespace's SPD; what its log prefixes mean; and what NFLOG packets become
// (predicted 4963 records, fragment-received summaries). Pure: no I/O.
//
// The table only logs: no rule drops, accepts into another table's place or
// alters a packet (a `return` in its own base chain ends that chain only).
//
// cleartext (prerouting, priority filter, after defragmentation): the inbound
// and forward main policies in the kernel's order (priority, then index); a
// policy that requires a transform (a template that is not optional) gives
//   <selector> fib daddr type [!=] local meta secpath missing log group N ...
// with the prefix "ipsec-audit:<in|fwd>:<index>"; a policy that does not
// (bypass, block) gives `<selector> return`, so that a more specific bypass
// shadows a broader ESP policy as it does in the kernel. ESP, AH, IPcomp and
// UDP 500/4500 (IKE, ESP-in-UDP: IKE daemons bypass them with socket
// policies) return first, and so do fragments other than the first (the
// kernel drops a datagram once, after reassembly; with no conntrack loaded
// the chain sees every fragment). Policies with an if_id (xfrm interfaces) and sub
// policies are left out. This predicts the XFRM lookup; it cannot replay it
// (socket policies, optional templates, marks set later): records built from
// it say `basis: predicted`, and the XfrmInTmplMismatch counter stays the truth.
//
// fragments (prerouting, priority -450, before defragmentation): every ESP
// fragment (IPv4 MF or offset, IPv6 fragment header with next header ESP) and
// every first fragment of UDP to port 4500 is counted and logged with the
// prefix "ipsec-audit:frag".
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "audit/event.hpp"
#include "xfrm/nflog_message.hpp"
#include "xfrm/xfrm_message.hpp"

namespace ipsec {

inline constexpr std::string_view kNftTable = "ipsec_audit";

struct NftRulesetConfig {
  std::uint16_t group{4963};
  std::uint16_t snaplen{128};
  bool fragments{true};
};

// Does the policy make the kernel drop an inbound packet without a secpath
// (XfrmInTmplMismatch)? An allow policy with a template that is not optional.
bool requires_transform(const XfrmPolicy& p);

// The nft rule text of a selector, e.g. "ip saddr 10.0.0.1 ip daddr 10.0.0.2
// meta l4proto udp th dport 9999"; empty optional for a family nft cannot take.
std::optional<std::string> nft_selector(const XfrmSelector& s);

// The table's body (`table inet ipsec_audit { ... }`) for these policies
// (any order, any direction: only main in/fwd policies are used).
std::string nft_table(const std::vector<const XfrmPolicy*>& policies, const NftRulesetConfig& cfg);
// One nft transaction that replaces the table atomically (creates it if
// missing, deletes it, adds it again), for nft_run_cmd_from_buffer.
std::string nft_replace_transaction(const std::string& table);
std::string nft_delete_transaction();

// What a log prefix of this table says.
struct NftLogTag {
  enum class Kind : std::uint8_t { other, cleartext, fragment } kind{Kind::other};
  std::uint8_t dir{0};  // cleartext: XFRM_POLICY_IN 0 or FWD 2
  std::uint32_t index{0};
};
NftLogTag parse_log_prefix(std::string_view prefix);

// A predicted 4963 record from a packet the cleartext chain logged.
// `policy` is the policy of that index still in the table (null if it went).
Event cleartext_event(const NflogPacket& p, const NftLogTag& tag, std::shared_ptr<const XfrmPolicy> policy,
                      std::string netns, std::string interface, std::chrono::system_clock::time_point now);

// fragment-received summaries: one record per (netns, peer, destination) and
// interval, never one per fragment, with the count, how many were first
// fragments, and the SPIs and sequence numbers seen in first fragments.
class FragmentAggregator {
 public:
  using TimePoint = std::chrono::system_clock::time_point;
  void add(const std::string& netns, const IpPacketInfo& ip, const std::string& interface, TimePoint now);
  // Everything collected since the last flush, as records; empties the aggregator.
  std::vector<Event> flush(TimePoint now);
  bool empty() const { return by_peer_.empty(); }

 private:
  struct Summary {
    std::uint64_t count{0}, first_fragments{0};
    bool esp_in_udp{false};
    std::set<std::uint32_t> spis;  // at most kMaxSpis
    std::optional<std::uint32_t> seq_first, seq_last;
    std::optional<std::uint32_t> flow_label;
    std::string interface;
    TimePoint first, last;
  };
  using Key = std::tuple<std::string, IpAddress, IpAddress>;
  std::map<Key, Summary> by_peer_;
};

}  // namespace ipsec
