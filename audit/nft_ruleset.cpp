#include "audit/nft_ruleset.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace ipsec {
namespace {

constexpr std::uint16_t kAfInet = 2, kAfInet6 = 10;
constexpr std::string_view kPrefixHead = "ipsec-audit:";
constexpr std::size_t kMaxSpis = 8;

std::string hex(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%x", v);
  return b;
}

// The address with the bits past the prefix cleared (nft wants a network).
std::string network(const IpAddress& a, unsigned len) {
  IpAddress m = a;
  const unsigned bits = a.family == Family::inet ? 32 : 128;
  for (unsigned i = len; i < bits; ++i) m.bytes[i / 8] = static_cast<std::uint8_t>(m.bytes[i / 8] & ~(0x80u >> (i % 8)));
  return len >= bits ? m.to_string() : m.to_string() + "/" + std::to_string(len);
}

void port_match(std::string& out, const char* what, std::uint16_t v, std::uint16_t mask) {
  if (mask == 0) return;
  out += std::string(" th ") + what;
  if (mask == 0xffff)
    out += " " + std::to_string(v);
  else
    out += " & " + hex(mask) + " == " + hex(v & mask);
}

std::string l4_name(std::uint8_t p) {
  switch (p) {
    case 1:
      return "icmp";
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 41:
      return "ipv6";
    case 47:
      return "gre";
    case 50:
      return "esp";
    case 51:
      return "ah";
    case 58:
      return "ipv6-icmp";
    case 108:
      return "comp";
    case 132:
      return "sctp";
    case 136:
      return "udplite";
    default:
      return std::to_string(p);
  }
}

std::string log_stmt(const NftRulesetConfig& cfg, const std::string& tag) {
  return " log group " + std::to_string(cfg.group) + " snaplen " + std::to_string(cfg.snaplen) + " prefix \"" +
         std::string(kPrefixHead) + tag + "\"";
}

}  // namespace

bool requires_transform(const XfrmPolicy& p) {
  if (p.action != 0) return false;
  return std::any_of(p.templates.begin(), p.templates.end(), [](const XfrmTemplate& t) { return t.optional == 0; });
}

std::optional<std::string> nft_selector(const XfrmSelector& s) {
  std::string ip;
  if (s.family == kAfInet)
    ip = "ip";
  else if (s.family == kAfInet6)
    ip = "ip6";
  else
    return std::nullopt;
  std::string out = ip == "ip" ? "meta nfproto ipv4" : "meta nfproto ipv6";
  if (s.saddr && s.prefixlen_s > 0) out += " " + ip + " saddr " + network(*s.saddr, s.prefixlen_s);
  if (s.daddr && s.prefixlen_d > 0) out += " " + ip + " daddr " + network(*s.daddr, s.prefixlen_d);
  if (s.proto != 0) {
    out += " meta l4proto " + std::to_string(s.proto);
    if (s.proto == 1 || s.proto == 58) {
      // XFRM keeps ICMP type and code in the port fields.
      const char* kw = s.proto == 1 ? "icmp" : "icmpv6";
      if (s.sport_mask == 0xffff) out += std::string(" ") + kw + " type " + std::to_string(s.sport & 0xff);
      if (s.dport_mask == 0xffff) out += std::string(" ") + kw + " code " + std::to_string(s.dport & 0xff);
    } else {
      port_match(out, "sport", s.sport, s.sport_mask);
      port_match(out, "dport", s.dport, s.dport_mask);
    }
  }
  if (s.ifindex > 0) out += " meta iif " + std::to_string(s.ifindex);
  return out;
}

std::string nft_table(const std::vector<const XfrmPolicy*>& policies, const NftRulesetConfig& cfg) {
  std::vector<const XfrmPolicy*> used;
  for (const XfrmPolicy* p : policies)
    if ((p->dir == 0 || p->dir == 2) && p->ptype == 0 && !(p->if_id && *p->if_id != 0)) used.push_back(p);
  // The kernel's order: the lowest priority value wins, then the older policy.
  std::stable_sort(used.begin(), used.end(), [](const XfrmPolicy* a, const XfrmPolicy* b) {
    return std::tie(a->priority, a->index) < std::tie(b->priority, b->index);
  });
  std::string t = "table inet " + std::string(kNftTable) + " {\n";
  t += "  chain cleartext {\n    type filter hook prerouting priority filter; policy accept;\n";
  t += "    meta l4proto { esp, ah, comp } return\n    udp dport { 500, 4500 } return\n";
  // Without conntrack nothing reassembles before this chain: the fragments of
  // one datagram pass it one by one, and the kernel drops (and counts) the
  // datagram once, after reassembly. Only the first fragment may give a
  // record: the later ones carry no transport header but match a selector
  // without ports all the same (the ESP lab measured 3 records for 1 drop).
  t += "    ip frag-off & 0x1fff != 0 return\n    frag frag-off != 0 return\n";
  for (const XfrmPolicy* p : used) {
    auto sel = nft_selector(p->selector);
    if (!sel) continue;
    std::string rule = "    " + *sel;
    if (p->mark && p->mark->mask != 0) rule += " meta mark & " + hex(p->mark->mask) + " == " + hex(p->mark->value & p->mark->mask);
    rule += p->dir == 0 ? " fib daddr type local" : " fib daddr type != local";
    if (requires_transform(*p)) {
      rule += " meta secpath missing" +
              log_stmt(cfg, std::string(p->dir == 0 ? "in" : "fwd") + ":" + std::to_string(p->index));
    } else {
      rule += " return";
    }
    t += rule + "\n";
  }
  t += "  }\n";
  if (cfg.fragments) {
    const std::string log = " counter" + log_stmt(cfg, "frag");
    t += "  chain fragments {\n    type filter hook prerouting priority -450; policy accept;\n";
    t += "    ip protocol esp ip frag-off & 0x3fff != 0" + log + "\n";
    t += "    ip protocol udp ip frag-off & 0x3fff == 0x2000 udp dport 4500" + log + "\n";
    t += "    frag nexthdr esp" + log + "\n";
    t += "    frag nexthdr udp frag frag-off 0 udp dport 4500" + log + "\n";
    t += "  }\n";
  }
  t += "}\n";
  return t;
}

