#include "audit/xfrm_table.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "xfrm/netlink_message.hpp"

#include "audit/json_writer.hpp"
#include "audit/sa_match.hpp"

using namespace ipsec;
using nlohmann::json;

namespace {
const auto kNow = std::chrono::system_clock::time_point{} + std::chrono::seconds(1795394830);

XfrmSa esp_sa(std::uint32_t spi, const char* src = "10.0.0.1", const char* dst = "10.0.0.2", std::uint32_t reqid = 1) {
  XfrmSa sa;
  sa.saddr = *IpAddress::parse(src);
  sa.daddr = *IpAddress::parse(dst);
  sa.spi = spi;
  sa.proto = 50;
  sa.reqid = reqid;
  sa.replay_window = 32;
  sa.aead = XfrmAeadAlg{"rfc4106(gcm(aes))", 128};
  sa.lifetime.soft_byte_limit = sa.lifetime.hard_byte_limit = ~0ULL;
  sa.lifetime.soft_packet_limit = sa.lifetime.hard_packet_limit = ~0ULL;
  return sa;
}

// The record as the writer writes it.
json record(const Event& e) {
  std::string line;
  JsonWriter("h").write(e, line);
  return json::parse(line);
}
json sa_of(const Event& e) { return record(e)["sa"]; }
json context_json(const XfrmTable& t, const SaEntry& s) {
  Event e;
  e.sa = t.context(s);
  return sa_of(e);
}
SaKey key(const char* dst, std::uint32_t spi, std::uint32_t mark = 0, std::uint32_t mask = 0, std::uint32_t if_id = 0) {
  return SaKey{*IpAddress::parse(dst), spi, 50, mark, mask, if_id};
}

XfrmPolicy out_policy(std::uint32_t index, std::uint32_t reqid, std::uint8_t dir = 1) {
  XfrmPolicy p;
  p.index = index;
  p.dir = dir;
  p.selector.family = 2;
  p.selector.saddr = IpAddress::parse("10.0.0.1");
  p.selector.daddr = IpAddress::parse("10.0.0.2");
  p.selector.prefixlen_s = p.selector.prefixlen_d = 32;
  XfrmTemplate t;
  t.proto = 50;
  t.reqid = reqid;
  t.daddr = *IpAddress::parse("0.0.0.0");
  t.saddr = *IpAddress::parse("0.0.0.0");
  p.templates.push_back(t);
  return p;
}
}  // namespace

TEST(XfrmTable, SaLifecycleAndLookup) {
  XfrmTable t("a");
  auto ev = t.apply(XfrmNewSa{kXfrmMsgNewSa, esp_sa(0x1001)}, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::sa_added);
  EXPECT_EQ(*ev[0].netns, "a");
  ASSERT_TRUE(ev[0].sa);
  const auto sa = sa_of(ev[0]);
  EXPECT_EQ(sa["spi"], 0x1001);
  EXPECT_EQ(sa["algorithms"]["aead"]["name"], "rfc4106(gcm(aes))");
  EXPECT_EQ(sa["replay_window"], 32);
  EXPECT_TRUE(sa["lifetime"]["hard"]["bytes"].is_null()) << "XFRM_INF is no limit";
  EXPECT_EQ(sa["direction"], "unknown");
  EXPECT_EQ(sa["direction_reason"], "no-matching-policy");

  EXPECT_EQ(t.find(*IpAddress::parse("10.0.0.2"), 0x1001).size(), 1u);
  EXPECT_TRUE(t.find(*IpAddress::parse("10.0.0.2"), 0).empty()) << "SPI 0 never matches";
  EXPECT_TRUE(t.find(*IpAddress::parse("10.0.0.3"), 0x1001).empty());

  XfrmSa gone = esp_sa(0x1001);
  gone.stats.replay = 2;
  ev = t.apply(XfrmDelSa{{gone.daddr, gone.spi, 50}, gone, {}, {}}, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::sa_deleted);
  EXPECT_EQ(ev[0].detail["final_stats"]["replay"], 2);
  EXPECT_EQ(t.sa_count(), 0u);
}

