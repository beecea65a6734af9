#include "audit/xfrm_table.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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
  ASSERT_TRUE(ev[0].sa_json);
  const auto sa = json::parse(*ev[0].sa_json);
  EXPECT_EQ(sa["spi"], 0x1001);
  EXPECT_EQ(sa["algorithms"]["aead"]["name"], "rfc4106(gcm(aes))");
  EXPECT_EQ(sa["replay_window"], 32);
  EXPECT_TRUE(sa["lifetime"]["hard"]["bytes"].is_null()) << "XFRM_INF is no limit";
  EXPECT_EQ(sa["direction"], "unknown");

  EXPECT_EQ(t.find(*IpAddress::parse("10.0.0.2"), 0x1001).size(), 1u);
  EXPECT_TRUE(t.find(*IpAddress::parse("10.0.0.2"), 0).empty()) << "SPI 0 never matches";
  EXPECT_TRUE(t.find(*IpAddress::parse("10.0.0.3"), 0x1001).empty());

  XfrmSa gone = esp_sa(0x1001);
  gone.stats.replay = 2;
  ev = t.apply(XfrmDelSa{{gone.daddr, gone.spi, 50}, gone}, kNow);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::sa_deleted);
  EXPECT_EQ(ev[0].detail["final_stats"]["replay"], 2);
  EXPECT_EQ(t.sa_count(), 0u);
}

TEST(XfrmTable, DirectionInferredFromPolicies) {
  XfrmTable t("a");
  t.load({esp_sa(0x1001, "10.0.0.1", "10.0.0.2", 7)}, {});
  EXPECT_EQ(t.find(SaKey{*IpAddress::parse("10.0.0.2"), 0x1001, 50})->direction, "unknown");
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, out_policy(1, 7)}, kNow);
  const SaEntry* e = t.find(SaKey{*IpAddress::parse("10.0.0.2"), 0x1001, 50});
  EXPECT_EQ(e->direction, "out");
  EXPECT_EQ(e->direction_source, "policy");
  EXPECT_EQ(json::parse(*e->json)["direction"], "out");
  // An inbound policy with the same template too: the SA's direction is no longer known.
  t.apply(XfrmNewPolicy{kXfrmMsgNewPolicy, out_policy(8, 7, 0)}, kNow);
  EXPECT_EQ(t.find(SaKey{*IpAddress::parse("10.0.0.2"), 0x1001, 50})->direction, "unknown");
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
  EXPECT_EQ(ev[0].detail["policy"]["index"], 1) << "found by selector, reported in full";
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
    pol_add += e.kind == EventKind::policy_added && e.detail["policy"]["index"] == 17;
    pol_del += e.kind == EventKind::policy_deleted && e.detail["policy"]["index"] == 1;
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
  const auto j = sa_json(sa, "b", "in", "policy");
  const std::string s = j.dump();
  EXPECT_EQ(s.find("key"), std::string::npos);
  EXPECT_EQ(j["algorithms"]["auth"]["trunc_bits"], 128);
  EXPECT_EQ(j["algorithms"]["enc"]["name"], "cbc(aes)");
  EXPECT_EQ(j["encap"]["type"], "espinudp");
  EXPECT_EQ(j["src"], "fd00::1");
}

TEST(XfrmTable, MappingAndMigrateRecords) {
  XfrmTable t("a");
  t.load({esp_sa(0x3001, "10.0.0.1", "10.0.0.3")}, {});
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
  ASSERT_TRUE(ev[0].sa_json) << "the SA the mapping belongs to";

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
  EXPECT_EQ(ev[0].detail["policy"]["templates"][0]["reqid"], 66);
  EXPECT_EQ(*ev[0].spi, 0u);
}