std::string nft_replace_transaction(const std::string& table) {
  const std::string name = "inet " + std::string(kNftTable);
  return "table " + name + "\ndelete table " + name + "\n" + table;
}

std::string nft_delete_transaction() { return "delete table inet " + std::string(kNftTable) + "\n"; }

NftLogTag parse_log_prefix(std::string_view prefix) {
  NftLogTag t;
  if (prefix.substr(0, kPrefixHead.size()) != kPrefixHead) return t;
  prefix.remove_prefix(kPrefixHead.size());
  if (prefix == "frag") {
    t.kind = NftLogTag::Kind::fragment;
    return t;
  }
  std::string_view num;
  if (prefix.substr(0, 3) == "in:") {
    t.dir = 0;
    num = prefix.substr(3);
  } else if (prefix.substr(0, 4) == "fwd:") {
    t.dir = 2;
    num = prefix.substr(4);
  } else {
    return t;
  }
  const auto r = std::from_chars(num.data(), num.data() + num.size(), t.index);
  if (r.ec != std::errc() || r.ptr != num.data() + num.size() || num.empty()) return NftLogTag{};
  t.kind = NftLogTag::Kind::cleartext;
  return t;
}

Event cleartext_event(const NflogPacket& p, const NftLogTag& tag, std::shared_ptr<const XfrmPolicy> policy,
                      std::string netns, std::string interface, std::chrono::system_clock::time_point now) {
  Event e;
  e.kind = EventKind::cleartext_packet_dropped;
  e.source = Source::nflog;
  e.time = now;
  e.netns = std::move(netns);
  e.policy = std::move(policy);
  nlohmann::json d = {{"basis", "predicted"}, {"policy_index", tag.index}, {"interface", interface}};
  std::string what = "cleartext packet";
  if (p.ip) {
    const IpPacketInfo& ip = *p.ip;
    e.src = ip.src;
    e.dst = ip.dst;
    e.flow_label = ip.flow_label;
    d["protocol"] = l4_name(ip.protocol);
    if (ip.sport) d["sport"] = *ip.sport;
    if (ip.dport) d["dport"] = *ip.dport;
    if (ip.icmp_type) d["icmp_type"] = *ip.icmp_type;
    if (ip.icmp_code) d["icmp_code"] = *ip.icmp_code;
    what += " " + l4_name(ip.protocol) + " " + ip.src.to_string() + (ip.sport ? ":" + std::to_string(*ip.sport) : "") +
            " -> " + ip.dst.to_string() + (ip.dport ? ":" + std::to_string(*ip.dport) : "");
  }
  if (interface.empty()) d["interface"] = nullptr;
  e.message = what + " matches " + (tag.dir == 0 ? "inbound" : "forward") + " policy " + std::to_string(tag.index) +
              ", which requires IPsec: the kernel drops it (predicted)";
  e.detail = std::move(d);
  return e;
}

void FragmentAggregator::add(const std::string& netns, const IpPacketInfo& ip, const std::string& interface,
                             TimePoint now) {
  Summary& s = by_peer_[Key{netns, ip.src, ip.dst}];
  if (s.count == 0) {
    s.first = now;
    s.interface = interface;
  }
  ++s.count;
  s.last = now;
  s.esp_in_udp = s.esp_in_udp || ip.protocol == 17;
  if (ip.first_fragment()) {
    ++s.first_fragments;
    if (ip.spi && (s.spis.size() < kMaxSpis || s.spis.count(*ip.spi))) s.spis.insert(*ip.spi);
    if (ip.seq) {
      if (!s.seq_first) s.seq_first = ip.seq;
      s.seq_last = ip.seq;
    }
  }
  if (ip.flow_label) s.flow_label = ip.flow_label;
}

std::vector<Event> FragmentAggregator::flush(TimePoint now) {
  std::vector<Event> out;
  for (const auto& [key, s] : by_peer_) {
    Event e;
    e.kind = EventKind::fragment_received;
    e.source = Source::nflog;
    e.time = now;
    e.netns = std::get<0>(key);
    e.src = std::get<1>(key);
    e.dst = std::get<2>(key);
    e.count = s.count;
    if (!s.spis.empty()) e.spi = *s.spis.begin();
    e.seq = s.seq_first;
    nlohmann::json f = {{"count", s.count},
                        {"first_fragments", s.first_fragments},
                        {"esp_in_udp", s.esp_in_udp},
                        {"spis", std::vector<std::uint32_t>(s.spis.begin(), s.spis.end())},
                        {"interval_seconds",
                         std::chrono::duration<double>(s.last - s.first).count()}};
    if (s.seq_first) f["seq_first"] = *s.seq_first;
    if (s.seq_last) f["seq_last"] = *s.seq_last;
    f["interface"] = s.interface.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.interface);
    e.detail = {{"fragments", std::move(f)}};
    e.message = std::to_string(s.count) + " ESP fragment" + (s.count == 1 ? "" : "s") + " from " +
                std::get<1>(key).to_string() + " to " + std::get<2>(key).to_string() + " (" +
                std::to_string(s.first_fragments) + " first): ESP arrives fragmented (path MTU, or fragments "
                "crafted on purpose); the kernel reassembles them before ESP input";
    out.push_back(std::move(e));
  }
  by_peer_.clear();
  return out;
}

}  // namespace ipsec