TEST(XfrmTable, DirectionInferredFromPolicies) {
  XfrmTable t("a");
  t.load({esp_sa(0x1001, "10.0.0.1", "10.0.0.2", 7)}, {});
  EXPECT_EQ(t.find(key("10.0.0.2", 0x1001))->direction, SaDirection::unknown);
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, out_policy(1, 7)}, kNow);
  const SaEntry* e = t.find(key("10.0.0.2", 0x1001));
  EXPECT_EQ(e->direction, SaDirection::out);
  EXPECT_EQ(e->direction_source, DirectionSource::policy);
  EXPECT_EQ(context_json(t, *e)["direction"], "out");
  EXPECT_FALSE(context_json(t, *e).contains("direction_reason"));
  // An inbound policy with the same template too: the SA's direction is no longer known.
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, out_policy(8, 7, 0)}, kNow);
  EXPECT_EQ(t.find(key("10.0.0.2", 0x1001))->direction, SaDirection::unknown);
  EXPECT_EQ(context_json(t, *t.find(key("10.0.0.2", 0x1001)))["direction_reason"], "policies-both-ways");
}

TEST(XfrmTable, HardExpiryRemovesSoftDoesNot) {
  XfrmTable t("a");
  t.load({esp_sa(1)}, {});
  auto ev = t.apply(XfrmExpire{esp_sa(1), false}, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::sa_expired);
  EXPECT_EQ(ev[0].detail["expire"], "soft");
  EXPECT_EQ(t.sa_count(), 1u);
  ev = t.apply(XfrmExpire{esp_sa(1), true}, kNow);
  EXPECT_EQ(ev[0].detail["expire"], "hard");
  EXPECT_EQ(t.sa_count(), 0u);
}

TEST(XfrmTable, FlushGivesOneRecordPerEntryOfThatProto) {
  XfrmTable t("a");
  XfrmSa ah = esp_sa(3);
  ah.proto = 51;
  t.load({esp_sa(1), esp_sa(2), ah, esp_sa(0)}, {out_policy(1, 1), out_policy(9, 1)});
  auto ev = t.apply(XfrmFlushSa{50}, kNow);
  ASSERT_EQ(ev.size(), 3u);  // the larval SPI-0 SA too
  for (const auto& e : ev) EXPECT_TRUE(e.detail["flush"].get<bool>());
  EXPECT_EQ(t.sa_count(), 1u);
  ev = t.apply(XfrmFlushPolicy{0}, kNow);
  EXPECT_EQ(ev.size(), 2u);
  EXPECT_EQ(t.policy_count(), 0u);
}

