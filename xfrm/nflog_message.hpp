// nfnetlink_log (NFLOG) messages as pure parsers: one NFULNL_MSG_PACKET
// message (NETLINK_NETFILTER) to a value type, and the logged packet's L3/L4
// headers to another. No I/O, no logging; reentrant.
//
// Every attribute is checked against a table (type -> minimum length) before
// any read; unknown attributes are skipped; a short header or attribute is an
// error. The packet payload is cut by the copy range (the agent asks for 128
// bytes): headers that fall past it are left unset, never guessed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "xfrm/ip_address.hpp"
#include "xfrm/netlink_message.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

// nlmsg_type of a logged packet: (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET.
inline constexpr std::uint16_t kNflogMsgPacket = 0x0400;
// nlmsg_type of the per-group configuration request.
inline constexpr std::uint16_t kNflogMsgConfig = 0x0401;

// The logged packet's network and transport headers, as far as captured.
struct IpPacketInfo {
  Family family{Family::inet};
  IpAddress src, dst;
  // The upper-layer protocol: IPv4 protocol field, or the IPv6 next header
  // after the extension headers (hop-by-hop, routing, destination options,
  // fragment, AH) that were captured whole.
  std::uint8_t protocol{0};
  std::optional<std::uint32_t> flow_label;  // IPv6 only
  std::uint32_t total_length{0};            // from the IP header (the packet on the wire)
  // Fragments: IPv4 MF or a non-zero offset; IPv6 a fragment header.
  bool fragment{false};
  bool more_fragments{false};
  std::uint32_t fragment_offset{0};  // bytes
  std::uint32_t fragment_id{0};
  // Transport ports (TCP, UDP, UDP-Lite, SCTP, DCCP) from an unfragmented
  // packet or a first fragment whose transport header was captured.
  std::optional<std::uint16_t> sport, dport;
  // ICMP / ICMPv6 type and code, likewise.
  std::optional<std::uint8_t> icmp_type, icmp_code;
  // ESP (protocol 50), or ESP in UDP on port 4500 (RFC 3948: non-ESP marker
  // absent, not a NAT keepalive): SPI and sequence number, from an
  // unfragmented packet or a first fragment.
  bool esp_in_udp{false};
  std::optional<std::uint32_t> spi, seq;
  bool first_fragment() const { return fragment && fragment_offset == 0; }
};

// One NFULNL_MSG_PACKET message.
struct NflogPacket {
  std::uint8_t nfproto{0};  // nfgenmsg family (NFPROTO_IPV4 2, NFPROTO_IPV6 10)
  std::uint16_t group{0};   // res_id
  std::optional<std::uint16_t> hw_protocol;  // NFULA_PACKET_HDR (ETH_P_*), host order
  std::uint8_t hook{0};
  std::string prefix;  // NFULA_PREFIX, without its NUL
  std::optional<std::uint32_t> indev, outdev;
  std::optional<std::uint32_t> mark;
  std::optional<std::uint64_t> ts_sec, ts_usec;  // NFULA_TIMESTAMP
  std::uint32_t captured{0};                     // NFULA_PAYLOAD bytes
  std::optional<IpPacketInfo> ip;                // unset when there is no payload
};

// Parses one message from for_each_netlink_message. Errors: Errc::unsupported
// (not a packet message), Errc::truncated (nfgenmsg or an attribute shorter
// than its type needs, or an attribute running past the message),
// Errc::malformed (a payload that is not an IPv4/IPv6 header).
Result<NflogPacket> parse_nflog_packet(const NetlinkMessage& message);

// The L3/L4 headers of a packet cut at `data.size()` bytes. Errors: shorter
// than the IP header, a version other than 4 or 6, an IPv4 header length
// below 20.
Result<IpPacketInfo> parse_ip_packet(Bytes data);

}  // namespace ipsec
