#include "xfrm/nflog_message.hpp"

#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink_log.h>

#include <array>

namespace ipsec {

static_assert(kNflogMsgPacket == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET));
static_assert(kNflogMsgConfig == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG));

namespace {

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
std::uint64_t be64(const std::uint8_t* p) { return (std::uint64_t{be32(p)} << 32) | be32(p + 4); }
std::uint16_t le16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }

// Minimum payload per NFULA_* attribute type; 0: no fixed part (or unused).
constexpr std::array<std::uint16_t, NFULA_MAX + 1> kMinLen = [] {
  std::array<std::uint16_t, NFULA_MAX + 1> a{};
  a[NFULA_PACKET_HDR] = 4;  // hw_protocol, hook, pad
  a[NFULA_MARK] = 4;
  a[NFULA_TIMESTAMP] = 16;
  a[NFULA_IFINDEX_INDEV] = 4;
  a[NFULA_IFINDEX_OUTDEV] = 4;
  return a;
}();

constexpr std::uint8_t kProtoIcmp = 1, kProtoTcp = 6, kProtoUdp = 17, kProtoDccp = 33, kProtoEsp = 50, kProtoAh = 51,
                       kProtoIcmp6 = 58, kProtoSctp = 132, kProtoUdpLite = 136;
constexpr std::uint16_t kNattPort = 4500;

// Transport detail of a packet whose L4 header starts at `l4` (not a later fragment).
void parse_l4(IpPacketInfo& p, Bytes l4) {
  switch (p.protocol) {
    case kProtoTcp:
    case kProtoUdp:
    case kProtoUdpLite:
    case kProtoSctp:
    case kProtoDccp:
      if (l4.size() >= 4) {
        p.sport = be16(l4.data());
        p.dport = be16(l4.data() + 2);
      }
      if (p.protocol == kProtoUdp && l4.size() >= 16 && (p.sport == kNattPort || p.dport == kNattPort)) {
        // RFC 3948: a zero first word is the non-ESP marker (IKE); a single
        // 0xff byte is a keepalive, too short to get here.
        const std::uint32_t spi = be32(l4.data() + 8);
        if (spi != 0) {
          p.esp_in_udp = true;
          p.spi = spi;
          p.seq = be32(l4.data() + 12);
        }
      }
      break;
    case kProtoEsp:
      if (l4.size() >= 4) p.spi = be32(l4.data());
      if (l4.size() >= 8) p.seq = be32(l4.data() + 4);
      break;
    case kProtoIcmp:
    case kProtoIcmp6:
      if (l4.size() >= 2) {
        p.icmp_type = l4[0];
        p.icmp_code = l4[1];
      }
      break;
    default:
      break;
  }
}

Result<IpPacketInfo> parse_v4(Bytes d) {
  if (d.size() < 20) return make_error(Errc::truncated, "IPv4 header cut at " + std::to_string(d.size()) + " bytes");
  const std::size_t ihl = (d[0] & 0x0fu) * 4u;
  if (ihl < 20) return make_error(Errc::malformed, "IPv4 header length " + std::to_string(ihl) + " below 20");
  IpPacketInfo p;
  p.family = Family::inet;
  p.total_length = be16(d.data() + 2);
  p.fragment_id = be16(d.data() + 4);
  const std::uint16_t frag = be16(d.data() + 6);
  p.more_fragments = (frag & 0x2000) != 0;
  p.fragment_offset = static_cast<std::uint32_t>(frag & 0x1fff) * 8;
  p.fragment = p.more_fragments || p.fragment_offset != 0;
  p.protocol = d[9];
  p.src = IpAddress::from_v4(d.data() + 12);
  p.dst = IpAddress::from_v4(d.data() + 16);
  if (p.fragment_offset == 0 && d.size() > ihl) parse_l4(p, d.subspan(ihl));
  return p;
}