TEST(XfrmTable, PolicyDeleteBySelectorAndDefaults) {
  XfrmTable t("a");
  t.load({}, {out_policy(1, 1)});
  XfrmDelPolicy d;
  d.id.selector = out_policy(1, 1).selector;
  d.id.dir = 1;
  auto ev = t.apply(d, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(record(ev[0])["policy"]["index"], 1) << "found by selector, reported in full";
  EXPECT_EQ(t.policy_count(), 0u);

  ev = t.apply(XfrmPolicyDefault{kXfrmMsgGetDefault, 1, 2, 2}, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::policy_default_changed);
  EXPECT_EQ(ev[0].detail["default"]["in"], "block");
  EXPECT_TRUE(t.apply(XfrmPolicyDefault{kXfrmMsgGetDefault, 1, 2, 2}, kNow).empty()) << "no change, no record";
}

TEST(XfrmTable, ResyncEmitsOnlyWhatWasMissed) {
  XfrmTable t("a");
  t.load({esp_sa(1), esp_sa(2)}, {out_policy(1, 1), out_policy(9, 1)});
  auto ev = t.resync({esp_sa(2), esp_sa(3)}, {out_policy(9, 1), out_policy(17, 1)}, kNow);
  int sa_add = 0, sa_del = 0, pol_add = 0, pol_del = 0;
  for (const auto& e : ev) {
    EXPECT_TRUE(e.detail["resync"].get<bool>());
    sa_add += e.kind == EventKind::sa_added && *e.spi == 3;
    sa_del += e.kind == EventKind::sa_deleted && *e.spi == 1;
    pol_add += e.kind == EventKind::policy_added && record(e)["policy"]["index"] == 17;
    pol_del += e.kind == EventKind::policy_deleted && record(e)["policy"]["index"] == 1;
  }
  EXPECT_EQ(ev.size(), 4u);
  EXPECT_EQ(sa_add + sa_del + pol_add + pol_del, 4);
  EXPECT_EQ(t.sa_count(), 2u);
  EXPECT_EQ(t.policy_count(), 2u);
}

TEST(XfrmTable, SaJsonCarriesNoKeyMaterialFields) {
  XfrmSa sa = esp_sa(0x2001, "fd00::1", "fd00::2");
  sa.aead.reset();
  sa.auth = XfrmAuthAlg{"hmac(sha256)", 128};
  sa.enc = "cbc(aes)";
  sa.encap = XfrmEncap{2, 4500, 4500, *IpAddress::parse("::")};
  Event e;
  e.sa = std::make_shared<const SaContext>(SaContext{sa, "b", SaDirection::in, DirectionSource::policy, {}});
  const auto j = sa_of(e);
  const std::string s = j.dump();
  EXPECT_EQ(s.find("key"), std::string::npos);
  EXPECT_EQ(j["algorithms"]["auth"]["trunc_bits"], 128);
  EXPECT_EQ(j["algorithms"]["enc"]["name"], "cbc(aes)");
  EXPECT_EQ(j["encap"]["type"], "espinudp");
  EXPECT_EQ(j["src"], "fd00::1");
}

TEST(XfrmTable, MappingAndMigrateRecords) {
  XfrmTable t("a");
  // MAPPING carries no mark: the reqid (the SA's own) tells a second SA with
  // this (dst, SPI) and another mark apart.
  XfrmSa other = esp_sa(0x3001, "10.0.0.1", "10.0.0.3", 5);
  other.mark = XfrmMark{2, 0xff};
  t.load({esp_sa(0x3001, "10.0.0.1", "10.0.0.3", 4), other}, {});
  XfrmMapping m;
  m.id = XfrmSaId{*IpAddress::parse("10.0.0.3"), 0x3001, 50};
  m.reqid = 4;
  m.old_saddr = *IpAddress::parse("192.0.2.1");
  m.new_saddr = *IpAddress::parse("192.0.2.9");
  m.old_sport = 4500;
  m.new_sport = 61000;
  auto ev = t.apply(m, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::nat_mapping_changed);
  EXPECT_EQ(ev[0].detail["mapping"]["new_sport"], 61000);
  EXPECT_EQ(ev[0].src->to_string(), "192.0.2.9");
  ASSERT_TRUE(ev[0].sa) << "the SA the mapping belongs to";
  EXPECT_EQ(ev[0].sa->sa.reqid, 4u);

  XfrmMigrate mg;
  mg.id.dir = 1;
  mg.entries.push_back(XfrmMigrateEntry{*IpAddress::parse("10.0.0.2"), *IpAddress::parse("10.0.0.1"),
                                        *IpAddress::parse("10.0.1.2"), *IpAddress::parse("10.0.1.1"), 50, 1, 4});
  ev = t.apply(mg, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::sa_migrated);
  EXPECT_EQ(ev[0].detail["migrate"][0]["new_dst"], "10.0.1.2");
  EXPECT_EQ(*ev[0].netns, "a");
}

TEST(XfrmTable, AcquireRecord) {
  XfrmTable t("a");
  XfrmAcquire q;
  q.saddr = *IpAddress::parse("10.0.0.1");
  q.daddr = *IpAddress::parse("10.0.0.2");
  q.proto = 50;
  q.policy = out_policy(1, 66);
  auto ev = t.apply(q, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::acquire);
  EXPECT_EQ(record(ev[0])["policy"]["templates"][0]["reqid"], 66);
  EXPECT_EQ(*ev[0].spi, 0u);
}

// ---- identity: marks, if_id, policy index ----

namespace {
XfrmSa marked(std::uint32_t spi, std::uint32_t mark, std::uint32_t reqid = 1) {
  XfrmSa sa = esp_sa(spi, "10.0.0.1", "10.0.0.2", reqid);
  sa.mark = XfrmMark{mark, 0xffffffff};
  return sa;
}

XfrmPolicy any_policy(std::uint32_t index, std::uint8_t dir, std::uint32_t if_id, const char* tsrc, const char* tdst) {
  XfrmPolicy p;
  p.index = index;
  p.dir = dir;
  p.selector.family = 2;
  p.selector.saddr = IpAddress::parse("0.0.0.0");
  p.selector.daddr = IpAddress::parse("0.0.0.0");
  p.if_id = if_id;
  XfrmTemplate t;
  t.proto = 50;
  t.mode = 1;
  t.saddr = *IpAddress::parse(tsrc);
  t.daddr = *IpAddress::parse(tdst);
  p.templates.push_back(t);
  return p;
}
}  // namespace

TEST(XfrmTableIdentity, SasWithTheSameDstAndSpiDifferByMark) {
  XfrmTable t("a");
  auto ev1 = t.apply(XfrmNewSa{kXfrmMsgNewSa, marked(0x1001, 1, 11)}, kNow);
  auto ev2 = t.apply(XfrmNewSa{kXfrmMsgNewSa, marked(0x1001, 2, 22)}, kNow);
  ASSERT_EQ(ev1.size(), 1u);
  ASSERT_EQ(ev2.size(), 1u);
  EXPECT_EQ(sa_of(ev1[0])["mark"]["value"], 1);
  EXPECT_EQ(sa_of(ev2[0])["mark"]["value"], 2);
  EXPECT_EQ(t.sa_count(), 2u) << "the second is another SA, not a replacement";
  EXPECT_EQ(t.find(*IpAddress::parse("10.0.0.2"), 0x1001).size(), 2u);
  ASSERT_TRUE(t.find(key("10.0.0.2", 0x1001, 1, 0xffffffff)));
  EXPECT_EQ(t.find(key("10.0.0.2", 0x1001, 2, 0xffffffff))->sa.reqid, 22u);

  // Deleting mark 1 (the DELSA with XFRMA_SA) removes mark 1 only.
  XfrmSa gone = marked(0x1001, 1, 11);
  auto del = t.apply(XfrmDelSa{{gone.daddr, gone.spi, 50}, gone, gone.mark, {}}, kNow);
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(sa_of(del[0])["mark"]["value"], 1);
  EXPECT_EQ(sa_of(del[0])["reqid"], 11);
  EXPECT_EQ(t.sa_count(), 1u);
  EXPECT_FALSE(t.find(key("10.0.0.2", 0x1001, 1, 0xffffffff)));
  ASSERT_TRUE(t.find(key("10.0.0.2", 0x1001, 2, 0xffffffff)));

  // A DELSA with the id and mark only still names the right one.
  del = t.apply(XfrmDelSa{{gone.daddr, gone.spi, 50}, std::nullopt, XfrmMark{2, 0xffffffff}, {}}, kNow);
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(sa_of(del[0])["reqid"], 22);
  EXPECT_EQ(t.sa_count(), 0u);
}

TEST(XfrmTableIdentity, UnmarkedDeleteLeavesMarkedSa) {
  XfrmTable t("a");
  t.load({esp_sa(0x1001, "10.0.0.1", "10.0.0.2", 7), marked(0x1001, 3, 8)}, {});
  auto del = t.apply(XfrmDelSa{{*IpAddress::parse("10.0.0.2"), 0x1001, 50}, std::nullopt, {}, {}}, kNow);
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(sa_of(del[0])["reqid"], 7);
  EXPECT_FALSE(sa_of(del[0]).contains("mark"));
  ASSERT_EQ(t.sa_count(), 1u);
  EXPECT_TRUE(t.find(key("10.0.0.2", 0x1001, 3, 0xffffffff)));
}

TEST(XfrmTableIdentity, WildcardPoliciesDifferByIfId) {
  XfrmTable t("a");
  // Two route-based tunnels: 0.0.0.0/0 out policies on xfrm interfaces 7 and 8.
  const XfrmPolicy p7 = any_policy(0x101, 1, 7, "192.0.2.1", "192.0.2.7");
  const XfrmPolicy p8 = any_policy(0x109, 1, 8, "192.0.2.1", "192.0.2.8");
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, p7}, kNow);
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, p8}, kNow);
  ASSERT_EQ(t.policy_count(), 2u);

  // `ip xfrm policy delete ... if_id 8` as a message without the index: by
  // selector, direction, type and if_id.
  XfrmDelPolicy d;
  d.id.selector = p8.selector;
  d.id.dir = 1;
  d.if_id = 8;
  auto ev = t.apply(d, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(record(ev[0])["policy"]["if_id"], 8);
  EXPECT_EQ(record(ev[0])["policy"]["index"], 0x109);
  ASSERT_EQ(t.policy_count(), 1u);
  EXPECT_TRUE(t.find_policy(PolicyKey{0x101, 1}));

  // By index (as the kernel's notification names it).
  XfrmDelPolicy byidx;
  byidx.id.dir = 1;
  byidx.id.index = 0x101;
  ev = t.apply(byidx, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(record(ev[0])["policy"]["if_id"], 7);
  EXPECT_EQ(t.policy_count(), 0u);
}

TEST(XfrmTableIdentity, PolicyIfIdGivesOnlyItsOwnSasADirection) {
  XfrmTable t("a");
  XfrmSa sa7 = esp_sa(0x7001, "192.0.2.1", "192.0.2.7");
  sa7.mode = 1;
  sa7.if_id = 7;
  XfrmSa sa9 = sa7;
  sa9.spi = 0x9001;
  sa9.if_id = 9;
  t.load({sa7, sa9}, {any_policy(0x101, 1, 7, "192.0.2.1", "192.0.2.7")});
  EXPECT_EQ(t.find(sa_key(sa7))->direction, SaDirection::out);
  EXPECT_EQ(t.find(sa_key(sa9))->direction, SaDirection::unknown) << "the policy is for if_id 7 only";
}

// ---- template matching (xfrm_state_ok) ----

namespace {
constexpr const char* kLocal = "198.51.100.1";
constexpr const char* kRemote = "198.51.100.2";

// strongSwan's transport-mode CHILD_SA: one reqid for both directions,
// policies whose templates have no addresses, the outbound one with the SPI.
XfrmPolicy swan_transport_policy(std::uint32_t index, std::uint8_t dir, std::uint32_t reqid, std::uint32_t spi) {
  XfrmPolicy p;
  p.index = index;
  p.dir = dir;
  p.selector.family = 2;
  const bool out = dir == 1;
  p.selector.saddr = IpAddress::parse(out ? kLocal : kRemote);
  p.selector.daddr = IpAddress::parse(out ? kRemote : kLocal);
  p.selector.prefixlen_s = p.selector.prefixlen_d = 32;
  XfrmTemplate t;
  t.proto = 50;
  t.mode = 0;
  t.reqid = reqid;
  t.spi = spi;
  t.saddr = *IpAddress::parse("0.0.0.0");
  t.daddr = *IpAddress::parse("0.0.0.0");
  p.templates.push_back(t);
  return p;
}
}  // namespace

TEST(XfrmTableTemplates, StrongSwanTransportPoliciesGiveBothSasTheirDirection) {
  XfrmTable t("a");
  const XfrmSa in = esp_sa(0xc1000001, kRemote, kLocal, 1);
  const XfrmSa out = esp_sa(0xc2000002, kLocal, kRemote, 1);
  // strongSwan installs the SAs first: their direction is not known yet.
  auto added = t.apply(XfrmNewSa{kXfrmMsgNewSa, in}, kNow);
  t.apply(XfrmNewSa{kXfrmMsgNewSa, out}, kNow);
  ASSERT_EQ(added.size(), 1u);
  EXPECT_EQ(sa_of(added[0])["direction"], "unknown");
  EXPECT_EQ(sa_of(added[0])["direction_reason"], "no-matching-policy");
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, swan_transport_policy(0x200, 0, 1, 0)}, kNow);
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, swan_transport_policy(0x209, 1, 1, 0xc2000002)}, kNow);
  EXPECT_EQ(t.find(sa_key(in))->direction, SaDirection::in);
  EXPECT_EQ(t.find(sa_key(out))->direction, SaDirection::out);
  // Later records on the SA carry the direction the policies gave it.
  Event icv;
  icv.kind = EventKind::integrity_check_failed;
  icv.dst = in.daddr;
  icv.spi = in.spi;
  auto m = match_packet_event(icv, {&t});
  ASSERT_EQ(m.hits.size(), 1u);
  EXPECT_EQ(sa_of(icv)["direction"], "in");
  EXPECT_EQ(sa_of(icv)["direction_source"], "policy");
  auto del = t.apply(XfrmDelSa{{out.daddr, out.spi, 50}, out, {}, {}}, kNow);
  EXPECT_EQ(sa_of(del[0])["direction"], "out");
  // The policies going takes the direction with them.
  t.apply(XfrmFlushPolicy{0}, kNow);
  EXPECT_EQ(t.find(sa_key(in))->direction, SaDirection::unknown);
}

