// parse_nflog_packet / parse_ip_packet from datagrams the kernel sent
// (tests/fixtures/nflog, recorded by capture.py there), and from cut or
// garbled copies of them.
#include "xfrm/nflog_message.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace ipsec {
namespace {

using Buf = std::vector<std::uint8_t>;

Buf read_fixture(const std::string& name) {
  std::ifstream in(std::string(FIXTURE_DIR) + "/nflog/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return Buf(std::istreambuf_iterator<char>(in), {});
}

// Every packet message of a recorded datagram, parsed. A batch of several
// ends with NLMSG_DONE (the kernel sets NLM_F_MULTI on them).
std::vector<NflogPacket> packets(const Buf& b) {
  std::vector<NflogPacket> out;
  auto walk = for_each_netlink_message(Bytes(b), [&](const NetlinkMessage& m) {
    if (m.type != kNflogMsgPacket) return true;
    auto p = parse_nflog_packet(m);
    EXPECT_TRUE(p.ok()) << (p ? "" : p.error().message);
    if (p) out.push_back(std::move(*p));
    return true;
  });
  EXPECT_TRUE(walk.ok());
  return out;
}

TEST(NflogMessage, UdpV4) {
  const auto ps = packets(read_fixture("udp-v4.bin"));
  ASSERT_EQ(ps.size(), 1u);
  const auto& p = ps[0];
  EXPECT_EQ(p.group, 7);
  EXPECT_EQ(p.nfproto, 2);
  EXPECT_EQ(p.prefix, "fx");
  EXPECT_EQ(p.hw_protocol, 0x0800);
  EXPECT_EQ(p.hook, 0);  // prerouting
  ASSERT_TRUE(p.indev);
  EXPECT_FALSE(p.outdev);
  ASSERT_TRUE(p.ts_sec);
  EXPECT_GT(*p.ts_sec, 1700000000u);
  ASSERT_TRUE(p.ip);
  EXPECT_EQ(p.ip->family, Family::inet);
  EXPECT_EQ(p.ip->src.to_string(), "10.9.0.1");
  EXPECT_EQ(p.ip->dst.to_string(), "10.9.0.2");
  EXPECT_EQ(p.ip->protocol, 17);
  EXPECT_EQ(p.ip->sport, 40000);
  EXPECT_EQ(p.ip->dport, 9999);
  EXPECT_FALSE(p.ip->fragment);
  EXPECT_FALSE(p.ip->spi);
  EXPECT_FALSE(p.ip->flow_label);
}

TEST(NflogMessage, UdpV6WithFlowLabel) {
  const auto ps = packets(read_fixture("udp-v6-flowlabel.bin"));
  ASSERT_EQ(ps.size(), 1u);
  const auto& ip = *ps[0].ip;
  EXPECT_EQ(ps[0].nfproto, 10);
  EXPECT_EQ(ip.family, Family::inet6);
  EXPECT_EQ(ip.src.to_string(), "fd09::1");
  EXPECT_EQ(ip.dst.to_string(), "fd09::2");
  EXPECT_EQ(ip.flow_label, 0x12345u);
  EXPECT_EQ(ip.protocol, 17);
  EXPECT_EQ(ip.sport, 40000);
  EXPECT_EQ(ip.dport, 9999);
}

TEST(NflogMessage, EspV4FirstFragmentHasSpiAndSeq) {
  const auto ps = packets(read_fixture("esp-v4-first-fragment.bin"));
  ASSERT_GE(ps.size(), 1u);
  const auto& ip = *ps[0].ip;
  EXPECT_EQ(ip.protocol, 50);
  EXPECT_TRUE(ip.fragment);
  EXPECT_TRUE(ip.more_fragments);
  EXPECT_TRUE(ip.first_fragment());
  EXPECT_EQ(ip.fragment_id, 0x1234u);
  EXPECT_EQ(ip.spi, 0x1001u);
  EXPECT_EQ(ip.seq, 7u);
  // The copy range cut the packet: captured less than its length.
  EXPECT_EQ(ps[0].captured, 116u);
  EXPECT_EQ(ip.total_length, 116u);
}

TEST(NflogMessage, EspV4LaterFragmentHasNoTransportFields) {
  const auto ps = packets(read_fixture("esp-v4-later-fragment.bin"));
  ASSERT_GE(ps.size(), 1u);
  for (const auto& p : ps) {
    const auto& ip = *p.ip;
    EXPECT_EQ(ip.protocol, 50);
    EXPECT_TRUE(ip.fragment);
    EXPECT_FALSE(ip.more_fragments);
    EXPECT_EQ(ip.fragment_offset, 96u);
    EXPECT_FALSE(ip.first_fragment());
    EXPECT_FALSE(ip.spi);
    EXPECT_FALSE(ip.seq);
  }
}

TEST(NflogMessage, EspV6FirstFragment) {
  const auto ps = packets(read_fixture("esp-v6-first-fragment.bin"));
  ASSERT_GE(ps.size(), 1u);
  const auto& ip = *ps[0].ip;
  EXPECT_EQ(ip.family, Family::inet6);
  EXPECT_EQ(ip.protocol, 50);
  EXPECT_TRUE(ip.first_fragment());
  EXPECT_TRUE(ip.more_fragments);
  EXPECT_EQ(ip.fragment_id, 0xabcdu);
  EXPECT_EQ(ip.spi, 0x1001u);
  EXPECT_EQ(ip.seq, 7u);
}

TEST(NflogMessage, EspInUdp) {
  const auto ps = packets(read_fixture("espinudp-v4.bin"));
  ASSERT_EQ(ps.size(), 1u);
  const auto& ip = *ps[0].ip;
  EXPECT_EQ(ip.protocol, 17);
  EXPECT_EQ(ip.dport, 4500);
  EXPECT_TRUE(ip.esp_in_udp);
  EXPECT_EQ(ip.spi, 0x1001u);
  EXPECT_EQ(ip.seq, 7u);
}

TEST(NflogMessage, IkeOn4500IsNotEsp) {
  // Non-ESP marker (four zero bytes) after the UDP header: IKE, not ESP.
  Buf pkt = {0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
             0x11, 0x94, 0x11, 0x94, 0, 20, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
  auto ip = parse_ip_packet(Bytes(pkt));
  ASSERT_TRUE(ip.ok());
  EXPECT_FALSE(ip->esp_in_udp);
  EXPECT_FALSE(ip->spi);
}

TEST(NflogMessage, EveryCutOfEveryFixtureIsAValueOrAnError) {
  for (const char* name : {"udp-v4.bin", "udp-v6-flowlabel.bin", "esp-v4-first-fragment.bin",
                           "esp-v4-later-fragment.bin", "esp-v6-first-fragment.bin", "espinudp-v4.bin"}) {
    const Buf whole = read_fixture(name);
    ASSERT_GE(whole.size(), 20u);
    // Shorten the first message's nlmsg_len byte by byte: the attributes
    // run short, never past the buffer.
    for (std::size_t cut = 16; cut < whole.size(); ++cut) {
      NetlinkMessage m;
      m.type = kNflogMsgPacket;
      m.payload = Bytes(whole).subspan(16, cut - 16);
      auto p = parse_nflog_packet(m);
      if (!p) {
        EXPECT_FALSE(p.error().message.empty());
      }
    }
  }
}

TEST(NflogMessage, Errors) {
  NetlinkMessage m;
  m.type = kNflogMsgConfig;
  EXPECT_EQ(parse_nflog_packet(m).error().code, Errc::unsupported);
  m.type = kNflogMsgPacket;
  const Buf short_gen = {2, 0};
  m.payload = Bytes(short_gen);
  EXPECT_EQ(parse_nflog_packet(m).error().code, Errc::truncated);
  // An attribute that claims more than there is.
  const Buf runs_past = {2, 0, 0, 7, 40, 0, 9, 0, 0x45, 0};
  m.payload = Bytes(runs_past);
  EXPECT_EQ(parse_nflog_packet(m).error().code, Errc::truncated);
  // A timestamp attribute too short for its type.
  const Buf short_ts = {2, 0, 0, 7, 8, 0, 3, 0, 0, 0, 0, 0};
  m.payload = Bytes(short_ts);
  EXPECT_EQ(parse_nflog_packet(m).error().code, Errc::truncated);
  // A payload that is no IP packet.
  const Buf garbage = {2, 0, 0, 7, 8, 0, 9, 0, 0x12, 0x34, 0x56, 0x78};
  m.payload = Bytes(garbage);
  EXPECT_EQ(parse_nflog_packet(m).error().code, Errc::malformed);
  const Buf bad_ihl = {0x41, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2};
  EXPECT_EQ(parse_ip_packet(Bytes(bad_ihl)).error().code, Errc::malformed);
  const Buf short_v6 = {0x60, 0, 0, 0};
  EXPECT_EQ(parse_ip_packet(Bytes(short_v6)).error().code, Errc::truncated);
  EXPECT_EQ(parse_ip_packet(Bytes()).error().code, Errc::truncated);
}

}  // namespace
}  // namespace ipsec