Result<IpPacketInfo> parse_v6(Bytes d) {
  if (d.size() < 40) return make_error(Errc::truncated, "IPv6 header cut at " + std::to_string(d.size()) + " bytes");
  IpPacketInfo p;
  p.family = Family::inet6;
  p.flow_label = be32(d.data()) & 0xfffffu;
  p.total_length = 40u + be16(d.data() + 4);
  p.src = IpAddress::from_v6(d.data() + 8);
  p.dst = IpAddress::from_v6(d.data() + 24);
  std::uint8_t next = d[6];
  std::size_t off = 40;
  bool later_fragment = false;
  // A bounded walk: at most 8 extension headers, each captured whole.
  for (int i = 0; i < 8; ++i) {
    if (next == 0 || next == 43 || next == 60) {  // hop-by-hop, routing, destination options
      if (d.size() < off + 2) break;
      const std::size_t len = (std::size_t{d[off + 1]} + 1) * 8;
      if (d.size() < off + len) break;
      next = d[off];
      off += len;
    } else if (next == 44) {  // fragment
      if (d.size() < off + 8) break;
      const std::uint16_t fo = be16(d.data() + off + 2);
      p.fragment = true;
      p.fragment_offset = fo & 0xfff8u;
      p.more_fragments = (fo & 1u) != 0;
      p.fragment_id = be32(d.data() + off + 4);
      later_fragment = p.fragment_offset != 0;
      next = d[off];
      off += 8;
      if (later_fragment) break;
    } else if (next == kProtoAh) {
      if (d.size() < off + 2) break;
      const std::size_t len = (std::size_t{d[off + 1]} + 2) * 4;
      if (d.size() < off + len) break;
      next = d[off];
      off += len;
    } else {
      break;
    }
  }
  p.protocol = next;
  if (!later_fragment && d.size() > off) parse_l4(p, d.subspan(off));
  return p;
}

}  // namespace

Result<IpPacketInfo> parse_ip_packet(Bytes data) {
  if (data.empty()) return make_error(Errc::truncated, "empty packet");
  switch (data[0] >> 4) {
    case 4:
      return parse_v4(data);
    case 6:
      return parse_v6(data);
    default:
      return make_error(Errc::malformed, "IP version " + std::to_string(data[0] >> 4) + " is neither 4 nor 6");
  }
}

Result<NflogPacket> parse_nflog_packet(const NetlinkMessage& m) {
  if (m.type != kNflogMsgPacket)
    return make_error(Errc::unsupported, "not an NFLOG packet message (type " + std::to_string(m.type) + ")");
  if (m.payload.size() < 4) return make_error(Errc::truncated, "NFLOG message shorter than nfgenmsg");
  NflogPacket p;
  p.nfproto = m.payload[0];
  p.group = be16(m.payload.data() + 2);
  Bytes rest = m.payload.subspan(4);
  std::optional<Bytes> payload;
  while (rest.size() >= 4) {
    const std::uint16_t len = le16(rest.data());
    const std::uint16_t type = le16(rest.data() + 2) & NLA_TYPE_MASK;
    if (len < 4 || len > rest.size())
      return make_error(Errc::truncated, "NFLOG attribute " + std::to_string(type) + " runs past the message");
    const Bytes a = rest.subspan(4, len - 4u);
    if (type < kMinLen.size() && a.size() < kMinLen[type])
      return make_error(Errc::truncated, "NFLOG attribute " + std::to_string(type) + " is " + std::to_string(a.size()) +
                                             " bytes, needs " + std::to_string(kMinLen[type]));
    switch (type) {
      case NFULA_PACKET_HDR:
        p.hw_protocol = be16(a.data());
        p.hook = a[2];
        break;
      case NFULA_MARK:
        p.mark = be32(a.data());
        break;
      case NFULA_TIMESTAMP:
        p.ts_sec = be64(a.data());
        p.ts_usec = be64(a.data() + 8);
        break;
      case NFULA_IFINDEX_INDEV:
        p.indev = be32(a.data());
        break;
      case NFULA_IFINDEX_OUTDEV:
        p.outdev = be32(a.data());
        break;
      case NFULA_PREFIX: {
        std::size_t n = 0;
        while (n < a.size() && a[n] != 0) ++n;
        p.prefix.assign(reinterpret_cast<const char*>(a.data()), n);
        break;
      }
      case NFULA_PAYLOAD:
        payload = a;
        break;
      default:
        break;  // unknown or unused: skipped
    }
    const std::size_t step = (len + 3u) & ~std::size_t{3};
    if (step >= rest.size()) break;
    rest = rest.subspan(step);
  }
  if (payload) {
    p.captured = static_cast<std::uint32_t>(payload->size());
    auto ip = parse_ip_packet(*payload);
    if (!ip) return make_error(ip.error().code, "NFLOG payload: " + ip.error().message);
    p.ip = std::move(*ip);
  }
  return p;
}

}  // namespace ipsec