TEST(XfrmTableTemplates, MatchesAsTheKernelDoes) {
  XfrmPolicy p = swan_transport_policy(0x209, 1, 5, 0);
  XfrmTemplate& tm = p.templates[0];
  XfrmSa sa = esp_sa(0x100, kLocal, kRemote, 5);
  EXPECT_TRUE(template_matches(tm, p, sa));
  sa.reqid = 6;
  EXPECT_FALSE(template_matches(tm, p, sa)) << "reqid set in the template";
  tm.reqid = 0;
  EXPECT_TRUE(template_matches(tm, p, sa)) << "reqid 0 is any";
  tm.spi = 0x101;
  EXPECT_FALSE(template_matches(tm, p, sa)) << "SPI set in the template";
  tm.spi = 0x100;
  EXPECT_TRUE(template_matches(tm, p, sa));
  sa.proto = 51;
  EXPECT_FALSE(template_matches(tm, p, sa)) << "proto";
  sa.proto = 50;
  sa.mode = 1;
  EXPECT_FALSE(template_matches(tm, p, sa)) << "mode";
  sa.mode = 0;
  // Transport mode: the flow is the SA's own addresses, the selector must take them.
  XfrmSa back = esp_sa(0x100, kRemote, kLocal, 5);
  EXPECT_FALSE(template_matches(tm, p, back));
  tm.daddr = *IpAddress::parse("203.0.113.9");
  EXPECT_FALSE(template_matches(tm, p, sa)) << "an address the template names must be the SA's";
  tm.daddr = *IpAddress::parse("0.0.0.0");
  XfrmSa v6 = esp_sa(0x100, "fd00::1", "fd00::2", 5);
  EXPECT_FALSE(template_matches(tm, p, v6)) << "family";

  // Tunnel mode: both addresses, exactly.
  XfrmPolicy tun = any_policy(0x111, 1, 0, kLocal, kRemote);
  XfrmSa tsa = esp_sa(0x200, kLocal, kRemote);
  tsa.mode = 1;
  EXPECT_TRUE(template_matches(tun.templates[0], tun, tsa));
  tsa.saddr = *IpAddress::parse("198.51.100.9");
  EXPECT_FALSE(template_matches(tun.templates[0], tun, tsa)) << "tunnel source differs";
}

