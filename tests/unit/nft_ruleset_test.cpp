// The nftables table derived from an SPD, its log prefixes, and what NFLOG
// packets become (nft_ruleset.hpp).
#include "audit/nft_ruleset.hpp"

#include <gtest/gtest.h>

namespace ipsec {
namespace {

XfrmPolicy policy(std::uint8_t dir, std::uint32_t index, std::uint32_t priority, bool esp) {
  XfrmPolicy p;
  p.dir = dir;
  p.index = index;
  p.priority = priority;
  p.selector.family = 2;
  p.selector.saddr = *IpAddress::parse("10.0.0.1");
  p.selector.daddr = *IpAddress::parse("10.0.0.0");
  p.selector.prefixlen_s = 32;
  p.selector.prefixlen_d = 24;
  p.selector.proto = 17;
  p.selector.dport = 9999;
  p.selector.dport_mask = 0xffff;
  if (esp) {
    XfrmTemplate t;
    t.proto = 50;
    p.templates.push_back(t);
  }
  return p;
}

TEST(NftRuleset, SelectorText) {
  const auto p = policy(0, 8, 0, true);
  EXPECT_EQ(*nft_selector(p.selector),
            "meta nfproto ipv4 ip saddr 10.0.0.1 ip daddr 10.0.0.0/24 meta l4proto 17 th dport 9999");
  XfrmSelector s;
  s.family = 10;
  s.saddr = *IpAddress::parse("fd00::1:2");
  s.prefixlen_s = 112;
  s.proto = 58;
  s.sport = 128;
  s.sport_mask = 0xffff;
  EXPECT_EQ(*nft_selector(s), "meta nfproto ipv6 ip6 saddr fd00::1:0/112 meta l4proto 58 icmpv6 type 128");
  s.family = 0;
  EXPECT_FALSE(nft_selector(s));
}

TEST(NftRuleset, InboundAndForwardPoliciesInKernelOrder) {
  const auto esp_in = policy(0, 16, 100, true);
  const auto bypass_in = policy(0, 24, 10, false);
  const auto out = policy(1, 1, 0, true);
  const auto fwd = policy(2, 2, 0, true);
  const std::string t = nft_table({&esp_in, &bypass_in, &out, &fwd}, NftRulesetConfig{});
  const auto pos_bypass = t.find("fib daddr type local return");
  const auto pos_esp = t.find("prefix \"ipsec-audit:in:16\"");
  ASSERT_NE(pos_bypass, std::string::npos) << t;
  ASSERT_NE(pos_esp, std::string::npos) << t;
  EXPECT_LT(pos_bypass, pos_esp);
  EXPECT_NE(t.find("fib daddr type != local meta secpath missing log group 4963 snaplen 128 prefix \"ipsec-audit:fwd:2\""),
            std::string::npos);
  EXPECT_EQ(t.find(":1\""), std::string::npos);  // no rule for the outbound policy
  EXPECT_NE(t.find("priority -450"), std::string::npos);
  EXPECT_EQ(t.find("drop"), std::string::npos);
  EXPECT_EQ(nft_replace_transaction("X"), "table inet ipsec_audit\ndelete table inet ipsec_audit\nX");
}

// Without conntrack the cleartext chain sees each fragment of a datagram; the
// kernel drops the datagram once, after reassembly. Later fragments (IPv4
// offset, IPv6 fragment header offset) must leave before any logging rule, or
// a selector without ports logs one predicted record per fragment.
TEST(NftRuleset, LaterFragmentsLeaveTheCleartextChainBeforeAnyLog) {
  auto esp_in = policy(0, 16, 100, true);
  esp_in.selector.dport_mask = 0;  // all UDP: later fragments would match it
  const std::string t = nft_table({&esp_in}, NftRulesetConfig{});
  const auto pos_log = t.find("prefix \"ipsec-audit:in:16\"");
  const auto pos_v4 = t.find("ip frag-off & 0x1fff != 0 return");
  const auto pos_v6 = t.find("frag frag-off != 0 return");
  ASSERT_NE(pos_log, std::string::npos) << t;
  ASSERT_NE(pos_v4, std::string::npos) << t;
  ASSERT_NE(pos_v6, std::string::npos) << t;
  EXPECT_LT(pos_v4, pos_log);
  EXPECT_LT(pos_v6, pos_log);
  EXPECT_LT(pos_v6, t.find("chain fragments"));  // in the cleartext chain, not the fragment counter
}

TEST(NftRuleset, Prefixes) {
  auto t = parse_log_prefix("ipsec-audit:in:16");
  EXPECT_EQ(t.kind, NftLogTag::Kind::cleartext);
  EXPECT_EQ(t.dir, 0);
  EXPECT_EQ(t.index, 16u);
  t = parse_log_prefix("ipsec-audit:fwd:2");
  EXPECT_EQ(t.dir, 2);
  EXPECT_EQ(parse_log_prefix("ipsec-audit:frag").kind, NftLogTag::Kind::fragment);
  for (const char* bad : {"", "lab-ipsec ", "ipsec-audit:in:", "ipsec-audit:in:1x", "ipsec-audit:out:1",
                          "ipsec-audit:in:99999999999"})
    EXPECT_EQ(parse_log_prefix(bad).kind, NftLogTag::Kind::other) << bad;
}

TEST(NftRuleset, FragmentSummaryPerPeer) {
  FragmentAggregator agg;
  const auto now = std::chrono::system_clock::now();
  IpPacketInfo first;
  first.src = *IpAddress::parse("10.0.0.1");
  first.dst = *IpAddress::parse("10.0.0.2");
  first.protocol = 50;
  first.fragment = first.more_fragments = true;
  first.spi = 0x1001;
  first.seq = 7;
  IpPacketInfo later = first;
  later.more_fragments = false;
  later.fragment_offset = 96;
  later.spi.reset();
  later.seq.reset();
  for (int i = 0; i < 3; ++i) {
    agg.add("b", first, "vb", now);
    agg.add("b", later, "vb", now);
  }
  const auto ev = agg.flush(now);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::fragment_received);
  EXPECT_EQ(ev[0].count, 6u);
  EXPECT_EQ(ev[0].spi, 0x1001u);
  EXPECT_EQ(ev[0].detail["fragments"]["first_fragments"], 3);
  EXPECT_TRUE(agg.empty());
}

TEST(NftRuleset, CleartextEventIsPredicted) {
  NflogPacket p;
  IpPacketInfo ip;
  ip.src = *IpAddress::parse("10.0.0.1");
  ip.dst = *IpAddress::parse("10.0.0.2");
  ip.protocol = 17;
  ip.sport = 40000;
  ip.dport = 9999;
  p.ip = ip;
  const auto pol = std::make_shared<const XfrmPolicy>(policy(0, 16, 0, true));
  const auto e = cleartext_event(p, parse_log_prefix("ipsec-audit:in:16"), pol, "b", "vb", {});
  EXPECT_EQ(e.kind, EventKind::cleartext_packet_dropped);
  EXPECT_EQ(e.source, Source::nflog);
  EXPECT_EQ(e.detail["basis"], "predicted");
  EXPECT_EQ(e.detail["protocol"], "udp");
  EXPECT_EQ(e.detail["dport"], 9999);
  EXPECT_EQ(e.detail["interface"], "vb");
  EXPECT_EQ(e.policy, pol);
}

}  // namespace
}  // namespace ipsec