// ---- packet events: which SA ----

TEST(SaMatch, IncorrectSpiNeverNamesAnSaButListsWhatTheKernelDidNotMatch) {
  XfrmTable a("a"), b("b");
  a.load({esp_sa(0x1001)}, {});
  b.load({marked(0x1001, 4)}, {});
  Event e;
  e.kind = EventKind::incorrect_spi;
  e.dst = IpAddress::parse("10.0.0.2");
  e.spi = 0x1001;
  auto m = match_packet_event(e, {&a, &b});
  EXPECT_TRUE(m.hits.empty());
  EXPECT_FALSE(e.sa) << "by definition the kernel matched no SA";
  const json r = record(e);
  EXPECT_TRUE(r["sa"].is_null());
  EXPECT_FALSE(r.contains("sa_match"));
  ASSERT_EQ(r["sa_candidates"].size(), 2u);
  EXPECT_EQ(r["sa_candidates"][0]["netns"], "a");
  EXPECT_EQ(r["sa_candidates"][0]["reason"], "other-netns");
  EXPECT_EQ(r["sa_candidates"][1]["netns"], "b");
  EXPECT_EQ(r["sa_candidates"][1]["reason"], "other-mark-or-netns");
  EXPECT_EQ(r["sa_candidates"][1]["mark"]["value"], 4);

  Event none = e;
  none.sa_candidates.clear();
  none.spi = 0x2002;
  match_packet_event(none, {&a, &b});
  EXPECT_FALSE(record(none).contains("sa_candidates"));
}

TEST(SaMatch, MarkedSasWithOneDstAndSpi) {
  XfrmTable t("a");
  // Same (dst, SPI), marks 1 and 2: one used inbound, one outbound.
  XfrmSa in = marked(0x1001, 1, 11), out = marked(0x1001, 2, 22);
  XfrmPolicy pin = out_policy(0x200, 11, 0), pout = out_policy(0x209, 22, 1);
  t.load({in, out}, {pin, pout});
  Event icv;
  icv.kind = EventKind::integrity_check_failed;
  icv.dst = in.daddr;
  icv.spi = in.spi;
  auto m = match_packet_event(icv, {&t});
  ASSERT_EQ(m.hits.size(), 1u);
  EXPECT_EQ(sa_of(icv)["mark"]["value"], 1) << "the inbound one";
  EXPECT_EQ(record(icv)["sa_match"], "by-direction");
  Event ovf = icv;
  ovf.kind = EventKind::sequence_overflow;
  ovf.sa.reset();
  ovf.sa_match = SaMatch::none;
  match_packet_event(ovf, {&t});
  EXPECT_EQ(sa_of(ovf)["mark"]["value"], 2) << "the outbound one";

  // Both unknown: nothing is guessed, both are listed with their marks.
  XfrmTable u("u");
  u.load({in, out}, {});
  Event amb = icv;
  amb.sa.reset();
  amb.sa_match = SaMatch::none;
  m = match_packet_event(amb, {&u});
  EXPECT_EQ(m.hits.size(), 2u);
  EXPECT_FALSE(amb.sa);
  const json r = record(amb);
  EXPECT_EQ(r["sa_match"], "ambiguous");
  ASSERT_EQ(r["sa_candidates"].size(), 2u);
  EXPECT_EQ(r["sa_candidates"][0]["mark"]["value"], 1);
  EXPECT_EQ(r["sa_candidates"][1]["mark"]["value"], 2);
  EXPECT_FALSE(r["sa_candidates"][0].contains("reason"));
}

// ---- the indexes agree with a scan of every policy ----

TEST(XfrmTableIndexes, DirectionsEqualABruteForceScanThroughRandomChanges) {
  std::mt19937 rng(1234);
  auto pick = [&](std::uint32_t n) { return std::uniform_int_distribution<std::uint32_t>(0, n - 1)(rng); };
  const char* addrs[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
  XfrmTable t("r");
  std::map<PolicyKey, XfrmPolicy> pols;
  std::vector<XfrmSa> sas;
  for (int step = 0; step < 3000; ++step) {
    const auto what = pick(6);
    if (what < 2) {  // an SA
      XfrmSa sa = esp_sa(1 + pick(6), addrs[pick(3)], addrs[pick(3)], pick(3));
      sa.mode = static_cast<std::uint8_t>(pick(2));
      if (pick(3) == 0) sa.if_id = 1 + pick(2);
      t.apply(XfrmNewSa{kXfrmMsgNewSa, sa}, kNow);
    } else if (what < 4) {  // a policy
      XfrmPolicy p;
      p.dir = static_cast<std::uint8_t>(pick(3));
      p.index = (1 + pick(12)) * 8 + p.dir;
      p.selector.family = 2;
      p.selector.saddr = IpAddress::parse(addrs[pick(3)]);
      p.selector.daddr = IpAddress::parse(addrs[pick(3)]);
      p.selector.prefixlen_s = p.selector.prefixlen_d = pick(2) ? 32 : 0;
      if (pick(3) == 0) p.if_id = pick(3);
      XfrmTemplate tm;
      tm.proto = 50;
      tm.mode = static_cast<std::uint8_t>(pick(2));
      tm.reqid = pick(3);
      tm.spi = pick(3) == 0 ? 1 + pick(6) : 0;
      tm.saddr = *IpAddress::parse(pick(2) ? addrs[pick(3)] : "0.0.0.0");
      tm.daddr = *IpAddress::parse(pick(2) ? addrs[pick(3)] : "0.0.0.0");
      p.templates.push_back(tm);
      t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, p}, kNow);
    } else if (what == 4 && t.policy_count()) {  // delete a policy by index
      XfrmDelPolicy d;
      d.id.dir = static_cast<std::uint8_t>(pick(3));
      d.id.index = (1 + pick(12)) * 8 + d.id.dir;
      t.apply(d, kNow);
    } else if (t.sa_count()) {  // delete an SA
      XfrmDelSa d{{*IpAddress::parse(addrs[pick(3)]), 1 + pick(6), 50}, std::nullopt, {}, {}};
      t.apply(d, kNow);
    }
    if (step % 50 != 49) continue;
    // Brute force: every SA against every policy.
    std::vector<XfrmPolicy> all;
    for (std::uint32_t dir = 0; dir < 3; ++dir)
      for (std::uint32_t i = 1; i <= 12; ++i)
        if (const XfrmPolicy* p = t.find_policy(PolicyKey{i * 8 + dir, static_cast<std::uint8_t>(dir)}))
          all.push_back(*p);
    ASSERT_EQ(all.size(), t.policy_count());
    for (const char* d : addrs)
      for (std::uint32_t spi = 1; spi <= 6; ++spi)
        for (const SaEntry* s : t.find(*IpAddress::parse(d), spi)) {
          bool in = false, out = false;
          for (const auto& p : all)
            if (template_matches(p.templates[0], p, s->sa)) (p.dir == 1 ? out : in) = true;
          const SaDirection want = in == out ? SaDirection::unknown : in ? SaDirection::in : SaDirection::out;
          ASSERT_EQ(s->direction, want) << "step " << step << " spi " << spi << " dst " << d;
          // And the context written matches the entry.
          ASSERT_EQ(t.context(*s)->direction, s->direction);
        }
  }
}

// ---- from live captures (tests/fixtures/xfrm, capture.sh) ----

namespace {
std::vector<XfrmMessage> fixture_messages(const std::string& name) {
  std::ifstream in(std::string(FIXTURE_DIR) + "/xfrm/" + name, std::ios::binary);
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<XfrmMessage> out;
  auto walk = for_each_netlink_message(Bytes(bytes), [&](const NetlinkMessage& m) {
    auto p = parse_xfrm_message(m);
    EXPECT_TRUE(p) << name << ": " << p.error().message;
    if (p) out.push_back(std::move(*p));
    return true;
  });
  EXPECT_TRUE(walk) << name;
  return out;
}
}  // namespace

// The kernel's DELPOLICY for `ip xfrm policy delete ... if_id 8` names no
// index in its id (0): the if_id 7 policy with the same selector must stay.
TEST(XfrmTableFixtures, DeletingOneOfTwoWildcardPoliciesByIfId) {
  const auto msgs = fixture_messages("policy-ifid-wildcard.bin");
  ASSERT_EQ(msgs.size(), 3u);
  ASSERT_TRUE(std::holds_alternative<XfrmDelPolicy>(msgs[2]));
  EXPECT_EQ(std::get<XfrmDelPolicy>(msgs[2]).id.index, 0u) << "what the kernel sends";
  XfrmTable t("a");
  std::vector<Event> ev;
  for (const auto& m : msgs)
    for (auto& e : t.apply(m, kNow)) ev.push_back(std::move(e));
  ASSERT_EQ(ev.size(), 3u);
  const auto idx7 = record(ev[0])["policy"]["index"].get<std::uint32_t>();
  const auto idx8 = record(ev[1])["policy"]["index"].get<std::uint32_t>();
  EXPECT_EQ(record(ev[2])["policy"]["if_id"], 8);
  EXPECT_EQ(record(ev[2])["policy"]["index"], idx8);
  ASSERT_EQ(t.policy_count(), 1u);
  EXPECT_TRUE(t.find_policy(PolicyKey{idx7, 1})) << "the if_id 7 policy is still there";
  EXPECT_FALSE(t.find_policy(PolicyKey{idx8, 1}));
  // What is left still gives its own tunnel's SA its direction, and only that one.
  XfrmSa sa7 = esp_sa(0x7001, "192.0.2.1", "192.0.2.7");
  sa7.mode = 1;
  sa7.if_id = 7;
  XfrmSa sa8 = esp_sa(0x8001, "192.0.2.1", "192.0.2.8");
  sa8.mode = 1;
  sa8.if_id = 8;
  t.apply(XfrmNewSa{kXfrmMsgNewSa, sa7}, kNow);
  t.apply(XfrmNewSa{kXfrmMsgNewSa, sa8}, kNow);
  EXPECT_EQ(t.find(sa_key(sa7))->direction, SaDirection::out);
  EXPECT_EQ(t.find(sa_key(sa8))->direction, SaDirection::unknown);
}

// strongSwan's transport policies as the kernel reports them (template
// addresses 0.0.0.0, one reqid, the SPI on the outbound template), after
// its SAs: each SA gets its direction.
TEST(XfrmTableFixtures, StrongSwanTransportPoliciesFromTheKernel) {
  const auto msgs = fixture_messages("policy-swan-transport.bin");
  ASSERT_EQ(msgs.size(), 2u);
  XfrmTable t("a");
  const XfrmSa in = esp_sa(0xc1000001, "198.51.100.2", "198.51.100.1", 1);
  const XfrmSa out = esp_sa(0xc2000002, "198.51.100.1", "198.51.100.2", 1);
  t.load({in, out}, {});
  EXPECT_EQ(t.find(sa_key(in))->direction_pending, DirectionPending::no_policy);
  for (const auto& m : msgs) t.apply(m, kNow);
  EXPECT_EQ(t.find(sa_key(in))->direction, SaDirection::in);
  EXPECT_EQ(t.find(sa_key(out))->direction, SaDirection::out);
  EXPECT_EQ(t.find(sa_key(out))->direction_source, DirectionSource::policy);
}

TEST(XfrmTable, RefreshUpdatesInPlace) {
  XfrmTable t("a");
  t.load({esp_sa(0x1001, "10.0.0.1", "10.0.0.2", 7)}, {out_policy(1, 7)});
  const SaEntry* before = t.find(key("10.0.0.2", 0x1001));
  ASSERT_TRUE(before);
  const auto old_ctx = t.context(*before);
  XfrmSa fresh = esp_sa(0x1001, "10.0.0.1", "10.0.0.2", 7);
  fresh.stats.replay = 3;
  const SaEntry* after = t.refresh(fresh);
  EXPECT_EQ(after, before) << "the same entry, updated";
  EXPECT_EQ(after->sa.stats.replay, 3u);
  EXPECT_EQ(after->direction, SaDirection::out);
  EXPECT_NE(t.context(*after), old_ctx) << "a new state, a new context";
  EXPECT_EQ(old_ctx->sa.stats.replay, 0u) << "records already made keep theirs";
  EXPECT_FALSE(t.refresh(esp_sa(0x9999)));
}
